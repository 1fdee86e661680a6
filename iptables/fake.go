package iptables

import (
	"bufio"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/kube-ipvs/kube-ipvs/internal/fakecall"
)

// Fake is an in-memory iptables of one family with the error semantics of
// Kernel. It starts with the built-in chains of nat (PREROUTING, INPUT,
// OUTPUT, POSTROUTING) and filter (INPUT, FORWARD, OUTPUT), empty, policy
// ACCEPT; mangle (its five) appears once used. Load seeds it with foreign rules; Dump shows it like
// `iptables-save`. It is safe for concurrent use.
//
// Beyond Kernel's errors, writes are checked as the kernel would: a rule's
// -j/-g target must be a target extension (ACCEPT, MASQUERADE, MARK, …) or
// an existing chain of the table, else ErrNotFound; when IPSets is set, every
// set a rule names (--match-set, and the SET target's --add-set, --del-set
// and --map-set) must be one of its sets, else ErrNotFound; `-j SET
// --map-set` is refused outside mangle, as xt_SET refuses it. Errors are
// worded like Kernel's.
//
// For tests it counts calls (Calls, Reads, Writes) and injects failures
// (FailOn, Hook).
type Fake struct {
	// Hook, when set, is called before each Interface method with the
	// method name and its arguments (table, chain, then the rule spec or
	// the restored chain names); a non-nil error is returned as-is and the
	// call does nothing (it is still counted). A failure set with FailOn
	// comes first: the Hook is then not called.
	Hook func(method string, args ...string) error
	// IPSets, when set, holds the sets rules may match on. NewFakeKernel
	// links a Fake and a FakeSets both ways.
	IPSets *FakeSets

	mu     sync.Mutex
	tables map[string]*fakeTable
	rec    *fakecall.Recorder[string]
}

type fakeTable struct {
	chains map[string]*fakeChain
}

