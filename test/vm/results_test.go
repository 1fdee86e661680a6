//go:build vmtest

package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kernelTrouble matches console lines that mean the guest kernel itself broke.
var kernelTrouble = regexp.MustCompile(`Kernel panic|Oops|\bBUG: |general protection fault`)

var (
	guestExit   = regexp.MustCompile(markGuestEnd + ` rc=(\d+)`)
	guestListed = regexp.MustCompile(`(?m)^` + markListed + ` (Test\S*)$`)
)

// checkRun fails the test, with the console's tail, unless the VM booted, loaded
// every module, ran the guest binary to its end and the kernel stayed healthy.
func checkRun(t *testing.T, run vmRun) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf("%s\nqemu: %v %s\n--- last console lines ---\n%s", fmt.Sprintf(format, args...),
			run.qemuErr, strings.TrimSpace(run.qemuOut), tail(run.console, 60))
		if len(run.results) > 0 {
			guest := strings.ReplaceAll(string(run.results), "\x16", "") // test2json framing
			msg += "\n--- last guest test output ---\n" + tail(guest, 40)
		}
		t.Fatal(msg)
	}
	switch {
	case !strings.Contains(run.console, markInit):
		fail("the VM did not boot to /init (timed out: %v)", run.timedOut)
	case strings.Contains(run.console, markModFail):
		fail("modules failed to load:%s", lineAfter(run.console, markModFail))
	case strings.Contains(run.console, markFatal):
		fail("guest /init failed:%s", lineAfter(run.console, markFatal))
	case kernelTrouble.MatchString(run.console):
		fail("the guest kernel reported: %s", kernelTrouble.FindString(run.console))
	case run.timedOut:
		fail("the VM run timed out after %v", run.elapsed.Round(time.Millisecond))
	case !guestExit.MatchString(run.console):
		fail("the guest run ended without the %s marker (crash or power-off)", markGuestEnd)
	}
}

// lineAfter is the rest of the first line holding marker.
func lineAfter(s, marker string) string {
	_, rest, _ := strings.Cut(s, marker)
	line, _, _ := strings.Cut(rest, "\n")
	return line
}

// event is one line of `go tool test2json` output.
type event struct {
	Action  string
	Test    string
	Elapsed float64
	Output  string
}

// guestTest collects one guest top-level test, its subtests included.
type guestTest struct {
	name    string
	action  string // pass, fail or skip; "" if it never finished
	elapsed float64
	output  strings.Builder
}

// parseResults turns the guest's -test.v=test2json output into per-test results
// (in the order they started) and the package-level output.
func parseResults(t *testing.T, results []byte) ([]*guestTest, string) {
	t.Helper()
	cmd := exec.Command("go", "tool", "test2json", "-t", "-p", "guest")
	cmd.Stdin = bytes.NewReader(results)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool test2json: %v\n%s", err, stderr.String())
	}
	var tests []*guestTest
	byName := map[string]*guestTest{}
	var pkg strings.Builder
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var e event
		if err := dec.Decode(&e); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding test2json output: %v", err)
		}
		if e.Test == "" {
			if e.Action == "output" {
				pkg.WriteString(e.Output)
			}
			continue
		}
		top, _, sub := strings.Cut(e.Test, "/")
		g := byName[top]
		if g == nil {
			g = &guestTest{name: top}
			byName[top] = g
			tests = append(tests, g)
		}
		switch {
		case e.Action == "output":
			g.output.WriteString(e.Output)
		case !sub && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			g.action, g.elapsed = e.Action, e.Elapsed
		}
	}
	return tests, pkg.String()
}

// replay runs one host subtest per guest top-level test, failing with the guest's
// output where the guest test failed or never finished.
func replay(t *testing.T, run vmRun) {
	t.Helper()
	tests, pkgOut := parseResults(t, run.results)
	rc := guestExit.FindStringSubmatch(run.console)[1]
	if len(tests) == 0 {
		t.Fatalf("the guest ran no tests (rc=%s, KIPVS_VM_RUN=%q):\n%s", rc, os.Getenv("KIPVS_VM_RUN"), guestLog(pkgOut))
	}
	failed := false
	ran := map[string]bool{}
	for _, g := range tests {
		ran[g.name] = true
		t.Run(g.name, func(t *testing.T) {
			log := guestLog(g.output.String())
			switch g.action {
			case "pass":
				t.Logf("guest: passed in %.2fs\n%s", g.elapsed, log)
			case "skip":
				t.Skipf("guest: skipped\n%s", log)
			case "fail":
				failed = true
				t.Errorf("guest: FAILED in %.2fs\n%s", g.elapsed, log)
			default:
				failed = true
				t.Errorf("guest: did not finish: the guest test binary panicked, crashed or timed out\n%s\n%s",
					log, guestLog(pkgOut))
			}
		})
	}
	for _, m := range guestListed.FindAllStringSubmatch(run.console, -1) {
		if !ran[m[1]] {
			failed = true
			t.Run(m[1], func(t *testing.T) {
				t.Error("guest: never ran: the guest test binary ended before it (see the failures above)")
			})
		}
	}
	if rc != "0" && !failed {
		t.Errorf("guest test binary exited with rc=%s though no test failed:\n%s", rc, guestLog(pkgOut))
	}
	if t.Failed() {
		t.Logf("last console lines (kernel messages):\n%s", tail(run.console, 40))
	}
}

// guestLog prefixes the guest's lines and drops its framing lines ("=== RUN",
// "--- PASS: X"): the host's own t.Run prints those, and go test's parsers must
// not count the guest's copies as host tests.
func guestLog(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "=== ") || trimmed == "PASS" || trimmed == "FAIL" {
			continue
		}
		b.WriteString("guest| " + line + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}
