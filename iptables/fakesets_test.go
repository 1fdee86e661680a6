package iptables

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var (
	addr   = netip.MustParseAddr
	prefix = netip.MustParsePrefix
)

func TestFakeSetsErrors(t *testing.T) {
	ipPort := Set{Name: "KUBE-IPVS-CLUSTER-IP", Type: HashIPPort}
	svc := Entry{Addr: addr("10.96.0.1"), Proto: "tcp", Port: 443}
	tests := []struct {
		name    string
		op      func(s *FakeSets) error
		want    error // a typed error, or nil
		wantAny bool  // an untyped error
	}{
		{name: "CreateSet taken", op: func(s *FakeSets) error { return s.CreateSet(ipPort) }, want: ErrExists},
		{
			name: "CreateSet taken by another type",
			op:   func(s *FakeSets) error { return s.CreateSet(Set{Name: ipPort.Name, Type: HashIP}) },
			want: ErrExists,
		},
		{
			name:    "CreateSet name too long",
			op:      func(s *FakeSets) error { return s.CreateSet(Set{Name: strings.Repeat("K", 32), Type: HashIP}) },
			wantAny: true,
		},
		{
			name:    "CreateSet unsupported type",
			op:      func(s *FakeSets) error { return s.CreateSet(Set{Name: "X", Type: "hash:mac"}) },
			wantAny: true,
		},
		{
			name:    "CreateSet bitmap:port without a range",
			op:      func(s *FakeSets) error { return s.CreateSet(Set{Name: "X", Type: BitmapPort}) },
			wantAny: true,
		},
		{
			name: "AddEntry with a mark to a set without skbinfo",
			op: func(s *FakeSets) error {
				return s.AddEntry(ipPort.Name, Entry{Addr: addr("10.96.0.2"), Proto: "tcp", Port: 80, Mark: 1})
			},
			wantAny: true,
		},
		{
			name: "AddEntry of a present member with a mark, no skbinfo",
			op: func(s *FakeSets) error {
				m := svc
				m.Mark = 1
				return s.AddEntry(ipPort.Name, m)
			},
			wantAny: true,
		},
		{name: "DestroySet missing", op: func(s *FakeSets) error { return s.DestroySet("NOPE") }, want: ErrNotFound},
		{
			name: "DestroySet referenced",
			op: func(s *FakeSets) error {
				s.Referenced = func(name string) bool { return name == ipPort.Name }
				return s.DestroySet(ipPort.Name)
			},
			want: ErrInUse,
		},
		{
			name: "ListEntries missing",
			op:   func(s *FakeSets) error { _, err := s.ListEntries("NOPE"); return err },
			want: ErrNotFound,
		},
		{name: "AddEntry present", op: func(s *FakeSets) error { return s.AddEntry(ipPort.Name, svc) }, want: ErrExists},
		{name: "AddEntry missing set", op: func(s *FakeSets) error { return s.AddEntry("NOPE", svc) }, want: ErrNotFound},
		{
			name:    "AddEntry not fitting the type",
			op:      func(s *FakeSets) error { return s.AddEntry(ipPort.Name, Entry{Addr: addr("10.96.0.2")}) },
			wantAny: true,
		},
		{
			name: "DelEntry absent",
			op: func(s *FakeSets) error {
				return s.DelEntry(ipPort.Name, Entry{Addr: addr("10.96.0.1"), Proto: "udp", Port: 443})
			},
			want: ErrNotFound,
		},
		{name: "DelEntry missing set", op: func(s *FakeSets) error { return s.DelEntry("NOPE", svc) }, want: ErrNotFound},
		{
			name: "Hook error returned as-is, nothing done",
			op: func(s *FakeSets) error {
				s.Hook = func(string, ...string) error { return errBoom }
				return s.DestroySet(ipPort.Name)
			},
			want: errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewFakeSets()
			if err := s.CreateSet(ipPort); err != nil {
				t.Fatal(err)
			}
			if err := s.AddEntry(ipPort.Name, svc); err != nil {
				t.Fatal(err)
			}
			before := s.Dump()
			err := tt.op(s)
			switch {
			case tt.wantAny:
				if err == nil {
					t.Fatal("no error")
				}
				for _, typed := range []error{ErrNotFound, ErrExists, ErrInUse} {
					if errors.Is(err, typed) {
						t.Errorf("err %v is %v", err, typed)
					}
				}
			case !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if after := s.Dump(); after != before {
				t.Errorf("a failed call changed the state:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

func TestFakeSetsEntryValidation(t *testing.T) {
	owned := Set{Type: BitmapPort, Ports: [2]uint16{8192, 16383}}
	skb := Set{Type: HashIPPort, SkbInfo: true}
	tests := []struct {
		name  string
		set   Set
		entry Entry
		ok    bool
	}{
		{name: "hash:ip", set: Set{Type: HashIP}, entry: Entry{Addr: addr("10.0.0.1")}, ok: true},
		{name: "hash:ip with port", set: Set{Type: HashIP}, entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 1}},
		{name: "hash:ip v6 in inet set", set: Set{Type: HashIP}, entry: Entry{Addr: addr("fd00::1")}},
		{name: "hash:ip 4in6 in inet6 set", set: Set{Type: HashIP, IPv6: true}, entry: Entry{Addr: addr("::ffff:10.0.0.1")}},
		{name: "hash:ip v6", set: Set{Type: HashIP, IPv6: true}, entry: Entry{Addr: addr("fd00::1")}, ok: true},
		{name: "hash:ip,port", set: Set{Type: HashIPPort}, entry: Entry{Addr: addr("10.0.0.1"), Proto: "sctp", Port: 1}, ok: true},
		{name: "hash:ip,port icmp", set: Set{Type: HashIPPort}, entry: Entry{Addr: addr("10.0.0.1"), Proto: "icmp", Port: 1}},
		{name: "hash:ip,port no proto", set: Set{Type: HashIPPort}, entry: Entry{Addr: addr("10.0.0.1"), Port: 1}},
		{
			name:  "hash:ip,port,ip",
			set:   Set{Type: HashIPPortIP},
			entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80, Addr2: addr("10.0.0.1")},
			ok:    true,
		},
		{
			name:  "hash:ip,port,ip without second address",
			set:   Set{Type: HashIPPortIP},
			entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80},
		},
		{
			name:  "hash:ip,port,net",
			set:   Set{Type: HashIPPortNet},
			entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80, Net: prefix("192.0.2.0/24")},
			ok:    true,
		},
		{
			name:  "hash:ip,port,net /0 (the kernel refuses it)",
			set:   Set{Type: HashIPPortNet},
			entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80, Net: prefix("0.0.0.0/0")},
		},
		{name: "hash:net", set: Set{Type: HashNet}, entry: Entry{Net: prefix("10.0.0.0/8")}, ok: true},
		{name: "hash:net unmasked", set: Set{Type: HashNet}, entry: Entry{Net: prefix("10.1.2.3/8")}},
		{name: "hash:net with address", set: Set{Type: HashNet}, entry: Entry{Addr: addr("10.0.0.1"), Net: prefix("10.0.0.0/8")}},
		{name: "bitmap:port", set: owned, entry: Entry{Port: 8193}, ok: true},
		{name: "bitmap:port first", set: owned, entry: Entry{Port: 8192}, ok: true},
		{name: "bitmap:port last", set: owned, entry: Entry{Port: 16383}, ok: true},
		{name: "bitmap:port below the range", set: owned, entry: Entry{Port: 8191}},
		{name: "bitmap:port above the range", set: owned, entry: Entry{Port: 16384}},
		{name: "bitmap:port port 0 of a full range", set: Set{Type: BitmapPort, Ports: [2]uint16{0, 65535}}, entry: Entry{}, ok: true},
		{name: "bitmap:port with a protocol", set: owned, entry: Entry{Proto: "tcp", Port: 8193}},
		{name: "bitmap:port with an address", set: owned, entry: Entry{Addr: addr("10.0.0.1"), Port: 8193}},
		{name: "bitmap:port with a mark", set: owned, entry: Entry{Port: 8193, Mark: 1}},
		{name: "skbinfo with a mark", set: skb, entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001}, ok: true},
		{name: "skbinfo without a mark", set: skb, entry: Entry{Addr: addr("10.0.0.1"), Proto: "tcp", Port: 80}},
		{name: "skbinfo hash:ip", set: Set{Type: HashIP, SkbInfo: true}, entry: Entry{Addr: addr("10.0.0.1"), Mark: 1}, ok: true},
		{name: "mark without skbinfo", set: Set{Type: HashIP}, entry: Entry{Addr: addr("10.0.0.1"), Mark: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewFakeSets()
			tt.set.Name = "S"
			if err := s.CreateSet(tt.set); err != nil {
				t.Fatal(err)
			}
			err := s.AddEntry("S", tt.entry)
			if (err == nil) != tt.ok {
				t.Errorf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestFakeSetsDump(t *testing.T) {
	s := NewFakeSets()
	sets := []struct {
		set     Set
		entries []Entry
	}{
		{Set{Name: "KUBE-IPVS-NODE-PORT-V6", Type: HashIPPort, IPv6: true}, []Entry{
			{Addr: addr("fd00::2"), Proto: "udp", Port: 30053},
			{Addr: addr("fd00::10"), Proto: "tcp", Port: 30080},
		}},
		{Set{Name: "KUBE-IPVS-CLUSTER-IP", Type: HashIPPort}, []Entry{
			{Addr: addr("10.96.0.10"), Proto: "udp", Port: 53},
			{Addr: addr("10.96.0.10"), Proto: "tcp", Port: 53},
			{Addr: addr("10.96.0.2"), Proto: "tcp", Port: 443},
			{Addr: addr("10.96.0.10"), Proto: "tcp", Port: 9153},
		}},
		{Set{Name: "KUBE-IPVS-HAIRPIN", Type: HashIPPortIP}, []Entry{
			{Addr: addr("10.244.1.5"), Proto: "tcp", Port: 8080, Addr2: addr("10.244.1.5")},
		}},
		{Set{Name: "KUBE-IPVS-LB-SRC", Type: HashIPPortNet}, []Entry{
			{Addr: addr("192.0.2.10"), Proto: "tcp", Port: 443, Net: prefix("203.0.113.0/24")},
			{Addr: addr("192.0.2.10"), Proto: "tcp", Port: 443, Net: prefix("198.51.100.0/24")},
		}},
		{Set{Name: "KUBE-IPVS-EMPTY", Type: HashIP}, nil},
		{Set{Name: "KIPVS-SHORT-CIRCUIT", Type: HashIPPort, SkbInfo: true}, []Entry{
			{Addr: addr("192.0.2.10"), Proto: "tcp", Port: 443, Mark: 0x2001},
			{Addr: addr("192.0.2.9"), Proto: "udp", Port: 53, Mark: 0x3fff},
		}},
		{Set{Name: "KIPVS-SHORT-CIRCUIT6", Type: HashIPPort, IPv6: true, SkbInfo: true}, []Entry{
			{Addr: addr("fd00::10"), Proto: "tcp", Port: 80, Mark: 0x2abc},
		}},
		{Set{Name: "KIPVS-OWNED-MARK", Type: BitmapPort, Ports: [2]uint16{8192, 16383}}, []Entry{
			{Port: 16383}, {Port: 8193}, {Port: 9000},
		}},
		{Set{Name: "KUBE-IPVS-NETS", Type: HashNet}, []Entry{
			{Net: prefix("10.0.0.0/8")},
			{Net: prefix("10.0.0.0/16")},
			{Net: prefix("9.0.0.0/8")},
		}},
	}
	for _, st := range sets {
		if err := s.CreateSet(st.set); err != nil {
			t.Fatal(err)
		}
		for _, e := range st.entries {
			if err := s.AddEntry(st.set.Name, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := `create KIPVS-OWNED-MARK bitmap:port range 8192-16383
add KIPVS-OWNED-MARK 8193
add KIPVS-OWNED-MARK 9000
add KIPVS-OWNED-MARK 16383
create KIPVS-SHORT-CIRCUIT hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo
add KIPVS-SHORT-CIRCUIT 192.0.2.9,udp:53 skbmark 0x3fff
add KIPVS-SHORT-CIRCUIT 192.0.2.10,tcp:443 skbmark 0x2001
create KIPVS-SHORT-CIRCUIT6 hash:ip,port family inet6 hashsize 1024 maxelem 65536 skbinfo
add KIPVS-SHORT-CIRCUIT6 fd00::10,tcp:80 skbmark 0x2abc
create KUBE-IPVS-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-CLUSTER-IP 10.96.0.2,tcp:443
add KUBE-IPVS-CLUSTER-IP 10.96.0.10,tcp:53
add KUBE-IPVS-CLUSTER-IP 10.96.0.10,tcp:9153
add KUBE-IPVS-CLUSTER-IP 10.96.0.10,udp:53
create KUBE-IPVS-EMPTY hash:ip family inet hashsize 1024 maxelem 65536
create KUBE-IPVS-HAIRPIN hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-HAIRPIN 10.244.1.5,tcp:8080,10.244.1.5
create KUBE-IPVS-LB-SRC hash:ip,port,net family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-LB-SRC 192.0.2.10,tcp:443,198.51.100.0/24
add KUBE-IPVS-LB-SRC 192.0.2.10,tcp:443,203.0.113.0/24
create KUBE-IPVS-NETS hash:net family inet hashsize 1024 maxelem 65536
add KUBE-IPVS-NETS 9.0.0.0/8
add KUBE-IPVS-NETS 10.0.0.0/8
add KUBE-IPVS-NETS 10.0.0.0/16
create KUBE-IPVS-NODE-PORT-V6 hash:ip,port family inet6 hashsize 1024 maxelem 65536
add KUBE-IPVS-NODE-PORT-V6 fd00::2,udp:30053
add KUBE-IPVS-NODE-PORT-V6 fd00::10,tcp:30080
`
	if got := s.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
	names, err := s.ListSets()
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"KIPVS-OWNED-MARK", "KIPVS-SHORT-CIRCUIT", "KIPVS-SHORT-CIRCUIT6", "KUBE-IPVS-CLUSTER-IP", "KUBE-IPVS-EMPTY", "KUBE-IPVS-HAIRPIN", "KUBE-IPVS-LB-SRC", "KUBE-IPVS-NETS", "KUBE-IPVS-NODE-PORT-V6"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("ListSets = %q, want %q", names, wantNames)
	}

	// What Dump prints, Load reads back: the same text, the same members.
	back := NewFakeSets()
	if err := back.Load(want); err != nil {
		t.Fatalf("Load of the Dump: %v", err)
	}
	if got := back.Dump(); got != want {
		t.Errorf("Dump after Load of the Dump:\n%s\nwant:\n%s", got, want)
	}
	for _, st := range sets {
		got, err := back.ListEntries(st.set.Name)
		wantEntries := slices.SortedFunc(slices.Values(st.entries), compareEntries)
		if err != nil || !slices.Equal(got, wantEntries) {
			t.Errorf("loaded ListEntries(%s) = %v, %v; want %v", st.set.Name, got, err, wantEntries)
		}
	}
}

// TestFakeSetsSkbInfo runs AddEntry and DelEntry on a skbinfo set and a
// bitmap:port set and compares the whole Dump after each step.
func TestFakeSetsSkbInfo(t *testing.T) {
	const (
		head  = "create SC hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo\n"
		owned = "create OWNED bitmap:port range 8192-16383\n"
	)
	a := Entry{Addr: addr("10.96.0.1"), Proto: "tcp", Port: 80}
	b := Entry{Addr: addr("10.96.0.2"), Proto: "udp", Port: 53}
	with := func(e Entry, mark uint32) Entry { e.Mark = mark; return e }
	steps := []struct {
		name string
		op   func(s *FakeSets) error
		want error // a typed error, nil for none
		fail bool  // an untyped error
		dump string
	}{
		{
			name: "add a",
			op:   func(s *FakeSets) error { return s.AddEntry("SC", with(a, 0x2001)) },
			dump: owned + head + "add SC 10.96.0.1,tcp:80 skbmark 0x2001\n",
		},
		{
			name: "add b",
			op:   func(s *FakeSets) error { return s.AddEntry("SC", with(b, 0x2002)) },
			dump: owned + head + "add SC 10.96.0.1,tcp:80 skbmark 0x2001\nadd SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add a again with another mark replaces it",
			op:   func(s *FakeSets) error { return s.AddEntry("SC", with(a, 0x3fff)) },
			dump: owned + head + "add SC 10.96.0.1,tcp:80 skbmark 0x3fff\nadd SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add a again with the same mark",
			op:   func(s *FakeSets) error { return s.AddEntry("SC", with(a, 0x3fff)) },
			dump: owned + head + "add SC 10.96.0.1,tcp:80 skbmark 0x3fff\nadd SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add without a mark is refused",
			op:   func(s *FakeSets) error { return s.AddEntry("SC", b) },
			fail: true,
			dump: owned + head + "add SC 10.96.0.1,tcp:80 skbmark 0x3fff\nadd SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "del a by key with its old mark",
			op:   func(s *FakeSets) error { return s.DelEntry("SC", with(a, 0x2001)) },
			dump: owned + head + "add SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "del a again",
			op:   func(s *FakeSets) error { return s.DelEntry("SC", a) },
			want: ErrNotFound,
			dump: owned + head + "add SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add a port",
			op:   func(s *FakeSets) error { return s.AddEntry("OWNED", Entry{Port: 8193}) },
			dump: owned + "add OWNED 8193\n" + head + "add SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add the port twice",
			op:   func(s *FakeSets) error { return s.AddEntry("OWNED", Entry{Port: 8193}) },
			want: ErrExists,
			dump: owned + "add OWNED 8193\n" + head + "add SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "add a port outside the range",
			op:   func(s *FakeSets) error { return s.AddEntry("OWNED", Entry{Port: 100}) },
			fail: true,
			dump: owned + "add OWNED 8193\n" + head + "add SC 10.96.0.2,udp:53 skbmark 0x2002\n",
		},
		{
			name: "del b by key without a mark, and the port",
			op: func(s *FakeSets) error {
				return errors.Join(s.DelEntry("SC", b), s.DelEntry("OWNED", Entry{Port: 8193}))
			},
			dump: owned + head,
		},
	}
	s := NewFakeSets()
	for _, set := range []Set{{Name: "SC", Type: HashIPPort, SkbInfo: true}, {Name: "OWNED", Type: BitmapPort, Ports: [2]uint16{8192, 16383}}} {
		if err := s.CreateSet(set); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range steps {
		err := st.op(s)
		switch {
		case st.fail:
			if err == nil || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound) {
				t.Errorf("%s: err = %v, want an untyped error", st.name, err)
			}
		case !errors.Is(err, st.want):
			t.Errorf("%s: err = %v, want %v", st.name, err, st.want)
		}
		if got := s.Dump(); got != st.dump {
			t.Errorf("%s: Dump:\n%s\nwant:\n%s", st.name, got, st.dump)
		}
	}
	got, err := s.ListEntries("SC")
	if err != nil || len(got) != 0 {
		t.Errorf("ListEntries(SC) = %v, %v; want none", got, err)
	}
}

func TestValidateSet(t *testing.T) {
	tests := []struct {
		name string
		set  Set
		ok   bool
	}{
		{name: "hash:ip,port", set: Set{Name: "S", Type: HashIPPort}, ok: true},
		{name: "skbinfo hash:ip,port v6", set: Set{Name: "S", Type: HashIPPort, IPv6: true, SkbInfo: true}, ok: true},
		{name: "skbinfo hash:ip,port,ip", set: Set{Name: "S", Type: HashIPPortIP, SkbInfo: true}, ok: true},
		{name: "skbinfo hash:net", set: Set{Name: "S", Type: HashNet, SkbInfo: true}},
		{name: "bitmap:port", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{8192, 16383}}, ok: true},
		{name: "bitmap:port one port", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{80, 80}}, ok: true},
		{name: "bitmap:port every port", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{0, 65535}}, ok: true},
		{name: "bitmap:port without a range", set: Set{Name: "S", Type: BitmapPort}},
		{name: "bitmap:port reversed", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{16383, 8192}}},
		{name: "bitmap:port IPv6", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{1, 2}, IPv6: true}},
		{name: "bitmap:port skbinfo", set: Set{Name: "S", Type: BitmapPort, Ports: [2]uint16{1, 2}, SkbInfo: true}},
		{name: "range on a hash type", set: Set{Name: "S", Type: HashIP, Ports: [2]uint16{1, 2}}},
		{name: "no name", set: Set{Type: HashIP}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateSet(tt.set); (err == nil) != tt.ok {
				t.Errorf("validateSet(%+v) = %v, want ok %v", tt.set, err, tt.ok)
			}
		})
	}
}

func TestFakeSetsCalls(t *testing.T) {
	s := NewFakeSets()
	var seen []string
	s.Hook = func(method string, args ...string) error {
		seen = append(seen, method+" "+strings.Join(args, " "))
		return nil
	}
	e := Entry{Addr: addr("10.96.0.1"), Proto: "tcp", Port: 80}
	_ = s.CreateSet(Set{Name: "A", Type: HashIPPort})
	_ = s.AddEntry("A", e)
	_, _ = s.ListEntries("A")
	_, _ = s.ListSets()
	_ = s.DelEntry("A", e)
	_ = s.DelEntry("A", e) // failed calls count too
	_ = s.DestroySet("A")
	_ = s.Dump() // not a call

	wantCalls := map[string]int{"CreateSet": 1, "AddEntry": 1, "ListEntries": 1, "ListSets": 1, "DelEntry": 2, "DestroySet": 1}
	if got := s.Calls(); !reflect.DeepEqual(got, wantCalls) {
		t.Errorf("Calls = %v, want %v", got, wantCalls)
	}
	if s.Reads() != 2 || s.Writes() != 5 {
		t.Errorf("Reads, Writes = %d, %d, want 2, 5", s.Reads(), s.Writes())
	}
	wantSeen := []string{
		"CreateSet A hash:ip,port inet",
		"AddEntry A 10.96.0.1,tcp:80",
		"ListEntries A",
		"ListSets ",
		"DelEntry A 10.96.0.1,tcp:80",
		"DelEntry A 10.96.0.1,tcp:80",
		"DestroySet A",
	}
	if !reflect.DeepEqual(seen, wantSeen) {
		t.Errorf("Hook saw %q, want %q", seen, wantSeen)
	}
	s.ResetCalls()
	if got := s.Calls(); len(got) != 0 || s.Reads() != 0 || s.Writes() != 0 {
		t.Errorf("after ResetCalls: %v", got)
	}
}

func TestFakeSetsListEntriesSorted(t *testing.T) {
	s := NewFakeSets()
	if err := s.CreateSet(Set{Name: "A", Type: HashIP}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.10", "10.0.0.9", "10.0.0.100"} {
		if err := s.AddEntry("A", Entry{Addr: addr(a)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListEntries("A")
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{Addr: addr("10.0.0.9")}, {Addr: addr("10.0.0.10")}, {Addr: addr("10.0.0.100")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListEntries = %v, want %v", got, want)
	}
}
