package iptablestest

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/internal/contract"
	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// RunSets runs the contract of iptables.Sets against the kernels newKernel
// returns, a fresh one for each case. The sets of both families are used
// whatever the kernel's IPv6; rules are written for its family.
func RunSets(t *testing.T, newKernel func(t *testing.T) Kernel) {
	cases := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"ListSets is sorted and lists every set", testListSets},
		{"CreateSet of a taken name is ErrExists, whatever the type", testCreateExists},
		{"a missing set is ErrNotFound", testSetNotFound},
		{"members of every type and family read back sorted", testEntriesRoundTrip},
		{"AddEntry twice is ErrExists, DelEntry of an absent member ErrNotFound", testEntryErrors},
		{"members that do not fit the set are refused", testEntriesRefused},
		{"a set a rule matches on cannot be destroyed", testSetInUse},
		{"DestroySet removes the members", testDestroyRemovesEntries},
		{"a foreign set is listed and destroyed, its members unsupported", testForeignSet},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newEnv(t, newKernel(t))) })
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// addEntries adds members, failing the case on error.
func (e *env) addEntries(set string, entries ...iptables.Entry) {
	e.t.Helper()
	for _, m := range entries {
		if err := e.k.Sets.AddEntry(set, m); err != nil {
			e.t.Fatalf("AddEntry(%s, %s): %v", set, m, err)
		}
	}
}

// entries lists a set, failing the case on error.
func (e *env) entries(set string) []iptables.Entry {
	e.t.Helper()
	got, err := e.k.Sets.ListEntries(set)
	if err != nil {
		e.t.Fatalf("ListEntries(%s): %v", set, err)
	}
	return got
}

func testListSets(t *testing.T, e *env) {
	for _, n := range []string{"C", "A", "B-6"} {
		e.createSetFamily(Prefix+n, iptables.HashIP, strings.HasSuffix(n, "-6"))
	}
	names, err := e.k.Sets.ListSets()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(names) {
		t.Errorf("ListSets = %q, not sorted", names)
	}
	var ours []string
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			ours = append(ours, n)
		}
	}
	contract.WantEqual(t, "the suite's sets", ours, []string{Prefix + "A", Prefix + "B-6", Prefix + "C"})
}

func testCreateExists(t *testing.T, e *env) {
	e.createSet(setPort, iptables.HashIPPort)
	e.addEntries(setPort, iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80})
	for _, s := range []iptables.Set{
		{Name: setPort, Type: iptables.HashIPPort},
		{Name: setPort, Type: iptables.HashIP},
		{Name: setPort, Type: iptables.HashNet, IPv6: true},
	} {
		contract.WantErr(t, "CreateSet("+string(s.Type)+")", e.k.Sets.CreateSet(s), iptables.ErrExists)
	}
	contract.WantEqual(t, "members after", e.entries(setPort), []iptables.Entry{{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80}})
}

func testSetNotFound(t *testing.T, e *env) {
	name := Prefix + "NOPE"
	m := iptables.Entry{Addr: addr("10.96.240.1")}
	contract.WantErr(t, "DestroySet", e.k.Sets.DestroySet(name), iptables.ErrNotFound)
	_, err := e.k.Sets.ListEntries(name)
	contract.WantErr(t, "ListEntries", err, iptables.ErrNotFound)
	contract.WantErr(t, "AddEntry", e.k.Sets.AddEntry(name, m), iptables.ErrNotFound)
	contract.WantErr(t, "DelEntry", e.k.Sets.DelEntry(name, m), iptables.ErrNotFound)
}

