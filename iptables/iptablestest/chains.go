package iptablestest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/internal/contract"
	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// RunChains runs the contract of iptables.Interface against the kernels
// newKernel returns, a fresh one for each case.
func RunChains(t *testing.T, newKernel func(t *testing.T) Kernel) {
	cases := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"built-in chains exist", testBuiltinsExist},
		{"ListRules of a missing chain is ErrNotFound", testListMissing},
		{"rules read back as written in iptables -S form", testCanonical},
		{"RestoreChains replaces only the named chains", testRestoreOnlyNamed},
		{"RestoreChains refuses a built-in chain and changes nothing", testRestoreBuiltin},
		{"RestoreChains is all or nothing", testRestoreAtomic},
		{"EnsureRule inserts at the head and does not duplicate", testEnsureRule},
		{"RestoreTables of one table writes chains and inserts jumps, built-in chains too, all or nothing", testRestoreInserting},
		{"EnsureRule errors are typed", testEnsureRuleErrors},
		{"DeleteRule removes the first equal rule", testDeleteRule},
		{"DeleteChain is ErrInUse while jumped to and keeps the chain", testDeleteChainInUse},
		{"DeleteChain errors", testDeleteChainErrors},
		{"SET --map-set is refused outside mangle and holds its set", testMapSetOnlyInMangle},
		{"SaveTable holds every chain in iptables-save's order, each as ListRules lists it", testSaveTable},
		{"SaveTable of mangle holds its built-in chains; of an unknown table ErrNotFound", testSaveTableBuiltins},
		{"SaveTables reads in one call what SaveTable reads of each table", testSaveTables},
		{"RestoreTables writes table after table; a refused one keeps those before and stops", testRestoreTables},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newEnv(t, newKernel(t))) })
	}
}

// Chain and set names of the chain cases.
const (
	chainA   = Prefix + "A"
	chainB   = Prefix + "B"
	chainNat = Prefix + "NAT"
	setIP    = Prefix + "IP"
	setPort  = Prefix + "IPPORT"
	setLoop  = Prefix + "LOOP"
	setSkb   = Prefix + "SKB"
)

// family holds what differs between the IPv4 and the IPv6 rules.
type family struct{ icmp, reject, cidr string }

func (e *env) family() family {
	if e.k.IPv6 {
		return family{icmp: "ipv6-icmp", reject: "icmp6-port-unreachable", cidr: "fd00:10:244::/64"}
	}
	return family{icmp: "icmp", reject: "icmp-port-unreachable", cidr: "10.244.0.0/16"}
}

func testBuiltinsExist(t *testing.T, e *env) {
	for table, names := range builtins {
		for _, c := range names {
			if _, err := e.k.IPTables.ListRules(table, c); err != nil {
				t.Errorf("ListRules(%s, %s): %v", table, c, err)
			}
		}
	}
}

func testListMissing(t *testing.T, e *env) {
	for _, table := range []string{iptables.TableFilter, iptables.TableNAT} {
		_, err := e.k.IPTables.ListRules(table, Prefix+"NOPE")
		contract.WantErr(t, "ListRules in "+table, err, iptables.ErrNotFound)
	}
}

