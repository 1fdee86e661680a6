// Package iptablestest is the contract of iptables.Interface (chains) and
// iptables.Sets (ipsets): the behaviour kube-ipvs relies on, stated once as
// named subtests. It runs against the fakes in `go test`
// (iptables/contract_test.go) and against Kernel and KernelSets in the VM
// (test/vm/guest/contract_test.go), so a fake cannot drift from the kernel
// unnoticed.
//
// The suite only makes chains and sets whose names start with Prefix,
// removes them at the end of the case that made them, and fails a case that
// leaves one behind or changes a built-in chain it did not mean to.
package iptablestest

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// Prefix starts the name of every chain and set the suite makes.
const Prefix = "KIPVS-CT-"

// Kernel is what the suites run against: the iptables of one family and the
// ipsets, linked as in the kernel (a rule may match only an existing set; a
// set a rule matches cannot be destroyed).
type Kernel struct {
	IPTables iptables.Interface
	Sets     iptables.Sets
	// IPv6 tells that IPTables is the IPv6 one (ip6tables): rules are
	// written with IPv6 addresses and sets of family inet6.
	IPv6 bool
	// Restore seeds the sets with `ipset save` text, like `ipset restore`
	// (FakeSets.Load for the fake). The suite destroys what it seeded.
	Restore func(t *testing.T, ipsetSave string)
}

// builtins are the built-in chains kube-ipvs jumps from.
var builtins = map[string][]string{
	iptables.TableFilter: {"INPUT", "FORWARD", "OUTPUT"},
	iptables.TableNAT:    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// env is one case's kernel plus what it made, removed at its end.
type env struct {
	t *testing.T
	k Kernel
	// before is the body of every built-in chain when the case started.
	before map[[2]string][][]string
	chains map[string][]string // table -> chains made, in order
	sets   []string
}

// newEnv starts a case: it records the built-in chains and registers the
// cleanup, which removes the case's chains, then its sets, and then checks
// that nothing is left and the built-in chains are as they were.
func newEnv(t *testing.T, k Kernel) *env {
	e := &env{t: t, k: k, before: map[[2]string][][]string{}, chains: map[string][]string{}}
	for table, names := range builtins {
		for _, c := range names {
			e.before[[2]string{table, c}] = e.rules(table, c)
		}
	}
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) cleanup() {
	for table, names := range e.chains {
		empty := make([]iptables.Chain, 0, len(names))
		for _, n := range names {
			if _, err := e.k.IPTables.ListRules(table, n); err == nil {
				empty = append(empty, iptables.Chain{Name: n})
			}
		}
		if err := e.k.IPTables.RestoreChains(table, empty); err != nil {
			e.t.Errorf("cleanup: flushing: %v", err)
		}
		for _, c := range empty {
			if err := e.k.IPTables.DeleteChain(table, c.Name); err != nil {
				e.t.Errorf("cleanup: %v", err)
			}
		}
	}
	for _, s := range e.sets {
		if err := e.k.Sets.DestroySet(s); err != nil && !errors.Is(err, iptables.ErrNotFound) {
			e.t.Errorf("cleanup: %v", err)
		}
	}
	for tc, want := range e.before {
		if got, err := e.k.IPTables.ListRules(tc[0], tc[1]); err != nil || !reflect.DeepEqual(got, want) {
			e.t.Errorf("after the case: built-in chain %s/%s = %q, %v; want %q as before", tc[0], tc[1], got, err, want)
		}
	}
	names, err := e.k.Sets.ListSets()
	if err != nil {
		e.t.Errorf("after the case: %v", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			e.t.Errorf("after the case: set %s left behind", n)
		}
	}
}

// rules lists a chain, failing the case on error.
func (e *env) rules(table, chain string) [][]string {
	e.t.Helper()
	rules, err := e.k.IPTables.ListRules(table, chain)
	if err != nil {
		e.t.Fatalf("ListRules(%s, %s): %v", table, chain, err)
	}
	return rules
}

// restore replaces chains (made by the suite), failing the case on error.
func (e *env) restore(table string, chains ...iptables.Chain) {
	e.t.Helper()
	e.own(table, chains...)
	if err := e.k.IPTables.RestoreChains(table, chains); err != nil {
		e.t.Fatalf("RestoreChains(%s, %v): %v", table, chains, err)
	}
}

// own records chains as the case's, to be removed at its end.
func (e *env) own(table string, chains ...iptables.Chain) {
	for _, c := range chains {
		if !strings.HasPrefix(c.Name, Prefix) {
			e.t.Fatalf("suite bug: chain %s lacks the prefix", c.Name)
		}
		if !slices.Contains(e.chains[table], c.Name) {
			e.chains[table] = append(e.chains[table], c.Name)
		}
	}
}

// ensure is EnsureRule, failing the case on error; a rule added to a
// built-in chain is deleted at the end of the case.
func (e *env) ensure(table, chain string, spec []string) bool {
	e.t.Helper()
	added, err := e.k.IPTables.EnsureRule(table, chain, spec)
	if err != nil {
		e.t.Fatalf("EnsureRule(%s, %s, %q): %v", table, chain, spec, err)
	}
	if added && !strings.HasPrefix(chain, Prefix) {
		e.t.Cleanup(func() {
			if err := e.k.IPTables.DeleteRule(table, chain, spec); err != nil && !errors.Is(err, iptables.ErrNotFound) {
				e.t.Errorf("cleanup: %v", err)
			}
		})
	}
	return added
}

// createSet creates a set of the case's family, destroyed at its end.
func (e *env) createSet(name string, t iptables.SetType) {
	e.t.Helper()
	e.createSetFamily(name, t, e.k.IPv6)
}

func (e *env) createSetFamily(name string, t iptables.SetType, ipv6 bool) {
	e.t.Helper()
	e.createSetSpec(iptables.Set{Name: name, Type: t, IPv6: ipv6})
}

// createSetSpec creates a set, destroyed at the end of the case.
func (e *env) createSetSpec(s iptables.Set) {
	e.t.Helper()
	if !strings.HasPrefix(s.Name, Prefix) {
		e.t.Fatalf("suite bug: set %s lacks the prefix", s.Name)
	}
	e.sets = append(e.sets, s.Name)
	if err := e.k.Sets.CreateSet(s); err != nil {
		e.t.Fatalf("CreateSet(%+v): %v", s, err)
	}
}

// args splits a rule written as iptables -S prints it; a double-quoted
// part is one argument (no escapes are needed by the suite's rules).
func args(rule string) []string {
	var out []string
	for i, part := range strings.Split(rule, `"`) {
		if i%2 == 1 {
			out = append(out, part)
			continue
		}
		out = append(out, strings.Fields(part)...)
	}
	return out
}

// rules splits rule lines (see args); none is nil, as an empty chain lists.
func rules(lines ...string) [][]string {
	if len(lines) == 0 {
		return nil
	}
	out := make([][]string, len(lines))
	for i, l := range lines {
		out[i] = args(l)
	}
	return out
}
