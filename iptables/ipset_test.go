//go:build linux

package iptables

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

func u8(v uint8) *uint8    { return &v }
func u16(v uint16) *uint16 { return &v }

// TestEntryNetlink checks the conversion both ways against the attributes
// the kernel takes and lists (pure: no netlink socket is opened).
func TestEntryNetlink(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		name  string
		typ   SetType
		entry Entry
		nl    netlink.IPSetEntry
	}{
		{
			name:  "hash:ip",
			typ:   HashIP,
			entry: Entry{Addr: a("10.96.0.1")},
			nl:    netlink.IPSetEntry{IP: net.IP{10, 96, 0, 1}},
		},
		{
			name:  "hash:ip,port",
			typ:   HashIPPort,
			entry: Entry{Addr: a("10.96.0.1"), Proto: "tcp", Port: 80},
			nl:    netlink.IPSetEntry{IP: net.IP{10, 96, 0, 1}, Protocol: u8(6), Port: u16(80)},
		},
		{
			name:  "hash:ip,port v6 udp",
			typ:   HashIPPort,
			entry: Entry{Addr: a("fd00::a"), Proto: "udp", Port: 53},
			nl:    netlink.IPSetEntry{IP: net.ParseIP("fd00::a"), Protocol: u8(17), Port: u16(53)},
		},
		{
			name:  "hash:ip,port,ip",
			typ:   HashIPPortIP,
			entry: Entry{Addr: a("10.244.1.5"), Proto: "sctp", Port: 9, Addr2: a("10.244.1.5")},
			nl:    netlink.IPSetEntry{IP: net.IP{10, 244, 1, 5}, Protocol: u8(132), Port: u16(9), IP2: net.IP{10, 244, 1, 5}},
		},
		{
			name:  "hash:ip,port,net",
			typ:   HashIPPortNet,
			entry: Entry{Addr: a("192.0.2.10"), Proto: "tcp", Port: 443, Net: p("203.0.113.0/24")},
			nl:    netlink.IPSetEntry{IP: net.IP{192, 0, 2, 10}, Protocol: u8(6), Port: u16(443), IP2: net.IP{203, 0, 113, 0}, CIDR2: 24},
		},
		{
			name:  "hash:net",
			typ:   HashNet,
			entry: Entry{Net: p("10.0.0.0/8")},
			nl:    netlink.IPSetEntry{IP: net.IP{10, 0, 0, 0}, CIDR: 8},
		},
		{
			name:  "hash:net v6 host",
			typ:   HashNet,
			entry: Entry{Net: p("fd00::1/128")},
			nl:    netlink.IPSetEntry{IP: net.ParseIP("fd00::1"), CIDR: 128},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := entryToNetlink(tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.nl) {
				t.Errorf("to netlink: %+v, want %+v", *got, tt.nl)
			}
			back, err := entryFromNetlink(tt.typ, tt.nl)
			if err != nil {
				t.Fatal(err)
			}
			if back != tt.entry {
				t.Errorf("from netlink: %v, want %v", back, tt.entry)
			}
		})
	}
}

func TestEntryFromNetlinkErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  SetType
		nl   netlink.IPSetEntry
	}{
		{name: "no address", typ: HashIP},
		{name: "port missing", typ: HashIPPort, nl: netlink.IPSetEntry{IP: net.IP{10, 0, 0, 1}}},
		{name: "second ip missing", typ: HashIPPortIP, nl: netlink.IPSetEntry{IP: net.IP{10, 0, 0, 1}, Protocol: u8(6), Port: u16(1)}},
		{name: "foreign type", typ: "hash:mac", nl: netlink.IPSetEntry{IP: net.IP{10, 0, 0, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := entryFromNetlink(tt.typ, tt.nl); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestMapSetError(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		onExist error
		want    error
	}{
		{name: "nil", err: nil, want: nil},
		{name: "missing set", err: syscall.ENOENT, want: ErrNotFound},
		{name: "set name taken", err: syscall.EEXIST, onExist: ErrExists, want: ErrExists},
		{name: "member present on add", err: nl.IPSetError(nl.IPSET_ERR_EXIST), onExist: ErrExists, want: ErrExists},
		{name: "member absent on del", err: nl.IPSetError(nl.IPSET_ERR_EXIST), onExist: ErrNotFound, want: ErrNotFound},
		{name: "set in use", err: nl.IPSetError(nl.IPSET_ERR_BUSY), want: ErrInUse},
		{name: "other", err: nl.IPSetError(nl.IPSET_ERR_TYPE_MISMATCH), onExist: ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapSetError("op", tt.err, tt.onExist)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("got %v", got)
				}
				return
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap the kernel error", got)
			}
			for _, typed := range []error{ErrNotFound, ErrExists, ErrInUse} {
				if errors.Is(got, typed) != (typed == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", got, typed, !(typed == tt.want))
				}
			}
		})
	}
}

func TestGuardRecoversPanic(t *testing.T) {
	err := guard(func() error { panic("interface conversion") })
	if err == nil {
		t.Fatal("panic not turned into an error")
	}
}