// testCanonical writes the rule shapes kube-ipvs writes (proxier/rules.go)
// and wants them back exactly: they are written the way iptables -S prints
// them, so comparing with the kernel finds no difference when there is none.
func testCanonical(t *testing.T, e *env) {
	e.createSet(setIP, iptables.HashIP)
	e.createSet(setPort, iptables.HashIPPort)
	e.createSet(setLoop, iptables.HashIPPortIP)
	e.createSetSpec(iptables.Set{Name: setSkb, Type: iptables.HashIPPort, IPv6: e.k.IPv6, SkbInfo: true})
	f := e.family()
	filter := []iptables.Chain{
		{Name: chainA, Rules: rules(
			"-m set --match-set "+setPort+" dst,dst -j RETURN",
			"-p "+f.icmp+" -j RETURN",
			"-m set --match-set "+setIP+" dst -m conntrack --ctstate NEW -j REJECT --reject-with "+f.reject,
		)},
		{Name: chainB, Rules: rules(
			`-m comment --comment "kube-ipvs masqueraded traffic" -m mark --mark 0x4000/0x4000 -j ACCEPT`,
			`-m comment --comment "kube-ipvs replies and related traffic" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
			"-j "+chainA,
		)},
	}
	nat := []iptables.Chain{
		{Name: chainA, Rules: rules(
			"-m set ! --match-set "+setPort+" dst,dst -j RETURN",
			"-s "+f.cidr+" -j ACCEPT",
			"-m set --match-set "+setIP+" src -j "+chainNat,
			"-j "+chainNat,
			"-j ACCEPT",
		)},
		{Name: chainNat, Rules: rules("-j MARK --set-xmark 0x4000/0x4000")},
		{Name: chainB, Rules: rules(
			"-m set --match-set "+setLoop+" dst,dst,src -j MASQUERADE",
			"-m addrtype --src-type LOCAL -m mark --mark 0x2000/0xffffe000 -j MASQUERADE --random-fully",
			"-m mark ! --mark 0x4000/0x4000 -j RETURN",
			"-j MARK --set-xmark 0x4000/0x0",
			"-j MASQUERADE --random-fully",
		)},
	}
	mangle := []iptables.Chain{
		{Name: chainA, Rules: rules("-m set --match-set " + setSkb + " dst,dst -j SET --map-set " + setSkb + " dst,dst --map-mark")},
	}
	for table, chains := range map[string][]iptables.Chain{iptables.TableFilter: filter, iptables.TableNAT: nat, iptables.TableMangle: mangle} {
		e.restore(table, chains...)
		for _, c := range chains {
			contract.WantEqual(t, "ListRules("+table+", "+c.Name+")", e.rules(table, c.Name), c.Rules)
		}
	}
	jump := args(`-m comment --comment "kube-ipvs service portals" -j ` + chainA)
	e.ensure(iptables.TableNAT, "PREROUTING", jump)
	if got := e.rules(iptables.TableNAT, "PREROUTING"); len(got) == 0 || !slices.Equal(got[0], jump) {
		t.Errorf("PREROUTING = %q, want %q first", got, jump)
	}
}

func testRestoreOnlyNamed(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j RETURN")}
	b := iptables.Chain{Name: chainB, Rules: rules("-j ACCEPT", "-j RETURN")}
	e.restore(iptables.TableFilter, a, b)
	jump := args("-j " + chainA)
	e.ensure(iptables.TableFilter, "FORWARD", jump)
	forward := e.rules(iptables.TableFilter, "FORWARD")

	a.Rules = rules("-j DROP", "-j RETURN")
	e.restore(iptables.TableFilter, a)
	contract.WantEqual(t, "restored chain", e.rules(iptables.TableFilter, chainA), a.Rules)
	contract.WantEqual(t, "other user chain", e.rules(iptables.TableFilter, chainB), b.Rules)
	contract.WantEqual(t, "FORWARD, which jumps to the restored chain", e.rules(iptables.TableFilter, "FORWARD"), forward)

	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA})
	contract.WantEqual(t, "chain restored empty", e.rules(iptables.TableFilter, chainA), [][]string(nil))
	contract.WantEqual(t, "other user chain", e.rules(iptables.TableFilter, chainB), b.Rules)
	contract.WantEqual(t, "FORWARD", e.rules(iptables.TableFilter, "FORWARD"), forward)
}

func testRestoreBuiltin(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j RETURN")}
	e.restore(iptables.TableFilter, a)
	e.ensure(iptables.TableFilter, "FORWARD", args("-j "+chainA))
	forward := e.rules(iptables.TableFilter, "FORWARD")
	err := e.k.IPTables.RestoreChains(iptables.TableFilter, []iptables.Chain{
		{Name: chainA, Rules: rules("-j DROP")},
		{Name: "FORWARD", Rules: rules("-j ACCEPT")},
	})
	if err == nil {
		t.Error("RestoreChains of FORWARD accepted")
	}
	contract.WantPlainMessage(t, "RestoreChains of FORWARD", err)
	contract.WantEqual(t, "FORWARD", e.rules(iptables.TableFilter, "FORWARD"), forward)
	contract.WantEqual(t, "the other chain of the call", e.rules(iptables.TableFilter, chainA), a.Rules)
}

func testRestoreAtomic(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j RETURN")}
	e.restore(iptables.TableFilter, a)
	tests := []struct {
		what string
		bad  iptables.Chain
	}{
		{"jump to a missing chain", iptables.Chain{Name: chainB, Rules: rules("-j " + Prefix + "MISSING")}},
		{"match on a missing set", iptables.Chain{Name: chainB, Rules: rules("-m set --match-set " + Prefix + "MISSING dst -j RETURN")}},
	}
	for _, tc := range tests {
		e.own(iptables.TableFilter, tc.bad)
		err := e.k.IPTables.RestoreChains(iptables.TableFilter, []iptables.Chain{{Name: chainA, Rules: rules("-j DROP")}, tc.bad})
		contract.WantErr(t, tc.what, err, iptables.ErrNotFound)
		contract.WantEqual(t, tc.what+": the other chain of the call", e.rules(iptables.TableFilter, chainA), a.Rules)
		_, err = e.k.IPTables.ListRules(iptables.TableFilter, chainB)
		contract.WantErr(t, tc.what+": the chain that failed", err, iptables.ErrNotFound)
	}
	// A chain of the same call may be jumped to.
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA, Rules: rules("-j " + chainB)}, iptables.Chain{Name: chainB})
	contract.WantEqual(t, "jump to a chain of the same call", e.rules(iptables.TableFilter, chainA), rules("-j "+chainB))
}

func testEnsureRule(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j DROP", "-j RETURN")}
	e.restore(iptables.TableFilter, a)
	head := args(`-m comment --comment "kube-ipvs VIP filter" -j ACCEPT`)
	if !e.ensure(iptables.TableFilter, chainA, head) {
		t.Error("EnsureRule of a new rule reported no insert")
	}
	want := append([][]string{head}, a.Rules...)
	contract.WantEqual(t, "after EnsureRule", e.rules(iptables.TableFilter, chainA), want)
	for _, spec := range [][]string{head, a.Rules[1]} {
		if e.ensure(iptables.TableFilter, chainA, spec) {
			t.Errorf("EnsureRule(%q) of a present rule reported an insert", spec)
		}
	}
	contract.WantEqual(t, "after EnsureRule of present rules", e.rules(iptables.TableFilter, chainA), want)

	jump := args(`-m comment --comment "kube-ipvs forwarding" -j ` + chainA)
	for i := range 2 {
		if added := e.ensure(iptables.TableFilter, "FORWARD", jump); added != (i == 0) {
			t.Errorf("EnsureRule in FORWARD, call %d: inserted = %v", i+1, added)
		}
	}
	forward := e.rules(iptables.TableFilter, "FORWARD")
	before := e.before[[2]string{iptables.TableFilter, "FORWARD"}]
	contract.WantEqual(t, "FORWARD", forward, append([][]string{jump}, before...))
}

func testEnsureRuleErrors(t *testing.T, e *env) {
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA})
	tests := []struct {
		what, chain string
		spec        []string
	}{
		{"missing chain", Prefix + "NOPE", args("-j RETURN")},
		{"jump to a missing chain", chainA, args("-j " + Prefix + "MISSING")},
		{"match on a missing set", chainA, args("-m set --match-set " + Prefix + "MISSING dst -j RETURN")},
	}
	for _, tc := range tests {
		_, err := e.k.IPTables.EnsureRule(iptables.TableFilter, tc.chain, tc.spec)
		contract.WantErr(t, tc.what, err, iptables.ErrNotFound)
	}
	contract.WantEqual(t, "chain after", e.rules(iptables.TableFilter, chainA), [][]string(nil))
}

func testDeleteRule(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j DROP", "-j RETURN", "-j DROP")}
	e.restore(iptables.TableFilter, a)
	if err := e.k.IPTables.DeleteRule(iptables.TableFilter, chainA, args("-j DROP")); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "after DeleteRule", e.rules(iptables.TableFilter, chainA), rules("-j RETURN", "-j DROP"))
	err := e.k.IPTables.DeleteRule(iptables.TableFilter, chainA, args("-j ACCEPT"))
	contract.WantErr(t, "DeleteRule of an absent rule", err, iptables.ErrNotFound)
	err = e.k.IPTables.DeleteRule(iptables.TableFilter, Prefix+"NOPE", args("-j DROP"))
	contract.WantErr(t, "DeleteRule in a missing chain", err, iptables.ErrNotFound)
	contract.WantEqual(t, "after failed DeleteRules", e.rules(iptables.TableFilter, chainA), rules("-j RETURN", "-j DROP"))
}

func testDeleteChainInUse(t *testing.T, e *env) {
	a := iptables.Chain{Name: chainA, Rules: rules("-j DROP", "-j RETURN")}
	b := iptables.Chain{Name: chainB, Rules: rules("-j " + chainA)}
	e.restore(iptables.TableFilter, a, b)
	contract.WantErr(t, "DeleteChain jumped to from a user chain", e.k.IPTables.DeleteChain(iptables.TableFilter, chainA), iptables.ErrInUse)
	contract.WantEqual(t, "the chain after", e.rules(iptables.TableFilter, chainA), a.Rules)

	e.restore(iptables.TableFilter, iptables.Chain{Name: chainB})
	jump := args("-j " + chainA)
	e.ensure(iptables.TableFilter, "FORWARD", jump)
	contract.WantErr(t, "DeleteChain jumped to from FORWARD", e.k.IPTables.DeleteChain(iptables.TableFilter, chainA), iptables.ErrInUse)
	contract.WantEqual(t, "the chain after", e.rules(iptables.TableFilter, chainA), a.Rules)

	if err := e.k.IPTables.DeleteRule(iptables.TableFilter, "FORWARD", jump); err != nil {
		t.Fatal(err)
	}
	if err := e.k.IPTables.DeleteChain(iptables.TableFilter, chainA); err != nil {
		t.Fatalf("DeleteChain of a chain with rules, no longer jumped to: %v", err)
	}
	_, err := e.k.IPTables.ListRules(iptables.TableFilter, chainA)
	contract.WantErr(t, "ListRules after DeleteChain", err, iptables.ErrNotFound)
}

func testDeleteChainErrors(t *testing.T, e *env) {
	contract.WantErr(t, "DeleteChain of a missing chain", e.k.IPTables.DeleteChain(iptables.TableNAT, Prefix+"NOPE"), iptables.ErrNotFound)
	for table, names := range builtins {
		for _, c := range names {
			err := e.k.IPTables.DeleteChain(table, c)
			if err == nil {
				t.Errorf("DeleteChain(%s, %s) of a built-in chain accepted", table, c)
			}
			contract.WantPlainMessage(t, "DeleteChain of "+c, err)
		}
	}
	// A chain of the same name in the other table is another chain.
	e.restore(iptables.TableNAT, iptables.Chain{Name: chainA, Rules: rules("-j RETURN")})
	contract.WantErr(t, "DeleteChain in the other table", e.k.IPTables.DeleteChain(iptables.TableFilter, chainA), iptables.ErrNotFound)
	contract.WantEqual(t, "the nat chain", e.rules(iptables.TableNAT, chainA), rules("-j RETURN"))
}

// testMapSetOnlyInMangle: xt_SET takes --map-set in the mangle table only,
// and a rule that maps from a set holds it as a match does.
func testMapSetOnlyInMangle(t *testing.T, e *env) {
	e.createSet(setPort, iptables.HashIPPort)
	e.createSetSpec(iptables.Set{Name: setSkb, Type: iptables.HashIPPort, IPv6: e.k.IPv6, SkbInfo: true})
	mapping := iptables.Chain{Name: chainA, Rules: rules("-m set --match-set " + setPort + " dst,dst -j SET --map-set " + setSkb + " dst,dst --map-mark")}
	for _, table := range []string{iptables.TableNAT, iptables.TableFilter} {
		e.own(table, mapping)
		err := e.k.IPTables.RestoreChains(table, []iptables.Chain{mapping})
		if err == nil {
			t.Errorf("RestoreChains(%s) of a --map-set rule accepted", table)
		}
		contract.WantPlainMessage(t, "RestoreChains("+table+")", err)
		_, err = e.k.IPTables.ListRules(table, chainA)
		contract.WantErr(t, "the refused chain in "+table, err, iptables.ErrNotFound)
	}
	e.restore(iptables.TableMangle, mapping)
	contract.WantEqual(t, "ListRules(mangle, "+chainA+")", e.rules(iptables.TableMangle, chainA), mapping.Rules)
	contract.WantErr(t, "DestroySet of the set mapped from", e.k.Sets.DestroySet(setSkb), iptables.ErrInUse)
}

// testSaveTable: one SaveTable reads what ListRules reads chain by chain,
// quoting and all, with the chains in iptables-save's order (built-in
// chains in hook order, then user chains by name) and only the table's own.
func testSaveTable(t *testing.T, e *env) {
	e.createSet(setIP, iptables.HashIP)
	f := e.family()
	b := iptables.Chain{Name: chainB, Rules: [][]string{
		{"-m", "comment", "--comment", `kube-ipvs "quoted" \ it's`, "-j", "RETURN"},
		args("-m set --match-set " + setIP + " dst -j " + chainA),
	}}
	a := iptables.Chain{Name: chainA, Rules: rules("-p "+f.icmp+" -j RETURN", "-j DROP")}
	e.restore(iptables.TableFilter, b, a) // made in the reverse of the order saved
	jump := args(`-m comment --comment "kube-ipvs forwarding" -j ` + chainB)
	e.ensure(iptables.TableFilter, "FORWARD", jump)
	nat := iptables.Chain{Name: chainNat, Rules: rules("-j MASQUERADE --random-fully")}
	e.restore(iptables.TableNAT, nat)

	filter := e.saveTable(iptables.TableFilter)
	contract.WantEqual(t, "SaveTable(filter): "+chainA, filter.Rules[chainA], a.Rules)
	contract.WantEqual(t, "SaveTable(filter): "+chainB, filter.Rules[chainB], b.Rules)
	if fw := filter.Rules["FORWARD"]; len(fw) == 0 || !slices.Equal(fw[0], jump) {
		t.Errorf("SaveTable(filter): FORWARD = %q, want %q first", fw, jump)
	}
	if slices.Contains(filter.Chains, chainNat) {
		t.Errorf("SaveTable(filter) has nat's chain %s: %q", chainNat, filter.Chains)
	}
	natTable := e.saveTable(iptables.TableNAT)
	contract.WantEqual(t, "SaveTable(nat): "+chainNat, natTable.Rules[chainNat], nat.Rules)

	// Later writes show in the next read.
	if err := e.k.IPTables.DeleteRule(iptables.TableFilter, "FORWARD", jump); err != nil {
		t.Fatal(err)
	}
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA})
	filter = e.saveTable(iptables.TableFilter)
	contract.WantEqual(t, "SaveTable(filter) after DeleteRule: FORWARD", filter.Rules["FORWARD"], e.before[[2]string{iptables.TableFilter, "FORWARD"}])
	contract.WantEqual(t, "SaveTable(filter) after emptying "+chainA, filter.Rules[chainA], [][]string(nil))
	if !slices.Contains(filter.Chains, chainA) {
		t.Errorf("SaveTable(filter) lost the emptied chain %s: %q", chainA, filter.Chains)
	}
}