// roundTrips are members of every set type and family kube-ipvs uses, each
// list sorted as ListEntries returns it.
var roundTrips = []struct {
	typ     iptables.SetType
	ipv6    bool
	entries []iptables.Entry
}{
	{iptables.HashIP, false, []iptables.Entry{{Addr: addr("10.96.240.9")}, {Addr: addr("10.96.240.10")}, {Addr: addr("10.96.240.100")}}},
	{iptables.HashIP, true, []iptables.Entry{{Addr: addr("fd00:96:240::9")}, {Addr: addr("fd00:96:240::a")}}},
	{iptables.HashIPPort, false, []iptables.Entry{
		{Addr: addr("10.96.240.9"), Proto: "tcp", Port: 443},
		{Addr: addr("10.96.240.10"), Proto: "sctp", Port: 9999},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 53},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80},
		{Addr: addr("10.96.240.10"), Proto: "udp", Port: 53},
	}},
	{iptables.HashIPPort, true, []iptables.Entry{
		{Addr: addr("fd00:96:240::a"), Proto: "sctp", Port: 9999},
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80},
		{Addr: addr("fd00:96:240::a"), Proto: "udp", Port: 53},
	}},
	{iptables.HashIPPortIP, false, []iptables.Entry{
		{Addr: addr("10.244.240.2"), Proto: "tcp", Port: 8080, Addr2: addr("10.244.240.2")},
		{Addr: addr("10.244.240.2"), Proto: "udp", Port: 53, Addr2: addr("10.244.240.2")},
		{Addr: addr("10.244.240.3"), Proto: "sctp", Port: 8080, Addr2: addr("10.244.240.3")},
	}},
	{iptables.HashIPPortIP, true, []iptables.Entry{
		{Addr: addr("fd00:244:240::2"), Proto: "tcp", Port: 8080, Addr2: addr("fd00:244:240::2")},
	}},
	{iptables.HashIPPortNet, false, []iptables.Entry{
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("10.0.0.0/8")},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("192.168.7.0/24")},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("192.168.7.9/32")},
		{Addr: addr("10.96.240.10"), Proto: "udp", Port: 53, Net: prefix("172.16.0.0/12")},
	}},
	{iptables.HashIPPortNet, true, []iptables.Entry{
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80, Net: prefix("2001:db8::/32")},
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80, Net: prefix("2001:db8::7/128")},
	}},
	{iptables.HashNet, false, []iptables.Entry{
		{Net: prefix("10.0.0.0/8")}, {Net: prefix("10.244.0.0/16")}, {Net: prefix("10.244.240.7/32")}, {Net: prefix("192.168.0.0/24")},
	}},
	{iptables.HashNet, true, []iptables.Entry{{Net: prefix("fd00:10:244::/48")}, {Net: prefix("fd00:10:244::7/128")}}},
}

func testEntriesRoundTrip(t *testing.T, e *env) {
	for i, rt := range roundTrips {
		name := Prefix + strings.ReplaceAll(string(rt.typ), ":", "-")
		if rt.ipv6 {
			name += "-6"
		}
		e.createSetFamily(name, rt.typ, rt.ipv6)
		reversed := slices.Clone(rt.entries)
		slices.Reverse(reversed)
		e.addEntries(name, reversed...)
		contract.WantEqual(t, "ListEntries("+name+")", e.entries(name), rt.entries)
		for _, m := range rt.entries[:len(rt.entries)/2+1] {
			if err := e.k.Sets.DelEntry(name, m); err != nil {
				t.Errorf("case %d: DelEntry(%s, %s): %v", i, name, m, err)
			}
		}
		rest := rt.entries[len(rt.entries)/2+1:]
		if len(rest) == 0 {
			rest = nil
		}
		contract.WantEqual(t, "ListEntries("+name+") after DelEntry", e.entries(name), rest)
	}
}

func testEntryErrors(t *testing.T, e *env) {
	e.createSet(setPort, iptables.HashIPPort)
	m := iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80}
	if e.k.IPv6 {
		m.Addr = addr("fd00:96:240::1")
	}
	e.addEntries(setPort, m)
	contract.WantErr(t, "AddEntry twice", e.k.Sets.AddEntry(setPort, m), iptables.ErrExists)
	other := m
	other.Proto = "udp"
	contract.WantErr(t, "DelEntry of an absent member", e.k.Sets.DelEntry(setPort, other), iptables.ErrNotFound)
	contract.WantEqual(t, "members after", e.entries(setPort), []iptables.Entry{m})
}

