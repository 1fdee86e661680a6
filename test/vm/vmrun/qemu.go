package vmrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// kernelArgs: serial console, reboot (= qemu exit with -no-reboot) on panic, and
// only warnings on the console so /init's markers stay readable.
const kernelArgs = "console=ttyS0 panic=-1 loglevel=4 mitigations=off"

// qemuArgs is the VM: TCG on one vCPU (nested KVM hangs at boot and two vCPUs
// stall under TCG), no default devices, and no network unless a guestfwd is set:
// then user networking with restrict=on, whose only way out is that one port.
//
// The guestfwd runs relay once per guest connection (qemu's "cmd:" form), and
// relay connects to 127.0.0.1:PORT. qemu's other form, a chardev
// ("-tcp:127.0.0.1:PORT"), is one host connection made when qemu starts and
// shared by every guest connection: no good for an HTTP/2 client that opens
// several connections and reconnects after an apiserver restart.
func qemuArgs(cfg Config, initrd, relay string) []string {
	args := []string{
		"-accel", "tcg", "-smp", "1", "-m", "1024",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(cfg.Tree, "vmlinuz"), "-initrd", initrd,
		"-append", kernelArgs,
	}
	if cfg.GuestFwd != 0 {
		fwd := fmt.Sprintf("guestfwd=tcp:%s:%d-cmd:%s 127.0.0.1:%d", GuestFwdIP, cfg.GuestFwd, relay, cfg.GuestFwd)
		args = append(args,
			"-netdev", "user,id=n0,restrict=on,"+fwd,
			"-device", "virtio-net-pci,netdev=n0,romfile=")
	}
	return args
}

// Result is what one boot left behind.
type Result struct {
	Console    string // ttyS0: kernel warnings and /init's markers
	Results    []byte // ttyS1: the guest test binary's output (-test.v=test2json)
	QemuOut    string // qemu's own stdout/stderr
	QemuErr    error
	TimedOut   bool
	Canceled   bool // ctx ended before the guest powered off
	Elapsed    time.Duration
	HostErrors []error // failed or unknown host commands
}