// testSaveTableBuiltins: mangle, whether used yet or not, holds its five
// built-in chains (iptables-nft-save -t prints them for a table it never
// made; the legacy kernel loads the table); a table no backend knows is
// ErrNotFound.
func testSaveTableBuiltins(t *testing.T, e *env) {
	mangle := e.saveTable(iptables.TableMangle)
	want := []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
	if got := mangle.Chains[:min(len(mangle.Chains), len(want))]; !slices.Equal(got, want) {
		t.Errorf("SaveTable(mangle).Chains = %q, want %q first", mangle.Chains, want)
	}
	_, err := e.k.IPTables.SaveTable("kipvsnosuch")
	contract.WantErr(t, "SaveTable of an unknown table", err, iptables.ErrNotFound)
}

// saveTable is SaveTable, failing the case on error, checked against
// ListRules and iptables-save's order: every chain once, the built-in
// ones first in hook order, then the user chains by name, each with the
// rules ListRules gives, and no rules of an unlisted chain.
func (e *env) saveTable(table string) iptables.Table {
	e.t.Helper()
	st, err := e.k.IPTables.SaveTable(table)
	if err != nil {
		e.t.Fatalf("SaveTable(%s): %v", table, err)
	}
	if st.Rules == nil {
		e.t.Errorf("SaveTable(%s).Rules is nil", table)
	}
	var builtin, user []string
	for _, c := range st.Chains {
		if _, ok := hookOrder[c]; ok {
			if len(user) > 0 {
				e.t.Errorf("SaveTable(%s): built-in chain %s after user chains: %q", table, c, st.Chains)
			}
			builtin = append(builtin, c)
		} else {
			user = append(user, c)
		}
		contract.WantEqual(e.t, "SaveTable("+table+") against ListRules: "+c, st.Rules[c], e.rules(table, c))
	}
	for c := range st.Rules {
		if !slices.Contains(st.Chains, c) {
			e.t.Errorf("SaveTable(%s) has rules of %s, which is not among its chains %q", table, c, st.Chains)
		}
	}
	byHook := func(a, b string) int { return hookOrder[a] - hookOrder[b] }
	if !slices.IsSortedFunc(builtin, byHook) || !slices.IsSorted(user) || len(slices.Compact(slices.Clone(user))) != len(user) {
		e.t.Errorf("SaveTable(%s).Chains = %q, want the built-in chains in hook order, then the user chains by name, each once", table, st.Chains)
	}
	for _, c := range builtins[table] {
		if !slices.Contains(builtin, c) {
			e.t.Errorf("SaveTable(%s) lacks the built-in chain %s: %q", table, c, st.Chains)
		}
	}
	return st
}