func testEntriesRefused(t *testing.T, e *env) {
	e.createSetFamily(setPort, iptables.HashIPPort, false)
	e.createSetFamily(setIP, iptables.HashIP, false)
	bad := []struct {
		what, set string
		m         iptables.Entry
	}{
		{"IPv6 member in an inet set", setIP, iptables.Entry{Addr: addr("fd00:96:240::1")}},
		{"IPv6 member in an inet hash:ip,port", setPort, iptables.Entry{Addr: addr("fd00:96:240::1"), Proto: "tcp", Port: 80}},
		{"hash:ip,port member without protocol and port", setPort, iptables.Entry{Addr: addr("10.96.240.1")}},
	}
	for _, b := range bad {
		err := e.k.Sets.AddEntry(b.set, b.m)
		if err == nil {
			t.Errorf("%s: accepted", b.what)
		}
		contract.WantPlainMessage(t, b.what, err)
	}
	contract.WantEqual(t, "members of "+setIP, len(e.entries(setIP)), 0)
	contract.WantEqual(t, "members of "+setPort, len(e.entries(setPort)), 0)
}

func testSetInUse(t *testing.T, e *env) {
	e.createSet(setPort, iptables.HashIPPort)
	m := iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80}
	if e.k.IPv6 {
		m.Addr = addr("fd00:96:240::1")
	}
	e.addEntries(setPort, m)
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA, Rules: rules("-m set --match-set " + setPort + " dst,dst -j RETURN")})
	contract.WantErr(t, "DestroySet of a matched set", e.k.Sets.DestroySet(setPort), iptables.ErrInUse)
	contract.WantEqual(t, "members after", e.entries(setPort), []iptables.Entry{m})
	if err := e.k.IPTables.DeleteChain(iptables.TableFilter, chainA); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Sets.DestroySet(setPort); err != nil {
		t.Fatalf("DestroySet once no rule matches: %v", err)
	}
	_, err := e.k.Sets.ListEntries(setPort)
	contract.WantErr(t, "ListEntries after DestroySet", err, iptables.ErrNotFound)
}

func testDestroyRemovesEntries(t *testing.T, e *env) {
	e.createSetFamily(setIP, iptables.HashIP, false)
	e.addEntries(setIP, iptables.Entry{Addr: addr("10.96.240.1")})
	if err := e.k.Sets.DestroySet(setIP); err != nil {
		t.Fatal(err)
	}
	e.createSetFamily(setIP, iptables.HashIP, false)
	contract.WantEqual(t, "members of the new set", len(e.entries(setIP)), 0)
}

func testForeignSet(t *testing.T, e *env) {
	name := Prefix + "PORTS"
	e.sets = append(e.sets, name)
	e.k.Restore(t, "create "+name+" bitmap:port range 0-65535\nadd "+name+" 30080\n")
	names, err := e.k.Sets.ListSets()
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("ListSets = %q, %v; want %s in it", names, err, name)
	}
	_, err = e.k.Sets.ListEntries(name)
	contract.WantErr(t, "ListEntries of a bitmap:port set", err, errors.ErrUnsupported)
	contract.WantErr(t, "CreateSet of its name", e.k.Sets.CreateSet(iptables.Set{Name: name, Type: iptables.HashIP}), iptables.ErrExists)
	if err := e.k.Sets.AddEntry(name, iptables.Entry{Addr: addr("10.96.240.1")}); err == nil {
		t.Error("AddEntry of an IP to a bitmap:port set accepted")
	}
	if err := e.k.Sets.DestroySet(name); err != nil {
		t.Errorf("DestroySet: %v", err)
	}
}
