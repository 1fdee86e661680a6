package vmrun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEnvFileQuotesEveryValue(t *testing.T) {
	got := string(envFile(map[string]string{"B": "it's", "A": "^Test(E2E|Demo)", "C": ""}))
	want := "export A='^Test(E2E|Demo)'\nexport B='it'\\''s'\nexport C=''\n"
	if got != want {
		t.Errorf("envFile:\n%s\nwant:\n%s", got, want)
	}
}

func TestQemuArgsNetwork(t *testing.T) {
	for _, tc := range []struct {
		name string
		fwd  int
		want string // the network arguments, "" for none
	}{
		{"no guestfwd: no NIC", 0, ""},
		{"guestfwd: restricted user networking whose only way out is the relay", 6443,
			"-netdev user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6443-cmd:/w/relay 127.0.0.1:6443 " +
				"-device virtio-net-pci,netdev=n0,romfile="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := qemuArgs(Config{Tree: "/tree", GuestFwd: tc.fwd}, "/w/initrd.img", "/w/relay")
			got := ""
			if i := slices.Index(args, "-netdev"); i >= 0 {
				got = strings.Join(args[i:], " ")
			}
			if got != tc.want {
				t.Errorf("network arguments %q, want %q", got, tc.want)
			}
			if !slices.Contains(args, "-nodefaults") {
				t.Errorf("no -nodefaults in %q", args)
			}
		})
	}
}

// recorder collects what a watch hands on.
type recorder struct {
	mu    sync.Mutex
	cmds  []string
	lines []string
}

func (r *recorder) command(cmd string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, cmd)
	if cmd == "explode" {
		return errors.New("boom")
	}
	return nil
}

func (r *recorder) line(l string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
}

func (r *recorder) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cmds)
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchRunsHostCommandsOnceInOrderAndStreamsOutput(t *testing.T) {
	dir := t.TempDir()
	console, results := filepath.Join(dir, "console.log"), filepath.Join(dir, "results.log")
	r := &recorder{}
	w := startWatch(Config{HostCommand: r.command, GuestOutput: r.line}, console, results, time.Now())

	appendTo(t, console, "KIPVS-INIT-START uptime=1\r\n[ 3.1] a kernel line\r\n\r\nKIPVS-HOST: stop-apiserver\r\n")
	appendTo(t, results, "\x16=== RUN   TestE2EAPIOutage\nhalf a li")
	waitFor(t, "the first command", func() bool { return len(r.commands()) == 1 })
	appendTo(t, console, "KIPVS-HOST: explode\r\nKIPVS-HOST: start-api") // the last one incomplete
	waitFor(t, "the second command", func() bool { return len(r.commands()) == 2 })
	time.Sleep(300 * time.Millisecond) // several polls: nothing runs twice, nothing half-written runs
	if got := r.commands(); !slices.Equal(got, []string{"stop-apiserver", "explode"}) {
		t.Fatalf("commands %q", got)
	}
	appendTo(t, console, "server\r\n")
	waitFor(t, "the third command", func() bool { return len(r.commands()) == 3 })
	appendTo(t, results, "ne\nlast, without newline")
	errs := w.stop()

	if got, want := r.commands(), []string{"stop-apiserver", "explode", "start-apiserver"}; !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `"explode"`) || !strings.Contains(errs[0].Error(), "boom") {
		t.Errorf("errors %v, want the one of explode", errs)
	}
	want := []string{"\x16=== RUN   TestE2EAPIOutage", "half a line", "last, without newline"}
	if !slices.Equal(r.lines, want) {
		t.Errorf("guest output %q, want %q", r.lines, want)
	}
}

func TestWatchFailsHostCommandsWithoutAHandler(t *testing.T) {
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	appendTo(t, console, "KIPVS-HOST: stop-apiserver\n")
	w := startWatch(Config{}, console, filepath.Join(dir, "results.log"), time.Now())
	time.Sleep(300 * time.Millisecond)
	if errs := w.stop(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "has none") {
		t.Errorf("errors %v, want one saying the driver has no host commands", errs)
	}
}

func TestCheck(t *testing.T) {
	ok := Result{Console: "KIPVS-INIT-START\nKIPVS-TESTS-START\nKIPVS-GUEST-EXIT rc=0 uptime=9\n"}
	for _, tc := range []struct {
		name string
		run  func(r *Result)
		want string // in the error; "" for none
	}{
		{"a complete run", func(*Result) {}, ""},
		{"no boot", func(r *Result) { r.Console = "" }, "did not boot"},
		{"module", func(r *Result) { r.Console = "KIPVS-INIT-START\nKIPVS-MODPROBE-FAIL ip_vs_xx\n" }, "modules failed to load: ip_vs_xx"},
		{"panic", func(r *Result) { r.Console += "Kernel panic - not syncing\n" }, "Kernel panic"},
		{"no end marker", func(r *Result) { r.Console = "KIPVS-INIT-START\n" }, "without the KIPVS-GUEST-EXIT marker"},
		{"timeout", func(r *Result) { r.TimedOut = true }, "timed out"},
		{"canceled", func(r *Result) { r.Canceled = true }, "canceled"},
		{"host command", func(r *Result) { r.HostErrors = []error{errors.New(`host command "x": boom`)} }, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.run(&r)
			err := r.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Check: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if rc := ok.ExitCode(); rc != "0" {
		t.Errorf("ExitCode %q, want 0", rc)
	}
}

func TestProgressLogsTopLevelTestsOnly(t *testing.T) {
	var got []string
	p := progress(func(f string, args ...any) { got = append(got, strings.TrimSpace(fmt.Sprintf(f, args...))) })
	for _, l := range []string{
		"\x16=== RUN   TestE2EAPIOutage",
		"\x16=== RUN   TestE2EAPIOutage/sub",
		"    e2e_test.go:12: some log",
		"\x16    --- PASS: TestE2EAPIOutage/sub (0.10s)",
		"\x16--- PASS: TestE2EAPIOutage (85.39s)",
		"\x16--- FAIL: TestDemo (1.00s)",
	} {
		p(l)
	}
	want := []string{"guest: TestE2EAPIOutage running", "guest: TestE2EAPIOutage passed 85.39s", "guest: TestDemo FAILED 1.00s"}
	if !slices.Equal(got, want) {
		t.Errorf("progress lines %q, want %q", got, want)
	}
}