// hookOrder ranks the built-in chains as iptables-save prints them.
var hookOrder = map[string]int{"PREROUTING": 0, "INPUT": 1, "FORWARD": 2, "OUTPUT": 3, "POSTROUTING": 4}

func testRestoreInserting(t *testing.T, e *env) {
	tr, ok := e.k.IPTables.(iptables.TablesRestorer)
	if !ok {
		t.Fatalf("%T is not an iptables.TablesRestorer", e.k.IPTables)
	}
	write := func(chains []iptables.Chain, inserts []iptables.Insert) error {
		return tr.RestoreTables([]iptables.TableWrite{{Table: iptables.TableFilter, Chains: chains, Inserts: inserts}})
	}
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainB, Rules: rules("-j RETURN")})
	a := iptables.Chain{Name: chainA, Rules: rules("-j DROP")}
	e.own(iptables.TableFilter, a)
	first := args(`-m comment --comment "kube-ipvs first" -j ` + chainA)
	second := args(`-m comment --comment "kube-ipvs second" -j ` + chainA)
	err := write([]iptables.Chain{a},
		[]iptables.Insert{{Chain: chainB, Spec: first}, {Chain: chainB, Spec: second}, {Chain: "OUTPUT", Spec: first}})
	if err != nil {
		t.Fatalf("RestoreTables: %v", err)
	}
	contract.WantEqual(t, "the restored chain", e.rules(iptables.TableFilter, chainA), a.Rules)
	contract.WantEqual(t, "inserted at the head, the last first", e.rules(iptables.TableFilter, chainB),
		[][]string{second, first, args("-j RETURN")})
	if got := e.rules(iptables.TableFilter, "OUTPUT"); len(got) == 0 || !slices.Equal(got[0], first) {
		t.Errorf("OUTPUT = %q, want %q first", got, first)
	}
	if err := e.k.IPTables.DeleteRule(iptables.TableFilter, "OUTPUT", first); err != nil {
		t.Fatalf("DeleteRule: %v", err)
	}

	// An insert that cannot be made changes nothing, the chains included.
	c := iptables.Chain{Name: chainA, Rules: rules("-j ACCEPT")}
	err = write([]iptables.Chain{c},
		[]iptables.Insert{{Chain: chainB, Spec: args("-j " + Prefix + "MISSING")}})
	if err == nil {
		t.Fatal("an insert jumping to a missing chain was taken")
	}
	contract.WantEqual(t, "the chain after the refused transaction", e.rules(iptables.TableFilter, chainA), a.Rules)
	if err := write(nil, nil); err != nil {
		t.Errorf("nothing to do: %v", err)
	}
}

