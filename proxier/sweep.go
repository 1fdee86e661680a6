package proxier

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// sweptTables are the tables kube-ipvs has ever written chains to. Every
// chain in them whose name starts with Prefix is kube-ipvs', whichever
// version or configuration made it.
var sweptTables = []string{iptables.TableFilter, iptables.TableMangle, iptables.TableNAT}

// leftovers is what of kube-ipvs' the kernel holds and r does not want:
// jumps to its chains from chains it does not own (one that r does not
// list, or a second copy of one it does), its chains that r does not
// have, and its sets of r's family that r does not have. A configuration
// that turns a list off, or an upgrade that renames a chain, leaves these
// behind; EnsureRules removes them, and Cleanup, with empty Rules, removes
// everything.
type leftovers struct {
	jumps  []Jump
	chains map[string][]string // by table
	sets   []string
}

func (l leftovers) empty() bool {
	return len(l.jumps) == 0 && len(l.chains) == 0 && len(l.sets) == 0
}

// ownsSet reports whether name is one of kube-ipvs' sets of family f:
// IPv6 set names end in "-6" (setName), IPv4 ones never do.
func ownsSet(name string, f v1.IPFamily) bool {
	return strings.HasPrefix(name, Prefix) && strings.HasSuffix(name, "-6") == (f == v1.IPv6Protocol)
}

// findLeftovers compares the saved tables with r.
func findLeftovers(saved map[string]iptables.Table, r Rules, setNames []string) leftovers {
	l := leftovers{chains: map[string][]string{}}
	for _, table := range sweptTables {
		t := saved[table]
		wanted := map[string]bool{}
		for _, c := range r.Chains[table] {
			wanted[c.Name] = true
		}
		for _, chain := range t.Chains {
			if strings.HasPrefix(chain, Prefix) {
				if !wanted[chain] {
					l.chains[table] = append(l.chains[table], chain)
				}
				continue
			}
			kept := map[string]bool{}
			for _, spec := range t.Rules[chain] {
				target := iptables.JumpTarget(spec)
				if !strings.HasPrefix(target, Prefix) {
					continue
				}
				key := strings.Join(spec, "\x00")
				if wanted[target] && !kept[key] && slices.ContainsFunc(r.Jumps, func(j Jump) bool {
					return j.Table == table && j.Chain == chain && slices.Equal(j.Spec, spec)
				}) {
					kept[key] = true
					continue
				}
				l.jumps = append(l.jumps, Jump{Table: table, Chain: chain, Spec: spec})
			}
		}
	}
	want := map[string]bool{}
	for _, s := range r.AllSets() {
		want[s.Name] = true
	}
	for _, name := range setNames {
		if ownsSet(name, r.Family) && !want[name] {
			l.sets = append(l.sets, name)
		}
	}
	slices.Sort(l.sets)
	return l
}

// remove deletes the leftovers: the jumps first, then the chains (all of
// a table's flushed in one transaction before any is deleted, since they
// may refer to each other), then the sets, which no rule names any more.
// keep, when not nil, spares a set (an ownership record whose virtual
// servers are still there). It tries everything and returns every error;
// what is already gone is no error. It reports what it did.
func (l leftovers) remove(ipt iptables.Interface, sets iptables.Sets, keep func(set string) bool) ([]string, error) {
	var done []string
	var errs []error
	for _, j := range l.jumps {
		err := ipt.DeleteRule(j.Table, j.Chain, j.Spec)
		if err != nil && !errors.Is(err, iptables.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		done = append(done, fmt.Sprintf("iptables -t %s -D %s %s", j.Table, j.Chain, strings.Join(j.Spec, " ")))
	}
	for _, table := range sweptTables {
		chains := l.chains[table]
		if len(chains) == 0 {
			continue
		}
		empty := make([]iptables.Chain, len(chains))
		for i, c := range chains {
			empty[i] = iptables.Chain{Name: c}
		}
		if err := ipt.RestoreChains(table, empty); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range chains {
			err := ipt.DeleteChain(table, c)
			if err != nil && !errors.Is(err, iptables.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			done = append(done, fmt.Sprintf("iptables -t %s -X %s", table, c))
		}
	}
	for _, s := range l.sets {
		if keep != nil && keep(s) {
			continue
		}
		err := sets.DestroySet(s)
		if err != nil && !errors.Is(err, iptables.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		done = append(done, "ipset destroy "+s)
	}
	return done, errors.Join(errs...)
}

// plan renders the leftovers as the commands that remove them.
func (l leftovers) plan() []string {
	var plan []string
	for _, j := range l.jumps {
		plan = append(plan, fmt.Sprintf("iptables -t %s -D %s %s", j.Table, j.Chain, strings.Join(j.Spec, " ")))
	}
	for _, table := range sweptTables {
		for _, c := range l.chains[table] {
			plan = append(plan, fmt.Sprintf("iptables -t %s -F %s; iptables -t %s -X %s", table, c, table, c))
		}
	}
	for _, s := range l.sets {
		plan = append(plan, "ipset destroy "+s)
	}
	return plan
}

// saveTables reads the swept tables and r's, in one iptables-save.
func saveTables(ipt iptables.Tables, r Rules) (map[string]iptables.Table, error) {
	return ipt.SaveTables(savedTables(r)...)
}

// savedTables are the tables saveTables reads: the swept ones and those r
// writes to.
func savedTables(r Rules) []string {
	tables := slices.Clone(sweptTables)
	for _, t := range r.Tables() {
		if !slices.Contains(tables, t) {
			tables = append(tables, t)
		}
	}
	for _, j := range r.Jumps {
		if !slices.Contains(tables, j.Table) {
			tables = append(tables, j.Table)
		}
	}
	return tables
}
