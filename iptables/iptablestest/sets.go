package iptablestest

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
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
		{"a skbinfo set's AddEntry sets or replaces the mark, DelEntry ignores it", testSkbInfo},
		{"members of a skbinfo set need a mark, of other sets none", testSkbInfoRefused},
		{"a bitmap:port set holds ports of its range only", testBitmapPort},
		{"sets whose options do not fit their type are refused", testSetsRefused},
		{"AddEntries adds many in one request, present members and new marks included", testAddEntries},
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
	skbInfo bool
	ports   [2]uint16
}{
	{typ: iptables.HashIP, ipv6: false, entries: []iptables.Entry{{Addr: addr("10.96.240.9")}, {Addr: addr("10.96.240.10")}, {Addr: addr("10.96.240.100")}}},
	{typ: iptables.HashIP, ipv6: true, entries: []iptables.Entry{{Addr: addr("fd00:96:240::9")}, {Addr: addr("fd00:96:240::a")}}},
	{typ: iptables.HashIPPort, ipv6: false, entries: []iptables.Entry{
		{Addr: addr("10.96.240.9"), Proto: "tcp", Port: 443},
		{Addr: addr("10.96.240.10"), Proto: "sctp", Port: 9999},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 53},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80},
		{Addr: addr("10.96.240.10"), Proto: "udp", Port: 53},
	}},
	{typ: iptables.HashIPPort, ipv6: true, entries: []iptables.Entry{
		{Addr: addr("fd00:96:240::a"), Proto: "sctp", Port: 9999},
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80},
		{Addr: addr("fd00:96:240::a"), Proto: "udp", Port: 53},
	}},
	{typ: iptables.HashIPPortIP, ipv6: false, entries: []iptables.Entry{
		{Addr: addr("10.244.240.2"), Proto: "tcp", Port: 8080, Addr2: addr("10.244.240.2")},
		{Addr: addr("10.244.240.2"), Proto: "udp", Port: 53, Addr2: addr("10.244.240.2")},
		{Addr: addr("10.244.240.3"), Proto: "sctp", Port: 8080, Addr2: addr("10.244.240.3")},
	}},
	{typ: iptables.HashIPPortIP, ipv6: true, entries: []iptables.Entry{
		{Addr: addr("fd00:244:240::2"), Proto: "tcp", Port: 8080, Addr2: addr("fd00:244:240::2")},
	}},
	{typ: iptables.HashIPPortNet, ipv6: false, entries: []iptables.Entry{
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("10.0.0.0/8")},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("192.168.7.0/24")},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("192.168.7.9/32")},
		{Addr: addr("10.96.240.10"), Proto: "udp", Port: 53, Net: prefix("172.16.0.0/12")},
	}},
	{typ: iptables.HashIPPortNet, ipv6: true, entries: []iptables.Entry{
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80, Net: prefix("2001:db8::/32")},
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80, Net: prefix("2001:db8::7/128")},
	}},
	{typ: iptables.HashNet, ipv6: false, entries: []iptables.Entry{
		{Net: prefix("10.0.0.0/8")}, {Net: prefix("10.244.0.0/16")}, {Net: prefix("10.244.240.7/32")}, {Net: prefix("192.168.0.0/24")},
	}},
	{typ: iptables.HashNet, ipv6: true, entries: []iptables.Entry{{Net: prefix("fd00:10:244::/48")}, {Net: prefix("fd00:10:244::7/128")}}},
	{typ: iptables.HashIPPort, ipv6: false, entries: []iptables.Entry{
		{Addr: addr("10.96.240.9"), Proto: "tcp", Port: 443, Mark: 0x3fff},
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Mark: 0x2000},
		{Addr: addr("10.96.240.10"), Proto: "udp", Port: 53, Mark: 0xffffffff},
	}, skbInfo: true},
	{typ: iptables.HashIPPort, ipv6: true, entries: []iptables.Entry{
		{Addr: addr("fd00:96:240::a"), Proto: "sctp", Port: 9999, Mark: 0x2001},
		{Addr: addr("fd00:96:240::a"), Proto: "tcp", Port: 80, Mark: 0x2001},
	}, skbInfo: true},
	{typ: iptables.HashIP, ipv6: false, entries: []iptables.Entry{{Addr: addr("10.96.240.9"), Mark: 1}, {Addr: addr("10.96.240.10"), Mark: 2}}, skbInfo: true},
	{typ: iptables.HashIPPortNet, ipv6: false, entries: []iptables.Entry{
		{Addr: addr("10.96.240.10"), Proto: "tcp", Port: 80, Net: prefix("10.0.0.0/8"), Mark: 0x2002},
	}, skbInfo: true},
	{typ: iptables.BitmapPort, ipv6: false, entries: []iptables.Entry{{Port: 8192}, {Port: 8193}, {Port: 9000}, {Port: 16383}}, ports: [2]uint16{8192, 16383}},
	{typ: iptables.BitmapPort, ipv6: false, entries: []iptables.Entry{{Port: 0}, {Port: 30080}, {Port: 65535}}, ports: [2]uint16{0, 65535}},
}