// testSaveTables: SaveTables of filter and nat holds what SaveTable of
// each holds; mangle, used before or not, is SaveTable's or has no chains;
// a table no backend knows has no chains and is no error.
func testSaveTables(t *testing.T, e *env) {
	tr, ok := e.k.IPTables.(iptables.TablesRestorer)
	if !ok {
		t.Fatalf("%T is not an iptables.TablesRestorer", e.k.IPTables)
	}
	e.restore(iptables.TableFilter, iptables.Chain{Name: chainA, Rules: rules("-j DROP")})
	e.ensure(iptables.TableFilter, "FORWARD", args(`-m comment --comment "kube-ipvs save tables" -j `+chainA))
	e.restore(iptables.TableNAT, iptables.Chain{Name: chainNat, Rules: rules("-j MASQUERADE")})
	tables := []string{iptables.TableFilter, iptables.TableNAT, iptables.TableMangle, "kipvsnosuch"}
	saved, err := tr.SaveTables(tables...)
	if err != nil {
		t.Fatalf("SaveTables: %v", err)
	}
	if len(saved) != len(tables) {
		t.Errorf("SaveTables(%q) has %d tables, want %d", tables, len(saved), len(tables))
	}
	for _, table := range []string{iptables.TableFilter, iptables.TableNAT} {
		contract.WantEqual(t, "SaveTables: "+table, saved[table], e.saveTable(table))
	}
	if mangle := saved[iptables.TableMangle]; mangle.Chains != nil {
		contract.WantEqual(t, "SaveTables: mangle, in use", mangle, e.saveTable(iptables.TableMangle))
	}
	if none := saved["kipvsnosuch"]; none.Chains != nil || none.Rules == nil {
		t.Errorf("SaveTables: a table no backend knows = %#v, want no chains and an empty Rules", none)
	}
}

