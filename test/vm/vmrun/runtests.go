package vmrun

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// RunTests builds the programs, boots the VM with cfg and replays every guest
// test as a subtest of t (TestVM/TestSmokeIPVS). It fails t if the VM does
// not boot, a module does not load, the guest binary panics, times out or
// ends without its completion marker, or a host command fails. While the VM
// runs it logs each guest top-level test as it starts and ends.
func RunTests(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := TrackSources(root); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	start := time.Now()
	bins, err := Build(root, work)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built kube-ipvs, backend, guest.test and relay in %v", time.Since(start).Round(time.Millisecond))

	cfg.Timeout = testTimeout(t, cfg)
	start = time.Now()
	initrd, err := WriteImage(cfg, bins, work)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(initrd); err == nil {
		t.Logf("initramfs: %.1f MiB in %v", float64(st.Size())/(1<<20), time.Since(start).Round(time.Millisecond))
	}
	if cfg.Shell {
		if err := Shell(cfg, bins, initrd); err != nil {
			t.Fatal(err)
		}
		return
	}
	if cfg.GuestOutput == nil {
		cfg.GuestOutput = progress(cfg.Logf)
	}
	run, err := Boot(context.Background(), cfg, bins, initrd, work)
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Check(); err != nil {
		t.Fatal(err)
	}
	Replay(t, run)
}

// testTimeout is cfg.Timeout, cut so the VM is stopped (and cleaned up) before
// go test's own deadline kills the test binary.
func testTimeout(t *testing.T, cfg Config) time.Duration {
	t.Helper()
	d := cfg.Timeout
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 30*time.Second; left < d {
			d = left
		}
	}
	if d < time.Minute && !cfg.Shell {
		t.Fatalf("only %v left for the VM run: raise go test -timeout", d)
	}
	return d
}

// topLevel matches test2json's framing of a guest top-level test starting or
// ending (subtests are indented or named with a slash).
var topLevel = regexp.MustCompile(`^\x16?(=== RUN|--- PASS:|--- FAIL:|--- SKIP:)\s+(Test[^/\s]*)\s*(\(.*\))?$`)

// progress logs the guest's top-level tests as they start and end.
func progress(logf func(string, ...any)) func(string) {
	return func(line string) {
		if m := topLevel.FindStringSubmatch(line); m != nil {
			verb := map[string]string{"=== RUN": "running", "--- PASS:": "passed", "--- FAIL:": "FAILED",
				"--- SKIP:": "skipped"}[m[1]]
			logf("guest: %s %s %s", m[2], verb, strings.Trim(m[3], "()"))
		}
	}
}
