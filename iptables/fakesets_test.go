package iptables

import (
	"errors"
	"net/netip"
	"reflect"
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
			op:      func(s *FakeSets) error { return s.CreateSet(Set{Name: "X", Type: "bitmap:port"}) },
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
	want := `create KUBE-IPVS-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
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
	wantNames := []string{"KUBE-IPVS-CLUSTER-IP", "KUBE-IPVS-EMPTY", "KUBE-IPVS-HAIRPIN", "KUBE-IPVS-LB-SRC", "KUBE-IPVS-NETS", "KUBE-IPVS-NODE-PORT-V6"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("ListSets = %q, want %q", names, wantNames)
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
