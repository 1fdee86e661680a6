// Package netiftest is the contract of netif.Addrs (the dummy interface) and
// netif.Sysctl: the behaviour kube-ipvs relies on, stated once as named
// subtests. It runs against FakeAddrs and FakeSysctl in `go test`
// (netif/contract_test.go) and against Dummy and ProcSysctl in the VM
// (test/vm/guest/contract_test.go), so a fake cannot drift from the kernel
// unnoticed.
package netiftest

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/internal/contract"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// Link is what RunAddrs runs against.
type Link struct {
	// Addrs manages a link that does not exist yet. The suite deletes it
	// at the end of every case.
	Addrs netif.Addrs
	// Foreign makes a link of Addrs' name that is not a dummy (a veth),
	// removed when t ends.
	Foreign func(t *testing.T)
}

// RunAddrs runs the contract of netif.Addrs against the links newLink
// returns, a fresh one for each case.
func RunAddrs(t *testing.T, newLink func(t *testing.T) Link) {
	cases := []struct {
		name string
		run  func(t *testing.T, l Link)
	}{
		{"without the link: no addresses, changes are ErrNotFound", testNoLink},
		{"EnsureLink creates the link once", testEnsureLink},
		{"addresses read back sorted, IPv4 and IPv6", testAddrs},
		{"AddAddr twice is ErrExists, DelAddr of an unbound address ErrNotFound", testAddrErrors},
		{"invalid addresses are refused", testInvalidAddrs},
		{"DeleteLink removes the addresses", testDeleteLink},
		{"a link that is not a dummy is not used or deleted", testForeignLink},
		{"local routes read back sorted, without the host routes of addresses; the last IPv4 address takes the IPv4 ones", testRoutes},
		{"AddRoute twice is ErrExists, DelRoute of a missing route ErrNotFound, none without the link", testRouteErrors},
		{"DeleteLink removes the local routes", testDeleteLinkRoutes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLink(t)
			t.Cleanup(func() {
				if err := l.Addrs.DeleteLink(); err != nil && !errors.Is(err, netif.ErrNotFound) {
					t.Errorf("cleanup: %v", err)
				}
			})
			tc.run(t, l)
		})
	}
}

var (
	v4a = netip.MustParseAddr("10.96.240.3")
	v4b = netip.MustParseAddr("10.96.240.20")
	v6a = netip.MustParseAddr("fd00:96:240::1")
	v6b = netip.MustParseAddr("fd00:96:240::2")
)

// wantAddrs fails unless the link holds exactly want, in that order.
func wantAddrs(t *testing.T, what string, a netif.Addrs, want ...netip.Addr) {
	t.Helper()
	got, err := a.ListAddrs()
	if err != nil {
		t.Fatalf("%s: ListAddrs: %v", what, err)
	}
	if want == nil {
		want = []netip.Addr{}
	}
	if got == nil || !reflect.DeepEqual(got, want) {
		t.Errorf("%s: ListAddrs = %#v, want %v", what, got, want)
	}
}

// wantPlain fails unless err is an error that is neither ErrNotFound nor
// ErrExists, worded once.
func wantPlain(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, netif.ErrNotFound) || errors.Is(err, netif.ErrExists) {
		t.Errorf("%s = %v, want a plain error", what, err)
	}
	contract.WantPlainMessage(t, what, err)
}

