package vmrun

import (
	"bytes"
	"encoding/json"
	"errors"
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

// Check returns an error, with the console's tail, unless the VM booted,
// loaded every module, ran the guest binary to its end, the kernel stayed
// healthy and every host command the guest asked for succeeded.
func (run Result) Check() error {
	fail := func(format string, args ...any) error {
		msg := fmt.Sprintf("%s\nqemu: %v %s\n--- last console lines ---\n%s", fmt.Sprintf(format, args...),
			run.QemuErr, strings.TrimSpace(run.QemuOut), tail(run.Console, 60))
		if len(run.Results) > 0 {
			guest := strings.ReplaceAll(string(run.Results), "\x16", "") // test2json framing
			msg += "\n--- last guest test output ---\n" + tail(guest, 40)
		}
		return errors.New(msg)
	}
	switch {
	case !strings.Contains(run.Console, markInit):
		return fail("the VM did not boot to /init (timed out: %v, canceled: %v)", run.TimedOut, run.Canceled)
	case strings.Contains(run.Console, markModFail):
		return fail("modules failed to load:%s", lineAfter(run.Console, markModFail))
	case strings.Contains(run.Console, markFatal):
		return fail("guest /init failed:%s", lineAfter(run.Console, markFatal))
	case kernelTrouble.MatchString(run.Console):
		return fail("the guest kernel reported: %s", kernelTrouble.FindString(run.Console))
	case run.Canceled:
		return fail("%v after %v", errCanceled, run.Elapsed.Round(time.Millisecond))
	case run.TimedOut:
		return fail("the VM run timed out after %v", run.Elapsed.Round(time.Millisecond))
	case !guestExit.MatchString(run.Console):
		return fail("the guest run ended without the %s marker (crash or power-off)", markGuestEnd)
	case len(run.HostErrors) > 0:
		return fail("host commands failed: %v", errors.Join(run.HostErrors...))
	}
	return nil
}

// ExitCode is the guest test binary's exit status, "" if it never ended.
func (run Result) ExitCode() string {
	if m := guestExit.FindStringSubmatch(run.Console); m != nil {
		return m[1]
	}
	return ""
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

// GuestTest collects one guest top-level test, its subtests included.
type GuestTest struct {
	Name    string
	Action  string // pass, fail or skip; "" if it never finished
	Elapsed float64
	Output  strings.Builder
}

// ParseResults turns the guest's -test.v=test2json output into per-test results
// (in the order they started) and the package-level output.
func ParseResults(results []byte) ([]*GuestTest, string, error) {
	cmd := exec.Command("go", "tool", "test2json", "-t", "-p", "guest")
	cmd.Stdin = bytes.NewReader(results)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, "", fmt.Errorf("go tool test2json: %v\n%s", err, stderr.String())
	}
	var tests []*GuestTest
	byName := map[string]*GuestTest{}
	var pkg strings.Builder
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var e event
		if err := dec.Decode(&e); err == io.EOF {
			break
		} else if err != nil {
			return nil, "", fmt.Errorf("decoding test2json output: %w", err)
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
			g = &GuestTest{Name: top}
			byName[top] = g
			tests = append(tests, g)
		}
		switch {
		case e.Action == "output":
			g.Output.WriteString(e.Output)
		case !sub && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			g.Action, g.Elapsed = e.Action, e.Elapsed
		}
	}
	return tests, pkg.String(), nil
}

// Replay runs one host subtest per guest top-level test, failing with the guest's
// output where the guest test failed or never finished. run must have passed Check.
func Replay(t *testing.T, run Result) {
	t.Helper()
	tests, pkgOut, err := ParseResults(run.Results)
	if err != nil {
		t.Fatal(err)
	}
	rc := run.ExitCode()
	if len(tests) == 0 {
		t.Fatalf("the guest ran no tests (rc=%s, KIPVS_VM_RUN=%q):\n%s", rc, os.Getenv("KIPVS_VM_RUN"), guestLog(pkgOut))
	}
	failed := false
	ran := map[string]bool{}
	for _, g := range tests {
		ran[g.Name] = true
		t.Run(g.Name, func(t *testing.T) {
			log := guestLog(g.Output.String())
			switch g.Action {
			case "pass":
				t.Logf("guest: passed in %.2fs\n%s", g.Elapsed, log)
			case "skip":
				// A real-kernel test that skips hides a missing piece: fail loudly.
				failed = true
				t.Errorf("guest: skipped, and a VM test must never skip\n%s", log)
			case "fail":
				failed = true
				t.Errorf("guest: FAILED in %.2fs\n%s", g.Elapsed, log)
			default:
				failed = true
				t.Errorf("guest: did not finish: the guest test binary panicked, crashed or timed out\n%s\n%s",
					log, guestLog(pkgOut))
			}
		})
	}
	for _, m := range guestListed.FindAllStringSubmatch(run.Console, -1) {
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
		t.Logf("last console lines (kernel messages):\n%s", tail(run.Console, 40))
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