func testEntriesRoundTrip(t *testing.T, e *env) {
	for i, rt := range roundTrips {
		name := Prefix + strings.ReplaceAll(string(rt.typ), ":", "-")
		if rt.ipv6 {
			name += "-6"
		}
		if rt.skbInfo {
			name += "-skb"
		}
		if rt.ports[0] != 0 {
			name += "-" + strconv.Itoa(int(rt.ports[0]))
		}
		e.createSetSpec(iptables.Set{Name: name, Type: rt.typ, IPv6: rt.ipv6, SkbInfo: rt.skbInfo, Ports: rt.ports})
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

// testForeignSet uses a hash:net,port set: a type kube-ipvs does not use
// (the VM loads ip_set_hash_netport for it).
func testForeignSet(t *testing.T, e *env) {
	name := Prefix + "NETPORT"
	e.sets = append(e.sets, name)
	e.k.Restore(t, "create "+name+" hash:net,port family inet hashsize 1024 maxelem 65536\nadd "+name+" 10.0.0.0/8,tcp:80\n")
	names, err := e.k.Sets.ListSets()
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("ListSets = %q, %v; want %s in it", names, err, name)
	}
	_, err = e.k.Sets.ListEntries(name)
	contract.WantErr(t, "ListEntries of a hash:net,port set", err, errors.ErrUnsupported)
	contract.WantErr(t, "CreateSet of its name", e.k.Sets.CreateSet(iptables.Set{Name: name, Type: iptables.HashIP}), iptables.ErrExists)
	if err := e.k.Sets.AddEntry(name, iptables.Entry{Addr: addr("10.96.240.1")}); err == nil {
		t.Error("AddEntry of an IP to a hash:net,port set accepted")
	}
	if err := e.k.Sets.DestroySet(name); err != nil {
		t.Errorf("DestroySet: %v", err)
	}
}

func testSkbInfo(t *testing.T, e *env) {
	name := Prefix + "SKB"
	e.createSetSpec(iptables.Set{Name: name, Type: iptables.HashIPPort, SkbInfo: true})
	a := iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80, Mark: 0x2001}
	b := iptables.Entry{Addr: addr("10.96.240.2"), Proto: "udp", Port: 53, Mark: 0x2002}
	e.addEntries(name, a, b)
	contract.WantEqual(t, "members with their marks", e.entries(name), []iptables.Entry{a, b})

	moved := a
	moved.Mark = 0x3fff
	e.addEntries(name, moved) // no ErrExists: the mark is replaced
	contract.WantEqual(t, "after a new mark for a", e.entries(name), []iptables.Entry{moved, b})
	e.addEntries(name, moved) // the same mark again
	contract.WantEqual(t, "after the same mark again", e.entries(name), []iptables.Entry{moved, b})

	if err := e.k.Sets.DelEntry(name, a); err != nil { // a's old mark
		t.Errorf("DelEntry by key with another mark: %v", err)
	}
	contract.WantErr(t, "DelEntry of the deleted key", e.k.Sets.DelEntry(name, moved), iptables.ErrNotFound)
	if err := e.k.Sets.DelEntry(name, b.Key()); err != nil {
		t.Errorf("DelEntry by key without a mark: %v", err)
	}
	contract.WantEqual(t, "members after DelEntry", len(e.entries(name)), 0)
}

func testSkbInfoRefused(t *testing.T, e *env) {
	skb := Prefix + "SKB"
	e.createSetSpec(iptables.Set{Name: skb, Type: iptables.HashIPPort, SkbInfo: true})
	e.createSetFamily(setPort, iptables.HashIPPort, false)
	m := iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80}
	err := e.k.Sets.AddEntry(skb, m)
	if err == nil || errors.Is(err, iptables.ErrExists) || errors.Is(err, iptables.ErrNotFound) {
		t.Errorf("AddEntry without a mark to a skbinfo set: %v, want a plain error", err)
	}
	contract.WantPlainMessage(t, "AddEntry without a mark", err)
	marked := m
	marked.Mark = 0x2001
	err = e.k.Sets.AddEntry(setPort, marked)
	if err == nil || errors.Is(err, iptables.ErrExists) || errors.Is(err, iptables.ErrNotFound) {
		t.Errorf("AddEntry with a mark to a set without skbinfo: %v, want a plain error", err)
	}
	contract.WantPlainMessage(t, "AddEntry with a mark", err)
	contract.WantEqual(t, "members of "+skb, len(e.entries(skb)), 0)
	contract.WantEqual(t, "members of "+setPort, len(e.entries(setPort)), 0)
	contract.WantErr(t, "AddEntry with a mark to a missing set", e.k.Sets.AddEntry(Prefix+"NOPE", marked), iptables.ErrNotFound)
}

