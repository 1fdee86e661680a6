//go:build vmguest

// Package guest holds the helpers for tests that run inside the test VM (see
// ../README.md): network namespaces as pods, backends that answer with their name,
// clients that count where requests went, and command runners for ipvsadm,
// iptables-save and ipset. Every helper that creates something removes it in a
// t.Cleanup. The tests run as root (PID 1's child) on the VM's real kernel; the
// VM's initial network namespace is the node.
package guest

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Paths of the programs the host driver puts into the VM.
const (
	AgentBin   = "/bin/kube-ipvs"
	BackendBin = "/bin/backend"
)

// Node names the VM's initial network namespace wherever a namespace is asked for.
const Node = ""

// HostForward is where the guest reaches the host port given by KIPVS_VM_GUESTFWD
// (e.g. an apiserver on the host's loopback); ok is false when none was set.
func HostForward() (addr netip.AddrPort, ok bool) {
	addr, err := netip.ParseAddrPort(os.Getenv("KIPVS_GUESTFWD_ADDR"))
	return addr, err == nil
}

// command is args run in namespace ns, like `ip netns exec NS args...`.
func command(ns string, args ...string) *exec.Cmd {
	if ns != Node {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	return exec.Command(args[0], args[1:]...)
}

// Exec runs args in namespace ns (Node for the node) and returns the combined
// output; the error names the command and holds its output.
func Exec(ns string, args ...string) (string, error) {
	out, err := command(ns, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Run is Exec that fails the test on error: Run(t, guest.Node, "ipvsadm", "-Ln").
func Run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := Exec(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Proc is a background process started by Start; it is killed at test cleanup.
type Proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// Start runs args in the background in namespace ns; output goes to a buffer
// (Output). The process is stopped by its PID (Stop) when the test ends, and its
// output is logged if the test failed.
func Start(t testing.TB, ns string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: command(ns, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", strings.Join(args, " "), p.PID(), p.Output())
		}
	})
	return p
}

// PID is the process ID (`ip netns exec` execs the command, so it is the command's).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output is everything the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process unless it has ended.
func (p *Proc) Signal(sig syscall.Signal) error {
	if done, _ := p.Exited(); done {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to 10s, then SIGKILL; it returns once the process
// has ended. Calling it again does nothing.
func (p *Proc) Stop() {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Kill sends SIGKILL (a crash, as far as the process can tell) and waits for the end.
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// WaitOutput waits until the output contains s, failing if the process ends first
// or timeout passes.
func (p *Proc) WaitOutput(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if done, err := p.Exited(); done {
			return fmt.Errorf("process ended (%v) before printing %q:\n%s", err, s, p.Output())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q in the output after %v:\n%s", s, timeout, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// StartBackend starts the backend program in ns, answering as name on TCP and UDP
// on every given port (all addresses), and waits until it listens:
// `ip netns exec NS /bin/backend -name NAME -tcp :PORT -udp :PORT`.
func StartBackend(t testing.TB, ns, name string, ports ...uint16) *Proc {
	t.Helper()
	if len(ports) == 0 {
		t.Fatal("StartBackend: no ports")
	}
	var addrs []string
	for _, p := range ports {
		addrs = append(addrs, fmt.Sprintf(":%d", p))
	}
	list := strings.Join(addrs, ",")
	p := Start(t, ns, BackendBin, "-name", name, "-tcp", list, "-udp", list)
	if err := p.WaitOutput("ready\n", 20*time.Second); err != nil {
		t.Fatalf("backend %s in %q: %v", name, ns, err)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