func mustDo(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testNoLink(t *testing.T, l Link) {
	wantAddrs(t, "no link", l.Addrs)
	contract.WantErr(t, "AddAddr", l.Addrs.AddAddr(v4a), netif.ErrNotFound)
	contract.WantErr(t, "DelAddr", l.Addrs.DelAddr(v4a), netif.ErrNotFound)
	contract.WantErr(t, "DeleteLink", l.Addrs.DeleteLink(), netif.ErrNotFound)
	wantAddrs(t, "still no link", l.Addrs)
}

func testEnsureLink(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	mustDo(t, "EnsureLink again", l.Addrs.EnsureLink())
	wantAddrs(t, "a new link (link-local IPv6 left out)", l.Addrs)
	mustDo(t, "AddAddr", l.Addrs.AddAddr(v4a))
	mustDo(t, "EnsureLink with an address", l.Addrs.EnsureLink())
	wantAddrs(t, "after EnsureLink", l.Addrs, v4a)
}

func testAddrs(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	for _, a := range []netip.Addr{v6b, v4b, v6a, v4a} {
		mustDo(t, "AddAddr "+a.String(), l.Addrs.AddAddr(a))
	}
	wantAddrs(t, "after AddAddr", l.Addrs, v4a, v4b, v6a, v6b)
	mustDo(t, "DelAddr", l.Addrs.DelAddr(v4b))
	mustDo(t, "DelAddr", l.Addrs.DelAddr(v6a))
	wantAddrs(t, "after DelAddr", l.Addrs, v4a, v6b)
}

func testAddrErrors(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	mustDo(t, "AddAddr", l.Addrs.AddAddr(v4a))
	mustDo(t, "AddAddr", l.Addrs.AddAddr(v6a))
	contract.WantErr(t, "AddAddr IPv4 twice", l.Addrs.AddAddr(v4a), netif.ErrExists)
	contract.WantErr(t, "AddAddr IPv6 twice", l.Addrs.AddAddr(v6a), netif.ErrExists)
	contract.WantErr(t, "DelAddr IPv4 unbound", l.Addrs.DelAddr(v4b), netif.ErrNotFound)
	contract.WantErr(t, "DelAddr IPv6 unbound", l.Addrs.DelAddr(v6b), netif.ErrNotFound)
	wantAddrs(t, "after", l.Addrs, v4a, v6a)
}

func testInvalidAddrs(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	for _, a := range []netip.Addr{{}, netip.MustParseAddr("::ffff:10.96.240.3"), netip.MustParseAddr("fe80::1%kipvs0")} {
		wantPlain(t, "AddAddr("+a.String()+")", l.Addrs.AddAddr(a))
		wantPlain(t, "DelAddr("+a.String()+")", l.Addrs.DelAddr(a))
	}
	wantAddrs(t, "after", l.Addrs)
}

func testDeleteLink(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	mustDo(t, "AddAddr", l.Addrs.AddAddr(v4a))
	mustDo(t, "AddAddr", l.Addrs.AddAddr(v6a))
	mustDo(t, "DeleteLink", l.Addrs.DeleteLink())
	wantAddrs(t, "after DeleteLink", l.Addrs)
	contract.WantErr(t, "DeleteLink again", l.Addrs.DeleteLink(), netif.ErrNotFound)
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	wantAddrs(t, "the new link", l.Addrs)
}

func testForeignLink(t *testing.T, l Link) {
	l.Foreign(t)
	wantPlain(t, "EnsureLink on a link that is not a dummy", l.Addrs.EnsureLink())
	wantPlain(t, "DeleteLink of a link that is not a dummy", l.Addrs.DeleteLink())
	if err := l.Addrs.AddAddr(v4a); errors.Is(err, netif.ErrNotFound) {
		t.Errorf("AddAddr: %v: the link was deleted", err)
	}
}

var (
	p4a = netip.MustParsePrefix("10.97.0.0/16")
	p4b = netip.MustParsePrefix("10.98.128.0/24")
	p6a = netip.MustParsePrefix("fd00:97::/108")
)

// wantRoutes fails unless the link holds exactly want's local routes, in
// that order.
func wantRoutes(t *testing.T, what string, a netif.Addrs, want ...netip.Prefix) {
	t.Helper()
	got, err := a.ListRoutes()
	if err != nil {
		t.Fatalf("%s: ListRoutes: %v", what, err)
	}
	if want == nil {
		want = []netip.Prefix{}
	}
	if got == nil || !reflect.DeepEqual(got, want) {
		t.Errorf("%s: ListRoutes = %v, want %v", what, got, want)
	}
}

func testRoutes(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	wantRoutes(t, "a new link", l.Addrs)
	for _, a := range []netip.Addr{v4a, v4b, v6a} {
		mustDo(t, "AddAddr "+a.String(), l.Addrs.AddAddr(a))
	}
	for _, p := range []netip.Prefix{p6a, p4b, p4a} {
		mustDo(t, "AddRoute "+p.String(), l.Addrs.AddRoute(p))
	}
	wantRoutes(t, "after AddRoute (the addresses' host routes left out)", l.Addrs, p4a, p4b, p6a)
	wantAddrs(t, "the addresses stay", l.Addrs, v4a, v4b, v6a)
	mustDo(t, "DelRoute", l.Addrs.DelRoute(p4b))
	wantRoutes(t, "after DelRoute", l.Addrs, p4a, p6a)
	mustDo(t, "DelAddr", l.Addrs.DelAddr(v4b))
	wantRoutes(t, "after DelAddr of an IPv4 address, another one left", l.Addrs, p4a, p6a)
	// The kernel deletes a link's IPv4 routes with its last IPv4 address
	// (fib_disable_ip): kube-ipvs keeps an anchor address for them.
	mustDo(t, "DelAddr", l.Addrs.DelAddr(v4a))
	wantRoutes(t, "after DelAddr of the last IPv4 address", l.Addrs, p6a)
}

func testRouteErrors(t *testing.T, l Link) {
	contract.WantErr(t, "AddRoute without the link", l.Addrs.AddRoute(p4a), netif.ErrNotFound)
	contract.WantErr(t, "DelRoute without the link", l.Addrs.DelRoute(p4a), netif.ErrNotFound)
	wantRoutes(t, "no link", l.Addrs)
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	mustDo(t, "AddRoute", l.Addrs.AddRoute(p4a))
	mustDo(t, "AddRoute", l.Addrs.AddRoute(p6a))
	contract.WantErr(t, "AddRoute IPv4 twice", l.Addrs.AddRoute(p4a), netif.ErrExists)
	contract.WantErr(t, "AddRoute IPv6 twice", l.Addrs.AddRoute(p6a), netif.ErrExists)
	contract.WantErr(t, "DelRoute missing", l.Addrs.DelRoute(p4b), netif.ErrNotFound)
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("10.97.0.1/16")} {
		wantPlain(t, "AddRoute("+p.String()+")", l.Addrs.AddRoute(p))
	}
	wantRoutes(t, "after", l.Addrs, p4a, p6a)
}