// testRestoreTables: one RestoreTables writes chains and jumps into
// filter and nat; a later one whose filter write is refused leaves nat,
// written before it, with its new body and filter, and mangle after it,
// as they were, and says filter was refused.
func testRestoreTables(t *testing.T, e *env) {
	tr, ok := e.k.IPTables.(iptables.TablesRestorer)
	if !ok {
		t.Fatalf("%T is not an iptables.TablesRestorer", e.k.IPTables)
	}
	a := iptables.Chain{Name: chainA, Rules: rules("-j DROP")}
	nat := iptables.Chain{Name: chainNat, Rules: rules("-j MASQUERADE")}
	e.own(iptables.TableFilter, a)
	e.own(iptables.TableNAT, nat)
	jump := args(`-m comment --comment "kube-ipvs restore tables" -j ` + chainA)
	natJump := args(`-m comment --comment "kube-ipvs restore tables" -j ` + chainNat)
	err := tr.RestoreTables([]iptables.TableWrite{
		{Table: iptables.TableNAT, Chains: []iptables.Chain{nat}, Inserts: []iptables.Insert{{Chain: "POSTROUTING", Spec: natJump}}},
		{Table: iptables.TableMangle},
		{Table: iptables.TableFilter, Chains: []iptables.Chain{a}, Inserts: []iptables.Insert{{Chain: "FORWARD", Spec: jump}}},
	})
	if err != nil {
		t.Fatalf("RestoreTables: %v", err)
	}
	t.Cleanup(func() {
		for _, j := range []struct {
			table, chain string
			spec         []string
		}{{iptables.TableNAT, "POSTROUTING", natJump}, {iptables.TableFilter, "FORWARD", jump}} {
			if err := e.k.IPTables.DeleteRule(j.table, j.chain, j.spec); err != nil && !errors.Is(err, iptables.ErrNotFound) {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	contract.WantEqual(t, "nat's chain", e.rules(iptables.TableNAT, chainNat), nat.Rules)
	contract.WantEqual(t, "filter's chain", e.rules(iptables.TableFilter, chainA), a.Rules)
	if got := e.rules(iptables.TableNAT, "POSTROUTING"); len(got) == 0 || !slices.Equal(got[0], natJump) {
		t.Errorf("POSTROUTING = %q, want %q first", got, natJump)
	}
	if got := e.rules(iptables.TableFilter, "FORWARD"); len(got) == 0 || !slices.Equal(got[0], jump) {
		t.Errorf("FORWARD = %q, want %q first", got, jump)
	}

	forward := e.rules(iptables.TableFilter, "FORWARD")
	renat := iptables.Chain{Name: chainNat, Rules: rules("-j RETURN")}
	m := iptables.Chain{Name: chainB}
	e.own(iptables.TableMangle, m)
	err = tr.RestoreTables([]iptables.TableWrite{
		{Table: iptables.TableNAT, Chains: []iptables.Chain{renat}},
		{Table: iptables.TableFilter, Chains: []iptables.Chain{{Name: chainA, Rules: rules("-j ACCEPT")}},
			Inserts: []iptables.Insert{{Chain: "FORWARD", Spec: args("-j " + Prefix + "MISSING")}}},
		{Table: iptables.TableMangle, Chains: []iptables.Chain{m}},
	})
	if err == nil {
		t.Fatal("a jump to a missing chain was taken")
	}
	if !strings.HasPrefix(err.Error(), "filter refused") {
		t.Errorf("err = %v, want it to start with \"filter refused\"", err)
	}
	contract.WantEqual(t, "nat's chain, written before the refused table", e.rules(iptables.TableNAT, chainNat), renat.Rules)
	contract.WantEqual(t, "filter's chain after its refused write", e.rules(iptables.TableFilter, chainA), a.Rules)
	contract.WantEqual(t, "FORWARD after its refused write", e.rules(iptables.TableFilter, "FORWARD"), forward)
	_, err = e.k.IPTables.ListRules(iptables.TableMangle, chainB)
	contract.WantErr(t, "mangle's chain, after the refused table", err, iptables.ErrNotFound)
}