func testBitmapPort(t *testing.T, e *env) {
	name := Prefix + "OWNED-MARK"
	e.createSetSpec(iptables.Set{Name: name, Type: iptables.BitmapPort, Ports: [2]uint16{8192, 16383}})
	e.addEntries(name, iptables.Entry{Port: 16383}, iptables.Entry{Port: 8193}, iptables.Entry{Port: 8192})
	want := []iptables.Entry{{Port: 8192}, {Port: 8193}, {Port: 16383}}
	contract.WantEqual(t, "members", e.entries(name), want)
	contract.WantErr(t, "AddEntry twice", e.k.Sets.AddEntry(name, iptables.Entry{Port: 8193}), iptables.ErrExists)
	for _, bad := range []iptables.Entry{
		{Port: 100}, {Port: 8191}, {Port: 16384},
		{Proto: "tcp", Port: 8200},
		{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 8200},
		{Port: 8200, Mark: 0x2001},
	} {
		err := e.k.Sets.AddEntry(name, bad)
		if err == nil || errors.Is(err, iptables.ErrExists) || errors.Is(err, iptables.ErrNotFound) {
			t.Errorf("AddEntry(%s): %v, want a plain error", bad, err)
		}
		contract.WantPlainMessage(t, "AddEntry("+bad.String()+")", err)
	}
	if err := e.k.Sets.DelEntry(name, iptables.Entry{Port: 8193}); err != nil {
		t.Errorf("DelEntry: %v", err)
	}
	contract.WantErr(t, "DelEntry of an absent port", e.k.Sets.DelEntry(name, iptables.Entry{Port: 8193}), iptables.ErrNotFound)
	contract.WantEqual(t, "members after", e.entries(name), []iptables.Entry{{Port: 8192}, {Port: 16383}})
}

func testSetsRefused(t *testing.T, e *env) {
	for _, s := range []iptables.Set{
		{Name: Prefix + "R1", Type: iptables.BitmapPort},
		{Name: Prefix + "R2", Type: iptables.BitmapPort, Ports: [2]uint16{8192, 16383}, IPv6: true},
		{Name: Prefix + "R3", Type: iptables.BitmapPort, Ports: [2]uint16{16383, 8192}},
		{Name: Prefix + "R4", Type: iptables.BitmapPort, Ports: [2]uint16{8192, 16383}, SkbInfo: true},
		{Name: Prefix + "R5", Type: iptables.HashIPPort, Ports: [2]uint16{8192, 16383}},
		{Name: Prefix + "R6", Type: iptables.HashNet, SkbInfo: true},
	} {
		e.sets = append(e.sets, s.Name)
		err := e.k.Sets.CreateSet(s)
		if err == nil || errors.Is(err, iptables.ErrExists) {
			t.Errorf("CreateSet(%+v): %v, want a plain error", s, err)
		}
		contract.WantPlainMessage(t, "CreateSet("+s.Name+")", err)
	}
}

// testAddEntries: the batch of an iptables.EntryAdder, which every Sets
// kube-ipvs runs on is.
func testAddEntries(t *testing.T, e *env) {
	adder, ok := e.k.Sets.(iptables.EntryAdder)
	if !ok {
		t.Fatalf("%T is not an iptables.EntryAdder", e.k.Sets)
	}
	e.createSetFamily(setPort, iptables.HashIPPort, false)
	var many []iptables.Entry
	for i := range 300 {
		many = append(many, iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: uint16(1000 + i)})
	}
	e.addEntries(setPort, many[7])
	if err := adder.AddEntries(setPort, many); err != nil {
		t.Fatalf("AddEntries of 300, one of them present: %v", err)
	}
	contract.WantEqual(t, "members", e.entries(setPort), many)

	skb := Prefix + "SKB"
	e.createSetSpec(iptables.Set{Name: skb, Type: iptables.HashIPPort, SkbInfo: true})
	a := iptables.Entry{Addr: addr("10.96.240.1"), Proto: "tcp", Port: 80, Mark: 0x2001}
	b := iptables.Entry{Addr: addr("10.96.240.2"), Proto: "udp", Port: 53, Mark: 0x2002}
	e.addEntries(skb, a)
	moved := a
	moved.Mark = 0x3fff
	if err := adder.AddEntries(skb, []iptables.Entry{moved, b}); err != nil {
		t.Fatalf("AddEntries to a skbinfo set: %v", err)
	}
	contract.WantEqual(t, "marks set and replaced", e.entries(skb), []iptables.Entry{moved, b})

	contract.WantErr(t, "AddEntries to a missing set", adder.AddEntries(Prefix+"MISSING", many[:2]), iptables.ErrNotFound)
	unmarked := []iptables.Entry{{Addr: addr("10.96.240.3"), Proto: "tcp", Port: 80}}
	if err := adder.AddEntries(skb, unmarked); err == nil || errors.Is(err, iptables.ErrNotFound) {
		t.Errorf("AddEntries without a mark to a skbinfo set: %v, want a plain error", err)
	}
	contract.WantEqual(t, "the refused batch added nothing", e.entries(skb), []iptables.Entry{moved, b})
}
