//go:build linux

package netif

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// netnsChild is set, in the environment of the child process inNewNetns
// starts, to the parent's network namespace ("net:[4026531840]").
const netnsChild = "KIPVS_NETIF_TEST_NETNS_PARENT"

// inNewNetns runs the calling top-level test again in a child process
// that lives in a network namespace of its own from its first instruction
// (clone(2) with CLONE_NEWNET, and CLONE_NEWUSER so that it needs no root
// and has no power over the host's network at all; as root without user
// namespaces, CLONE_NEWNET alone), and reports the child's result. It
// returns true in the child, which then runs the test's body, and false in
// the parent. The namespace goes when the child exits: nothing is made in,
// or removed from, the namespace the tests were started in. The test is
// skipped where no namespace can be made (user namespaces disabled, no
// root) or the kernel lacks what the child needs.
func inNewNetns(t *testing.T) bool {
	t.Helper()
	if parent := os.Getenv(netnsChild); parent != "" {
		self, err := os.Readlink("/proc/self/ns/net")
		if err != nil || self == parent {
			t.Fatalf("the child is in network namespace %q (%v), its parent's: refusing to change it", self, err)
		}
		return true
	}
	parent, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	run := func(attr *syscall.SysProcAttr) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), netnsChild+"="+parent)
		cmd.SysProcAttr = attr
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	userns := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		Pdeathsig:   syscall.SIGKILL,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
	}
	how := "user and network namespace"
	out, err := run(userns)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) && os.Geteuid() == 0 {
		how = "network namespace (no user namespaces: " + err.Error() + ")"
		out, err = run(&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL})
	}
	switch {
	case err != nil && !errors.As(err, &exit):
		t.Skipf("cannot start a process in a new network namespace: %v", err)
	case strings.Contains(out, "--- SKIP: "+t.Name()+" "):
		t.Skipf("skipped in the new network namespace:\n%s", out)
	case err != nil:
		t.Fatalf("in a new network namespace: %v\n%s", err, out)
	}
	t.Logf("in a new %s:\n%s", how, out)
	return false
}

// hasIPv6 reports whether the kernel has IPv6 (not booted with ipv6.disable=1).
func hasIPv6() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func linkByName(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func setLinkUp(t *testing.T, name string) {
	t.Helper()
	if err := netlink.LinkSetUp(linkByName(t, name)); err != nil {
		t.Fatalf("ip link set %s up: %v", name, err)
	}
}

// addLink creates link name, up: a dummy, or a bridge where the kernel has
// no dummy driver; it skips the test when it has neither.
func addLink(t *testing.T, name string) {
	t.Helper()
	attrs := netlink.LinkAttrs{Name: name}
	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	if err != nil {
		if berr := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); berr != nil {
			t.Skipf("cannot create a dummy (%v) or a bridge (%v) link", err, berr)
		}
		t.Logf("%s is a bridge: no dummy links here (%v)", name, err)
	}
	setLinkUp(t, name)
}

func delLink(t *testing.T, name string) {
	t.Helper()
	if err := netlink.LinkDel(linkByName(t, name)); err != nil {
		t.Fatalf("ip link del %s: %v", name, err)
	}
}

func addAddr(t *testing.T, link string, addr netip.Addr) {
	t.Helper()
	if err := netlink.AddrAdd(linkByName(t, link), hostAddr(addr)); err != nil {
		t.Fatalf("ip addr add %s dev %s: %v", addr, link, err)
	}
}

func delAddr(t *testing.T, link string, addr netip.Addr) {
	t.Helper()
	if err := netlink.AddrDel(linkByName(t, link), hostAddr(addr)); err != nil {
		t.Fatalf("ip addr del %s dev %s: %v", addr, link, err)
	}
}