// lazyTables are the tables that exist in the kernel but appear in the
// fake (and its Dump) only once used, as iptables-save shows a table only
// once its module is loaded.
var lazyTables = map[string][]string{
	TableMangle: {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

// table returns a table, creating a lazy one on first use. f.mu must be
// held.
func (f *Fake) table(name string) (*fakeTable, bool) {
	if t, ok := f.tables[name]; ok {
		return t, true
	}
	builtins, ok := lazyTables[name]
	if !ok {
		return nil, false
	}
	t := newBuiltinTable(builtins...)
	f.tables[name] = t
	return t, true
}

type fakeChain struct {
	policy string // "" for a user chain, else ACCEPT/DROP of a built-in one
	rules  [][]string
}

var (
	_ Interface      = (*Fake)(nil)
	_ TablesRestorer = (*Fake)(nil)
)

// NewFake returns a Fake holding only the empty built-in chains.
func NewFake() *Fake {
	f := &Fake{
		tables: map[string]*fakeTable{},
		rec: fakecall.New[string]("iptables.Fake", []string{MethodListRules, MethodSaveTable, MethodSaveTables},
			[]string{MethodRestoreChains, MethodRestoreTables, MethodEnsureRule, MethodDeleteRule, MethodDeleteChain}),
	}
	f.tables[TableNAT] = newBuiltinTable("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
	f.tables[TableFilter] = newBuiltinTable("INPUT", "FORWARD", "OUTPUT")
	return f
}

// NewFakeKernel returns a Fake and a FakeSets linked like the kernel links
// them: rules may only match on existing sets, and a set cannot be destroyed
// while a rule of the Fake matches on it. For dual stack, link a second Fake
// by setting its IPSets and extending the FakeSets' Referenced.
func NewFakeKernel() (*Fake, *FakeSets) {
	f, s := NewFake(), NewFakeSets()
	f.IPSets = s
	s.Referenced = f.ReferencesSet
	return f, s
}

func newBuiltinTable(names ...string) *fakeTable {
	t := &fakeTable{chains: map[string]*fakeChain{}}
	for _, n := range names {
		t.chains[n] = &fakeChain{policy: "ACCEPT"}
	}
	return t
}

// ListRules returns a copy of a chain's rules; ErrNotFound if the table or
// chain does not exist.
func (f *Fake) ListRules(table, chain string) ([][]string, error) {
	what := fmt.Sprintf("listing %s/%s", table, chain)
	if err := f.begin(what, MethodListRules, []string{chain}, table, chain); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.chain(table, chain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return cloneRules(c.rules), nil
}

// SaveTable returns a copy of a whole table, its chains in Dump's order
// (built-in chains in hook order, then user chains by name). mangle before
// its first use holds its empty built-in chains, as iptables-nft-save -t
// prints them, and is not created by the read. Any other table the Fake
// does not hold is ErrNotFound.
func (f *Fake) SaveTable(table string) (Table, error) {
	what := "saving " + table
	if err := f.begin(what, MethodSaveTable, nil, table); err != nil {
		return Table{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		builtins, lazy := lazyTables[table]
		if !lazy {
			return Table{}, fmt.Errorf("%s: table %s does not exist: %w", what, table, ErrNotFound)
		}
		t = newBuiltinTable(builtins...)
	}
	return t.save(), nil
}

// save copies the table as SaveTable returns it. f.mu must be held.
func (t *fakeTable) save() Table {
	out := Table{Chains: t.chainOrder(), Rules: map[string][][]string{}}
	for _, name := range out.Chains {
		if rules := t.chains[name].rules; len(rules) > 0 {
			out.Rules[name] = cloneRules(rules)
		}
	}
	return out
}

// SaveTables is SaveTable of each of tables, in one call, but a table the
// Fake does not hold (a lazy one not used yet, or one it does not know) is
// a Table without chains, as iptables-save without -t leaves it out.
func (f *Fake) SaveTables(tables ...string) (map[string]Table, error) {
	what := "saving " + strings.Join(tables, ", ")
	if err := f.begin(what, MethodSaveTables, nil, tables...); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	saved := make(map[string]Table, len(tables))
	for _, name := range tables {
		if t, ok := f.tables[name]; ok {
			saved[name] = t.save()
		} else {
			saved[name] = Table{Rules: map[string][][]string{}}
		}
	}
	return saved, nil
}

// RestoreTables makes each write (chains, then inserts, all or nothing),
// one table after the other, and stops at the first that fails: the tables
// before it keep what they got. It is one call (FailOn and Hook see the
// chains of every table), whose failure names the table.
func (f *Fake) RestoreTables(writes []TableWrite) error {
	writes = slices.DeleteFunc(slices.Clone(writes), func(w TableWrite) bool { return len(w.Chains) == 0 && len(w.Inserts) == 0 })
	if len(writes) == 0 {
		return nil
	}
	var tables, names []string
	for _, w := range writes {
		tables = append(tables, w.Table)
		names = append(names, writeChains(w.Chains, w.Inserts)...)
	}
	if err := f.begin("restoring "+strings.Join(tables, ", "), MethodRestoreTables, names, append(tables, names...)...); err != nil {
		return err
	}
	for _, w := range writes {
		if err := f.write(w.Table, w.Chains, w.Inserts); err != nil {
			return fmt.Errorf("%s refused: %w", w.Table, err)
		}
	}
	return nil
}

// RestoreChains replaces the bodies of the given user chains, creating the
// missing ones, all or nothing. It refuses what Kernel refuses (built-in
// chains, bad names) and rules whose target or set does not exist.
func (f *Fake) RestoreChains(table string, chains []Chain) error {
	names := writeChains(chains, nil)
	if err := f.begin("restoring "+table, MethodRestoreChains, names, append([]string{table}, names...)...); err != nil {
		return err
	}
	return f.write(table, chains, nil)
}

// writeChains names the chains a write changes: chains', then those
// inserted into, each once.
func writeChains(chains []Chain, inserts []Insert) []string {
	names := make([]string, 0, len(chains)+len(inserts))
	for _, c := range chains {
		names = append(names, c.Name)
	}
	for _, in := range inserts {
		if !slices.Contains(names, in.Chain) {
			names = append(names, in.Chain)
		}
	}
	return names
}

// write replaces the bodies of chains and then makes inserts in table, all
// or nothing, as one iptables-restore transaction.
func (f *Fake) write(table string, chains []Chain, inserts []Insert) error {
	what := "restoring " + table
	if err := validateChains(table, chains); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := validateInserts(inserts); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.table(table)
	if !ok {
		return fmt.Errorf("%s: table does not exist", what)
	}
	declared := make(map[string]bool, len(chains))
	for _, c := range chains {
		declared[c.Name] = true
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			if err := f.checkRule(table, t, declared, r); err != nil {
				return fmt.Errorf("%s: chain %s: %w", what, c.Name, err)
			}
		}
	}
	for _, in := range inserts {
		if _, ok := t.chains[in.Chain]; !ok && !declared[in.Chain] {
			return fmt.Errorf("%s: chain %s: %w", what, in.Chain, ErrNotFound)
		}
		if err := f.checkRule(table, t, declared, in.Spec); err != nil {
			return fmt.Errorf("%s: chain %s: %w", what, in.Chain, err)
		}
	}
	for _, c := range chains {
		t.chains[c.Name] = &fakeChain{rules: cloneRules(c.Rules)}
	}
	for _, in := range inserts {
		c := t.chains[in.Chain]
		c.rules = slices.Insert(c.rules, 0, slices.Clone(in.Spec))
	}
	return nil
}

// EnsureRule inserts spec at the head of the chain unless an equal rule is
// already in it, reporting whether it inserted; ErrNotFound if the chain,
// the target or a matched set does not exist.
func (f *Fake) EnsureRule(table, chain string, spec []string) (bool, error) {
	what := fmt.Sprintf("ensuring rule in %s/%s", table, chain)
	if err := f.begin(what, MethodEnsureRule, []string{chain}, append([]string{table, chain}, spec...)...); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.chain(table, chain)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	if slices.ContainsFunc(c.rules, func(r []string) bool { return slices.Equal(r, spec) }) {
		return false, nil
	}
	if err := f.checkRule(table, f.tables[table], nil, spec); err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	c.rules = slices.Insert(c.rules, 0, slices.Clone(spec))
	return true, nil
}

// DeleteRule removes the first rule equal to spec; ErrNotFound if there is
// none or the chain does not exist.
func (f *Fake) DeleteRule(table, chain string, spec []string) error {
	what := fmt.Sprintf("deleting rule in %s/%s", table, chain)
	if err := f.begin(what, MethodDeleteRule, []string{chain}, append([]string{table, chain}, spec...)...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.chain(table, chain)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	i := slices.IndexFunc(c.rules, func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	c.rules = slices.Delete(c.rules, i, i+1)
	return nil
}

// DeleteChain deletes a user chain and its rules; ErrNotFound if absent,
// ErrInUse while a rule of the table jumps to it. Built-in chains are
// refused.
func (f *Fake) DeleteChain(table, chain string) error {
	what := fmt.Sprintf("deleting chain %s/%s", table, chain)
	if err := f.begin(what, MethodDeleteChain, []string{chain}, table, chain); err != nil {
		return err
	}
	if err := validateChainName(chain); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.chain(table, chain); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	t := f.tables[table]
	for name, c := range t.chains {
		for _, r := range c.rules {
			if name != chain && JumpTarget(r) == chain {
				return fmt.Errorf("%s: %w: rule in %s jumps to it", what, ErrInUse, name)
			}
		}
	}
	delete(t.chains, chain)
	return nil
}

// ReferencesSet reports whether a rule in any chain matches on the ipset
// (--match-set NAME). It is not an Interface call and is not counted.
func (f *Fake) ReferencesSet(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tables {
		for _, c := range t.chains {
			for _, r := range c.rules {
				if slices.Contains(matchSets(r), name) {
					return true
				}
			}
		}
	}
	return false
}

// chain returns a chain, or ErrNotFound (callers name the chain in their
// message, as Kernel does). f.mu must be held.
func (f *Fake) chain(table, chain string) (*fakeChain, error) {
	if t, ok := f.table(table); ok {
		if c, ok := t.chains[chain]; ok {
			return c, nil
		}
	}
	return nil, ErrNotFound
}

// checkRule fails with ErrNotFound when spec jumps to a target that is
// neither an extension nor a chain of t (or of extra), or, when IPSets is
// set, names a set it does not hold; and with a plain error for a SET
// target mapping outside the mangle table. f.mu must be held.
func (f *Fake) checkRule(table string, t *fakeTable, extra map[string]bool, spec []string) error {
	target := JumpTarget(spec)
	if target != "" && !targetExtensions[target] && !extra[target] {
		if _, ok := t.chains[target]; !ok {
			return fmt.Errorf("no chain or target %s: %w", target, ErrNotFound)
		}
	}
	if target == "SET" && slices.Contains(spec, "--map-set") && table != TableMangle {
		return fmt.Errorf("-j SET --map-set is only usable in the mangle table, not %s", table)
	}
	if f.IPSets == nil {
		return nil
	}
	for _, s := range matchSets(spec) {
		if !f.IPSets.has(s) {
			return fmt.Errorf("set %s does not exist: %w", s, ErrNotFound)
		}
	}
	return nil
}

// begin counts a call and returns its injected failure, wrapped in what as
// Kernel wraps its errors, or else what Hook returns, as is. It runs outside
// f.mu, so a Hook may inspect the Fake.
func (f *Fake) begin(what, method string, chains []string, args ...string) error {
	if err := f.rec.Begin(method, chains...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if f.Hook != nil {
		return f.Hook(method, args...)
	}
	return nil
}

// FailOn makes every later call of method (MethodEnsureRule, …) on chain
// fail with err, wrapped as Kernel wraps its errors, before anything is
// looked at or changed. RestoreChains fails when any chain it restores is
// the one given, RestoreTables when any chain of any of its tables is.
// The chain "" matches every call (and is the only one that fails
// SaveTable and SaveTables, which name no chain); tables are not told
// apart.
// A nil err removes the failure. Failed calls are counted. It panics on a
// name that is not an Interface method.
func (f *Fake) FailOn(method, chain string, err error) { f.rec.FailOn(method, chain, err) }

// Calls returns how many times each method was called since the last
// ResetCalls, reads and failed calls included ("ListRules": 2,
// "EnsureRule": 1).
func (f *Fake) Calls() map[string]int { return f.rec.Calls() }

// ResetCalls forgets the counted calls; state and failures stay.
func (f *Fake) ResetCalls() { f.rec.Reset() }

// Reads returns the number of ListRules, SaveTable and SaveTables calls
// since the last ResetCalls.
func (f *Fake) Reads() int { return f.rec.Reads() }

// Writes returns the number of other calls since the last ResetCalls.
func (f *Fake) Writes() int { return f.rec.Writes() }

// Dump renders every table like `iptables-save` without counters or
// comment lines: tables by name, each as `*TABLE`, one `:CHAIN POLICY` line
// per chain (built-in chains in hook order with their policy, then user
// chains by name with "-"), the `-A` lines chain by chain in that order, and
// COMMIT.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(f.tables)) {
		t := f.tables[name]
		order := t.chainOrder()
		b.WriteString("*" + name + "\n")
		for _, cn := range order {
			policy := t.chains[cn].policy
			if policy == "" {
				policy = "-"
			}
			b.WriteString(":" + cn + " " + policy + "\n")
		}
		for _, cn := range order {
			for _, r := range t.chains[cn].rules {
				b.WriteString(ruleLine(cn, r) + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// chainOrder is the order iptables-save prints chains in: built-in chains
// in hook order, then user chains by name.
func (t *fakeTable) chainOrder() []string {
	names := slices.Collect(maps.Keys(t.chains))
	rank := func(n string) (int, bool) {
		if t.chains[n].policy == "" {
			return 0, false
		}
		r, ok := builtinOrder[n]
		if !ok {
			r = len(builtinOrder)
		}
		return r, true
	}
	sort.Slice(names, func(i, j int) bool {
		ri, bi := rank(names[i])
		rj, bj := rank(names[j])
		if bi != bj {
			return bi
		}
		if ri != rj {
			return ri < rj
		}
		return names[i] < names[j]
	})
	return names
}

// Load replaces the tables that an `iptables-save` text holds (counters
// and comment lines ignored; tables it does not mention are kept), like
// `iptables-restore` without --noflush. A chain declared with a policy is
// built-in, one with "-" a user chain. Load is not counted and ignores Hook.
func (f *Fake) Load(text string) error {
	tables, err := parseSave(text)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	maps.Copy(f.tables, tables)
	return nil
}

// parseSave parses iptables-save text into tables.
func parseSave(text string) (map[string]*fakeTable, error) {
	tables := map[string]*fakeTable{}
	var (
		cur     *fakeTable
		curName string
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		var err error
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				err = fmt.Errorf("table %s not committed", curName)
			}
			curName, cur = line[1:], &fakeTable{chains: map[string]*fakeChain{}}
		case cur == nil:
			err = fmt.Errorf("%q outside a table", line)
		case line == "COMMIT":
			tables[curName], cur = cur, nil
		case strings.HasPrefix(line, ":"):
			err = cur.declare(line[1:])
		default:
			err = cur.appendLine(line)
		}
		if err != nil {
			return nil, fmt.Errorf("loading line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loading: %w", err)
	}
	if cur != nil {
		return nil, fmt.Errorf("loading: table %s not committed", curName)
	}
	return tables, nil
}

// declare handles ":NAME POLICY [P:B]".
func (t *fakeTable) declare(decl string) error {
	fields := strings.Fields(decl)
	if len(fields) < 2 {
		return fmt.Errorf("bad chain declaration %q", decl)
	}
	policy := fields[1]
	if policy == "-" {
		policy = ""
	}
	t.chains[fields[0]] = &fakeChain{policy: policy}
	return nil
}

// appendLine handles "-A CHAIN args…" for a declared chain.
func (t *fakeTable) appendLine(line string) error {
	args, err := splitArgs(line)
	if err != nil {
		return err
	}
	if len(args) < 3 || args[0] != "-A" {
		return fmt.Errorf("unsupported line %q", line)
	}
	c, ok := t.chains[args[1]]
	if !ok {
		return fmt.Errorf("chain %s not declared", args[1])
	}
	c.rules = append(c.rules, dropCounters(args[2:]))
	return nil
}

func cloneRules(rules [][]string) [][]string {
	if len(rules) == 0 {
		return nil
	}
	out := make([][]string, len(rules))
	for i, r := range rules {
		out[i] = slices.Clone(r)
	}
	return out
}
