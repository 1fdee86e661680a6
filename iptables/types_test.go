package iptables

import (
	"net/netip"
	"testing"
)

func TestEntryString(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		name  string
		entry Entry
		want  string
	}{
		{name: "hash:ip", entry: Entry{Addr: a("10.96.0.1")}, want: "10.96.0.1"},
		{name: "hash:ip v6", entry: Entry{Addr: a("fd00::1")}, want: "fd00::1"},
		{name: "hash:ip,port", entry: Entry{Addr: a("10.96.0.1"), Proto: "tcp", Port: 80}, want: "10.96.0.1,tcp:80"},
		{name: "hash:ip,port sctp v6", entry: Entry{Addr: a("fd00::1"), Proto: "sctp", Port: 9}, want: "fd00::1,sctp:9"},
		{
			name:  "hash:ip,port,ip",
			entry: Entry{Addr: a("10.244.1.5"), Proto: "udp", Port: 53, Addr2: a("10.244.1.5")},
			want:  "10.244.1.5,udp:53,10.244.1.5",
		},
		{
			name:  "hash:ip,port,net",
			entry: Entry{Addr: a("192.0.2.10"), Proto: "tcp", Port: 443, Net: p("203.0.113.0/24")},
			want:  "192.0.2.10,tcp:443,203.0.113.0/24",
		},
		{name: "hash:net", entry: Entry{Net: p("10.0.0.0/8")}, want: "10.0.0.0/8"},
		{name: "hash:net host", entry: Entry{Net: p("10.0.0.1/32")}, want: "10.0.0.1/32"},
		{name: "hash:net v6", entry: Entry{Net: p("fd00::/64")}, want: "fd00::/64"},
		{name: "bitmap:port", entry: Entry{Port: 8193}, want: "8193"},
		{name: "bitmap:port 0", entry: Entry{}, want: "0"},
		{
			name:  "skbinfo hash:ip,port, lower-case hex as ipset save prints it",
			entry: Entry{Addr: a("10.96.0.1"), Proto: "tcp", Port: 80, Mark: 0x2aBc},
			want:  "10.96.0.1,tcp:80 skbmark 0x2abc",
		},
		{name: "skbinfo full mark", entry: Entry{Addr: a("fd00::1"), Mark: 0xffffffff}, want: "fd00::1 skbmark 0xffffffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.entry.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEntryKey(t *testing.T) {
	e := Entry{Addr: netip.MustParseAddr("10.96.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001}
	if got, want := e.Key(), (Entry{Addr: e.Addr, Proto: "tcp", Port: 80}); got != want {
		t.Errorf("Key() = %v, want %v", got, want)
	}
	if e.Mark != 0x2001 {
		t.Error("Key changed its receiver")
	}
}
