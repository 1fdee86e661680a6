//go:build linux

package netif

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// Nothing here sends a netlink request: only the pure parts of Dummy are
// tested. Dummy against a real kernel is tested in a VM (tier 2).

func TestNewDummy(t *testing.T) {
	if d := NewDummy(""); d.Name() != DefaultLink {
		t.Errorf("NewDummy(\"\").Name() = %q", d.Name())
	}
	if d := NewDummy("kube-ipvs0"); d.Name() != "kube-ipvs0" {
		t.Errorf("Name() = %q", d.Name())
	}
}

func TestDummyRejectsInvalidAddrBeforeNetlink(t *testing.T) {
	d := NewDummy("")
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"add zero", func() error { return d.AddAddr(netip.Addr{}) }, "adding address invalid IP to kipvs0: invalid address"},
		{"del mapped", func() error { return d.DelAddr(netip.MustParseAddr("::ffff:1.2.3.4")) },
			"deleting address ::ffff:1.2.3.4/128 from kipvs0: address ::ffff:1.2.3.4 is IPv4-mapped IPv6; use the IPv4 form"},
		{"add zoned", func() error { return d.AddAddr(netip.MustParseAddr("fe80::1%eth0")) },
			"adding address fe80::1/128 to kipvs0: address fe80::1%eth0 has a zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil || err.Error() != tc.want {
				t.Errorf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHostAddr(t *testing.T) {
	tests := []struct {
		in        string
		wantNet   string
		wantFlags int
	}{
		{"10.96.0.10", "10.96.0.10/32", 0},
		{"fd00::10", "fd00::10/128", ifaFNoDAD},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			a := hostAddr(netip.MustParseAddr(tc.in))
			if a.IPNet.String() != tc.wantNet || a.Flags != tc.wantFlags || a.Scope != 0 || a.Label != "" {
				t.Errorf("hostAddr = %+v (%s), want %s flags %#x", a, a.IPNet, tc.wantNet, tc.wantFlags)
			}
		})
	}
}

func TestAddrsFromNetlink(t *testing.T) {
	mk := func(cidr string) netlink.Addr {
		ip, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return netlink.Addr{IPNet: n}
	}
	raw := []netlink.Addr{
		mk("fd00::10/128"),
		mk("fe80::d0a4:1ff:fe2b:3c4d/64"), // kernel-assigned link-local: left out
		mk("10.96.0.10/32"),
		{IPNet: &net.IPNet{IP: net.IPv4(10, 96, 0, 2), Mask: net.CIDRMask(32, 32)}}, // 16-byte form
		mk("10.96.0.10/32"),   // duplicate
		{},                    // no IPNet
		{IPNet: &net.IPNet{}}, // no IP
	}
	got := addrsFromNetlink(raw)
	want := []netip.Addr{netip.MustParseAddr("10.96.0.2"), netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00::10")}
	if len(got) != len(want) {
		t.Fatalf("addrsFromNetlink = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestAddrError(t *testing.T) {
	// The sentinel survives the wrapping.
	err := addrError(verbDel, netip.MustParseAddr("10.0.0.1"), "kipvs0", ErrNotFound)
	if !errors.Is(err, ErrNotFound) || err.Error() != "deleting address 10.0.0.1/32 from kipvs0: not found" {
		t.Errorf("addrError = %v", err)
	}
}
