//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
)

// sysSetns is setns(2) on amd64, the VM's architecture (package syscall lacks the
// constant there; golang.org/x/sys/unix would add a direct dependency).
const sysSetns = 308

func setns(f *os.File) error {
	if _, _, errno := syscall.Syscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}

// InNetns runs fn on a thread that is in network namespace ns (Node: no switch),
// so every socket fn opens lives in ns; the sockets keep working after InNetns
// returns. fn runs on another goroutine: it must not call t.FailNow (t.Fatal).
func InNetns(ns string, fn func() error) error {
	if ns == Node {
		return fn()
	}
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return fmt.Errorf("network namespace %q: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %q: %w", ns, err)
			return
		}
		ferr := fn()
		// A thread that cannot go back stays locked: the runtime retires it
		// when this goroutine ends, instead of reusing it in the wrong namespace.
		if setns(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// AddNetns creates network namespace name with lo up (`ip netns add NAME`) and
// deletes it at cleanup.
func AddNetns(t testing.TB, name string) string {
	t.Helper()
	Run(t, Node, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := Exec(Node, "ip", "netns", "del", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// Pod is a network namespace wired to a node the way the ptp CNI plugin does
// it: a veth pair, the pod's addresses on its eth0 as host routes, a default
// route to a gateway address that the node holds on the host side of every pod's
// veth, and a host route on the node back to each pod address.
type Pod struct {
	Name     string       // the namespace; also a good backend name
	IPs      []netip.Addr // the pod's addresses, as given to AddPod
	HostVeth string       // node side of the veth pair: "veth-" + Name
	NodeNS   string       // the node's namespace: Node (the VM's) or a bed node's (AddPodOn)
}

// IP is the pod's first address.
func (p *Pod) IP() netip.Addr { return p.IPs[0] }

// Gateway is the node-side address pods of ip's subnet route through: the first
// address of its /24 (IPv4) or /64 (IPv6), e.g. 10.244.1.1 for 10.244.1.7.
func Gateway(ip netip.Addr) netip.Addr {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	return netip.PrefixFrom(ip, bits).Masked().Addr().Next()
}

// AddPod creates namespace name wired to the node, the VM's initial namespace
// (see Pod), with the given addresses, e.g. AddPod(t, "pod1",
// netip.MustParseAddr("10.244.1.2")), and turns on forwarding on the node as a
// CNI would. The veth goes at cleanup, before the namespace.
func AddPod(t testing.TB, name string, ips ...netip.Addr) *Pod {
	t.Helper()
	return AddPodOn(t, Node, name, ips...)
}

// AddPodOn is AddPod on the node whose network namespace is node (Node for
// the VM's initial one, or a bed node's: see BedNode.AddPod). Pod names are
// namespace names, so they are unique across every node.
func AddPodOn(t testing.TB, node, name string, ips ...netip.Addr) *Pod {
	t.Helper()
	p := &Pod{Name: name, IPs: ips, HostVeth: "veth-" + name, NodeNS: node}
	if len(ips) == 0 || len(p.HostVeth) > 15 {
		t.Fatalf("AddPod(%q, %v): want at least one address and a name of at most 10 bytes", name, ips)
	}
	AddNetns(t, name)
	Run(t, node, "ip", "link", "add", p.HostVeth, "type", "veth", "peer", "name", "eth0", "netns", name)
	t.Cleanup(func() {
		if _, err := Exec(node, "ip", "link", "del", p.HostVeth); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	Run(t, node, "ip", "link", "set", p.HostVeth, "up")
	Run(t, name, "ip", "link", "set", "eth0", "up")
	for _, ip := range ips {
		gw := Gateway(ip)
		if ip == gw {
			t.Fatalf("AddPod(%q): %v is the gateway address of its subnet", name, ip)
		}
		Run(t, node, addrCmd("replace", gw, p.HostVeth)...)
		Run(t, node, "ip", "route", "add", hostPrefix(ip), "dev", p.HostVeth, "src", gw.String())
		Run(t, name, addrCmd("add", ip, "eth0")...)
		Run(t, name, "ip", "route", "add", hostPrefix(gw), "dev", "eth0")
		Run(t, name, "ip", "route", "add", "default", "via", gw.String(), "dev", "eth0")
	}
	Run(t, node, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	return p
}

// addrCmd is `ip addr VERB IP/32 dev DEV`, with nodad for IPv6 (no duplicate
// address detection delay before the address is usable).
func addrCmd(verb string, ip netip.Addr, dev string) []string {
	args := []string{"ip", "addr", verb, hostPrefix(ip), "dev", dev}
	if ip.Is6() {
		args = append(args, "nodad")
	}
	return args
}

// hostPrefix is ip as a single-address prefix: 10.244.1.2/32, fd00::2/128.
func hostPrefix(ip netip.Addr) string {
	return netip.PrefixFrom(ip, ip.BitLen()).String()
}

// AddDummy creates dummy interface name, up, holding addrs as host addresses (like
// the agent's VIP interface: `ip link add NAME type dummy; ip addr add VIP/32 dev
// NAME`), and deletes it at cleanup.
func AddDummy(t testing.TB, name string, addrs ...netip.Addr) {
	t.Helper()
	Run(t, Node, "ip", "link", "add", name, "type", "dummy")
	t.Cleanup(func() {
		if _, err := Exec(Node, "ip", "link", "del", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	Run(t, Node, "ip", "link", "set", name, "up")
	for _, a := range addrs {
		Run(t, Node, addrCmd("add", a, name)...)
	}
}