// Boot runs qemu until the guest powers off, cfg.Timeout passes or ctx ends.
// qemu is killed by its PID on timeout or when ctx ends, and by the kernel,
// through Pdeathsig, if this process dies. While it runs, host commands are
// run and guest output is passed on (see Config). initrd comes from
// WriteImage; work receives the serial logs.
func Boot(ctx context.Context, cfg Config, b Binaries, initrd, work string) (Result, error) {
	consolePath := filepath.Join(work, "console.log")
	resultsPath := filepath.Join(work, "results.log")
	args := append(qemuArgs(cfg, initrd, b.Relay),
		"-serial", "file:"+consolePath, "-serial", "file:"+resultsPath)
	var out bytes.Buffer
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = sysProcAttr()
	cfg.logf("booting kernel %s (timeout %v): qemu-system-x86_64 %s",
		kernelVersion(cfg.Tree), cfg.Timeout.Round(time.Second), strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("starting qemu: %w", err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	w := startWatch(cfg, consolePath, resultsPath, start)
	run := Result{}
	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	select {
	case run.QemuErr = <-done:
	case <-timer.C:
		run.TimedOut = true
	case <-ctx.Done():
		run.Canceled = true
	}
	if run.TimedOut || run.Canceled {
		_ = cmd.Process.Kill() // by PID (a pidfd where the kernel has them): only our qemu
		run.QemuErr = <-done
	}
	run.HostErrors = w.stop()
	run.Elapsed = time.Since(start)
	run.QemuOut = out.String()
	console, _ := os.ReadFile(consolePath)
	run.Console = strings.ReplaceAll(string(console), "\r\n", "\n")
	run.Results, _ = os.ReadFile(resultsPath)
	cfg.logf("VM ran %v (qemu pid %d, %v)", run.Elapsed.Round(time.Millisecond), pid, run.QemuErr)
	return run, nil
}

// hostCommand matches a complete "KIPVS-HOST: CMD" console line.
var hostCommand = regexp.MustCompile(`(?m)` + HostCommandPrefix + ` ([A-Za-z0-9_.=-]+)\r?$`)

// watch follows the serial logs while the VM runs: it logs when /init starts
// (boot time) and when the guest tests start and end, hands host commands to
// a worker that runs them in order, and passes new guest output lines on.
type watch struct {
	cfg      Config
	console  string
	results  string
	start    time.Time
	marks    []string
	commands int         // host commands seen so far
	offset   int64       // of the results file, up to the last complete line
	queue    chan string // host commands for the worker
	quit     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	errs     []error
}

func startWatch(cfg Config, console, results string, start time.Time) *watch {
	w := &watch{cfg: cfg, console: console, results: results, start: start,
		marks: []string{markInit, markTests, markGuestEnd},
		queue: make(chan string, 16), quit: make(chan struct{})}
	w.wg.Add(2)
	go w.poll()
	go w.work()
	return w
}

// stop ends the watch after a last look at the logs and once the running
// host command (if any) is done; it returns the host commands' errors.
func (w *watch) stop() []error {
	close(w.quit)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

func (w *watch) poll() {
	defer w.wg.Done()
	defer close(w.queue)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.quit:
			w.look(true)
			return
		case <-tick.C:
			w.look(false)
		}
	}
}

func (w *watch) look(last bool) {
	b, _ := os.ReadFile(w.console)
	for len(w.marks) > 0 && bytes.Contains(b, []byte(w.marks[0])) {
		w.cfg.logf("%s after %v", w.marks[0], time.Since(w.start).Round(time.Millisecond))
		w.marks = w.marks[1:]
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		cmds := hostCommand.FindAllSubmatch(b[:i+1], -1)
		for _, m := range cmds[w.commands:] {
			if last {
				w.fail(fmt.Errorf("host command %q came as the VM ended: not run", m[1]))
				continue
			}
			w.queue <- string(m[1])
		}
		w.commands = len(cmds)
	}
	if w.cfg.GuestOutput != nil {
		w.stream(last)
	}
}

// stream passes on the complete lines the results file gained (and, at the
// end, a last incomplete one).
func (w *watch) stream(last bool) {
	f, err := os.Open(w.results)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(w.offset, 0); err != nil {
		return
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return
	}
	data := buf.Bytes()
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		w.cfg.GuestOutput(strings.TrimRight(string(data[:i]), "\r"))
		w.offset += int64(i + 1)
		data = data[i+1:]
	}
	if last && len(data) > 0 {
		w.cfg.GuestOutput(string(data))
		w.offset += int64(len(data))
	}
}

// work runs the host commands one after another.
func (w *watch) work() {
	defer w.wg.Done()
	for cmd := range w.queue {
		at := time.Since(w.start).Round(time.Millisecond)
		if w.cfg.HostCommand == nil {
			w.fail(fmt.Errorf("the guest asked for host command %q, but this driver has none", cmd))
			continue
		}
		began := time.Now()
		err := w.cfg.HostCommand(cmd)
		took := time.Since(began).Round(time.Millisecond)
		if err != nil {
			w.fail(fmt.Errorf("host command %q (asked after %v): %w", cmd, at, err))
			continue
		}
		w.cfg.logf("host command %q (asked after %v): done in %v", cmd, at, took)
	}
}

func (w *watch) fail(err error) {
	w.cfg.logf("%v", err)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errs = append(w.errs, err)
}

// Shell boots the VM with the console on this process's stdio, for a human.
func Shell(cfg Config, b Binaries, initrd string) error {
	args := append(qemuArgs(cfg, initrd, b.Relay),
		"-chardev", "stdio,id=con,mux=on,signal=off",
		"-serial", "chardev:con", "-mon", "chardev=con,mode=readline")
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = sysProcAttr()
	fmt.Fprintln(os.Stderr, "booting the kube-ipvs test VM; Ctrl-A X quits qemu, Ctrl-A H for help")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu: %w", err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// errCanceled is what a canceled run reports.
var errCanceled = errors.New("the VM run was canceled")
