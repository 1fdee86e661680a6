//go:build vmtest

package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// kernelArgs: serial console, reboot (= qemu exit with -no-reboot) on panic, and
// only warnings on the console so /init's markers stay readable.
const kernelArgs = "console=ttyS0 panic=-1 loglevel=4 mitigations=off"

// qemuArgs is the VM: TCG on one vCPU (nested KVM hangs at boot and two vCPUs
// stall under TCG), no default devices, and no network unless a guestfwd is set:
// then user networking with restrict=on, whose only way out is that one port.
func qemuArgs(cfg config, initrd string) []string {
	args := []string{
		"-accel", "tcg", "-smp", "1", "-m", "1024",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(cfg.tree, "vmlinuz"), "-initrd", initrd,
		"-append", kernelArgs,
	}
	if cfg.guestFwd != 0 {
		fwd := fmt.Sprintf("guestfwd=tcp:%s:%d-tcp:127.0.0.1:%d", guestFwdIP, cfg.guestFwd, cfg.guestFwd)
		args = append(args,
			"-netdev", "user,id=n0,restrict=on,"+fwd,
			"-device", "virtio-net-pci,netdev=n0,romfile=")
	}
	return args
}

// vmRun is what one boot left behind.
type vmRun struct {
	console  string // ttyS0: kernel warnings and /init's markers
	results  []byte // ttyS1: the guest test binary's output (-test.v=test2json)
	qemuOut  string // qemu's own stdout/stderr
	qemuErr  error
	timedOut bool
	elapsed  time.Duration
}

// bootVM runs qemu until the guest powers off or timeout passes. qemu is killed by
// its PID on timeout and on every other way out of this function (and by the kernel,
// through Pdeathsig, if the test binary dies).
func bootVM(t *testing.T, cfg config, initrd, work string, timeout time.Duration) vmRun {
	t.Helper()
	consolePath := filepath.Join(work, "console.log")
	resultsPath := filepath.Join(work, "results.log")
	args := append(qemuArgs(cfg, initrd),
		"-serial", "file:"+consolePath, "-serial", "file:"+resultsPath)
	var out bytes.Buffer
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t.Logf("booting kernel %s (timeout %v): qemu-system-x86_64 %s",
		kernelVersion(cfg.tree), timeout.Round(time.Second), strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-done
		}
	}()
	stopWatch := watchConsole(t, consolePath, start)
	run := vmRun{}
	select {
	case run.qemuErr = <-done:
	case <-time.After(timeout):
		run.timedOut = true
		_ = syscall.Kill(pid, syscall.SIGKILL)
		run.qemuErr = <-done
	}
	exited = true
	stopWatch()
	run.elapsed = time.Since(start)
	run.qemuOut = out.String()
	console, _ := os.ReadFile(consolePath)
	run.console = strings.ReplaceAll(string(console), "\r\n", "\n")
	run.results, _ = os.ReadFile(resultsPath)
	t.Logf("VM ran %v (qemu pid %d, %v)", run.elapsed.Round(time.Millisecond), pid, run.qemuErr)
	return run
}

// watchConsole logs, while the VM runs, when /init starts (boot time) and when the
// guest tests start and end, so a slow or stuck run shows where it is.
func watchConsole(t *testing.T, path string, start time.Time) (stop func()) {
	marks := []string{markInit, markTests, markGuestEnd}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for len(marks) > 0 {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			b, _ := os.ReadFile(path)
			for len(marks) > 0 && bytes.Contains(b, []byte(marks[0])) {
				t.Logf("%s after %v", marks[0], time.Since(start).Round(time.Millisecond))
				marks = marks[1:]
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// runShell boots the VM with the console on this process's stdio, for a human.
func runShell(t *testing.T, cfg config, initrd string) {
	args := append(qemuArgs(cfg, initrd),
		"-chardev", "stdio,id=con,mux=on,signal=off",
		"-serial", "chardev:con", "-mon", "chardev=con,mode=readline")
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintln(os.Stderr, "booting the kube-ipvs test VM; Ctrl-A X quits qemu, Ctrl-A H for help")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
}