func testDeleteLinkRoutes(t *testing.T, l Link) {
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	mustDo(t, "AddRoute", l.Addrs.AddRoute(p4a))
	mustDo(t, "AddRoute", l.Addrs.AddRoute(p6a))
	mustDo(t, "DeleteLink", l.Addrs.DeleteLink())
	wantRoutes(t, "after DeleteLink", l.Addrs)
	mustDo(t, "EnsureLink", l.Addrs.EnsureLink())
	wantRoutes(t, "the new link", l.Addrs)
}

// RunSysctl runs the contract of netif.Sysctl against the sysctls
// newSysctl returns, a fresh one for each case. key must exist and hold 0
// or 1, and be safe to toggle; each case puts its value back.
func RunSysctl(t *testing.T, newSysctl func(t *testing.T) netif.Sysctl, key string) {
	cases := []struct {
		name string
		run  func(t *testing.T, s netif.Sysctl, key string)
	}{
		{"Get returns the trimmed value", testGet},
		{"Set then Get reads back the trimmed value", testSet},
		{"a missing key is ErrNotFound", testMissingKey},
		{"invalid keys are refused", testInvalidKeys},
		{"a value the key cannot take is EINVAL and changes nothing", testBadValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSysctl(t)
			orig, err := s.Get(key)
			if err != nil {
				t.Fatalf("Get(%s): %v", key, err)
			}
			t.Cleanup(func() {
				if err := s.Set(key, orig); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			tc.run(t, s, key)
		})
	}
}

func testGet(t *testing.T, s netif.Sysctl, key string) {
	v, err := s.Get(key)
	if err != nil || (v != "0" && v != "1") {
		t.Errorf("Get(%s) = %q, %v; want 0 or 1", key, v, err)
	}
}

func testSet(t *testing.T, s netif.Sysctl, key string) {
	for _, v := range []string{"1", " 0\n", "1\n"} {
		mustDo(t, "Set", s.Set(key, v))
		got, err := s.Get(key)
		if want := strings.TrimSpace(v); err != nil || got != want {
			t.Errorf("after Set(%s, %q): Get = %q, %v; want %q", key, v, got, err, want)
		}
	}
}

func testMissingKey(t *testing.T, s netif.Sysctl, _ string) {
	const missing = "net/ipv4/kipvs-ct-nosuch"
	_, err := s.Get(missing)
	contract.WantErr(t, "Get", err, netif.ErrNotFound)
	contract.WantErr(t, "Set", s.Set(missing, "1"), netif.ErrNotFound)
	_, err = s.Get(missing)
	contract.WantErr(t, "Get after Set", err, netif.ErrNotFound)
}

func testInvalidKeys(t *testing.T, s netif.Sysctl, _ string) {
	for _, k := range []string{"", "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward", "net/../kernel/hostname", "net//ipv4"} {
		_, err := s.Get(k)
		wantPlain(t, "Get("+k+")", err)
		wantPlain(t, "Set("+k+")", s.Set(k, "1"))
	}
}

func testBadValue(t *testing.T, s netif.Sysctl, key string) {
	before, err := s.Get(key)
	mustDo(t, "Get", err)
	for _, v := range []string{"abc", "0x"} {
		contract.WantErr(t, "Set "+v, s.Set(key, v), syscall.EINVAL)
	}
	if got, err := s.Get(key); err != nil || got != before {
		t.Errorf("after refused Sets: Get = %q, %v; want %q", got, err, before)
	}
}
