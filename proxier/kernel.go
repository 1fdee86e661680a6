package proxier

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// Kernel bundles the kernel interfaces of one address family. Production
// code passes the real adapters, tests the fakes.
type Kernel struct {
	IPVS      ipvs.Interface
	Addrs     netif.Addrs
	IPTables  iptables.Tables
	Sets      iptables.Sets
	Conntrack conntrack.Interface
	// Local lists the node's own addresses, for NodePorts and for the
	// external IPs the node holds already; nil: none are known.
	Local LocalAddrs
}

// ReadState reads back what kube-ipvs owns in the kernel, in bulk: the
// VIPs on the dummy interface, the members of the given sets (SetOwned, the
// ownership record, among them), one dump of the virtual servers, and the
// real servers of each of ours (and, in State.foreignMarks, the marks of
// the firewall-mark virtual servers that are not). A virtual server is ours
// when SetOwned (SetOwnedMark for a firewall mark) records it; one that is
// not recorded is adopted only when adopt says so, told whether its address
// is bound on kube-ipvs' own dummy interface (the proxier adopts a wanted
// one that is: a record lost with its set; and, taking over from
// kube-proxy, kube-proxy's). Every other virtual server belongs to
// someone else and is never returned. It also returns which of the sets do
// not exist.
func ReadState(k Kernel, family v1.IPFamily, sets []iptables.Set, adopt func(key ipvs.ServiceKey, bound bool) bool) (*State, []iptables.Set, error) {
	s, missing, err := readBulk(k, family, sets, adopt)
	if err != nil {
		return nil, nil, err
	}
	for key, vs := range s.Servers {
		if vs.Dests, err = readDests(k, key); err != nil {
			return nil, nil, err
		}
		s.Servers[key] = vs
	}
	return s, missing, nil
}

// readDests reads the real servers of one virtual server, sorted by
// address.
func readDests(k Kernel, key ipvs.ServiceKey) ([]ipvs.Destination, error) {
	dests, err := k.IPVS.ListDestinations(key)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
	return dests, nil
}

// readBulk is ReadState but the real servers: each of ours has its
// Service and no Dests.
func readBulk(k Kernel, family v1.IPFamily, sets []iptables.Set, adopt func(key ipvs.ServiceKey, bound bool) bool) (*State, []iptables.Set, error) {
	s := NewState()
	if err := readAddrs(k, family, s); err != nil {
		return nil, nil, err
	}
	var missing []iptables.Set
	for _, set := range sets {
		found, err := readSet(k, set, s)
		if err != nil {
			return nil, nil, err
		}
		if !found {
			missing = append(missing, set)
		}
	}
	if err := readServers(k, family, s, adopt); err != nil {
		return nil, nil, err
	}
	return s, missing, nil
}

// readAddrs makes s's addresses those of family the kernel binds on
// kipvs0.
func readAddrs(k Kernel, family v1.IPFamily, s *State) error {
	addrs, err := k.Addrs.ListAddrs()
	if err != nil {
		return err
	}
	clear(s.Addrs)
	for _, a := range addrsOf(addrs, family) {
		s.Addrs[a] = struct{}{}
	}
	return nil
}

// readSet makes s's members of set those the kernel holds; false when
// the set does not exist.
func readSet(k Kernel, set iptables.Set, s *State) (bool, error) {
	entries, err := k.Sets.ListEntries(set.Name)
	if errors.Is(err, iptables.ErrNotFound) {
		entries = nil
	} else if err != nil {
		return false, err
	}
	for e := range s.Entries {
		if e.Set() == set.Name {
			delete(s.Entries, e)
		}
	}
	for _, e := range entries {
		s.Entries[NewSetEntry(set.Name, e)] = struct{}{}
	}
	return err == nil, nil
}

// readServers makes s's virtual servers (without Dests) those of family
// the kernel holds that are kube-ipvs': recorded in s's ownership set,
// or adopted (see ReadState; bound: on an address s has). s's addresses
// and records must have been read.
func readServers(k Kernel, family v1.IPFamily, s *State, adopt func(key ipvs.ServiceKey, bound bool) bool) error {
	svcs, err := k.IPVS.ListServices()
	if err != nil {
		return err
	}
	keepServers(svcs, family, s, adopt)
	return nil
}

// keepServers is readServers with the virtual servers listed already.
func keepServers(svcs []ipvs.Service, family v1.IPFamily, s *State, adopt func(key ipvs.ServiceKey, bound bool) bool) {
	var others []ipvs.Service
	s.Servers, others = recordedServers(svcs, family, s.Entries)
	adoptServers(others, family, s, adopt)
}

// recordedServers returns, of the virtual servers of family in svcs,
// those recorded (in entries' ownership set) as kube-ipvs', without real
// servers, and the others.
func recordedServers(svcs []ipvs.Service, family v1.IPFamily, entries map[SetEntry]struct{}) (map[ipvs.ServiceKey]VirtualServer, []ipvs.Service) {
	recorded := make(map[ipvs.ServiceKey]VirtualServer, len(svcs))
	var others []ipvs.Service
	for _, svc := range svcs {
		if familyOf(svc.Key.Addr) != family {
			continue
		}
		if _, ok := entries[ownedEntry(family, svc.Key)]; !ok {
			others = append(others, svc)
			continue
		}
		recorded[svc.Key] = VirtualServer{Service: svc}
	}
	return recorded, others
}

// adoptServers puts into s those of the virtual servers that were not
// recorded as kube-ipvs' that s's records now say are (a full sync's
// background read may have read the records before an incremental sync
// wrote one) or that adopt takes (see ReadState), and makes s's foreign
// marks those of the rest.
func adoptServers(unrecorded []ipvs.Service, family v1.IPFamily, s *State, adopt func(key ipvs.ServiceKey, bound bool) bool) {
	s.foreignMarks = nil
	for _, svc := range unrecorded {
		key := svc.Key
		_, recorded := s.Entries[ownedEntry(family, key)]
		_, bound := s.Addrs[key.Addr]
		if recorded || (adopt != nil && adopt(key, bound)) {
			s.Servers[key] = VirtualServer{Service: svc}
		} else if key.IsMark() {
			s.foreignMarks = append(s.foreignMarks, key.Mark)
		}
	}
}

// EnsureRules makes the kernel hold r: it creates the sets ReadState found
// missing (before any rule refers to them) and keeps the members of r's
// lists; it reads the tables in one iptables-save, rewrites in one
// iptables-restore (atomically per table) only the chains whose body
// differs, and inserts missing jumps; then it removes what of kube-ipvs'
// r does not want (a list turned off, a chain an older version made, a
// second copy of a jump). It reports what it changed, as commands, for
// logging.
func EnsureRules(k Kernel, r Rules, missingSets []iptables.Set) ([]string, error) {
	rs := newRuleSync(k, r)
	err := rs.ensureSets(missingSets)
	if err == nil {
		err = rs.writeTables()
	}
	if err == nil {
		err = rs.sweep()
	}
	return rs.changed, err
}

// ruleSync is EnsureRules in steps, for a full sync that runs in steps:
// the sets (before any rule refers to them), then the save of every table
// (one iptables-save, in the background: startSave), then the writes (one
// iptables-restore, if anything differs), then the sweep of what r does
// not want.
type ruleSync struct {
	k       Kernel
	r       Rules
	tables  []string // to save and fix, in order; nil once written
	saved   map[string]iptables.Table
	changed []string // what it changed, as commands
	// save is the iptables-save of tables running in the background
	// (startSave), nil when none is.
	save *tablesSave
}

// tablesSave is one iptables-save: done closes when tables and err hold
// its outcome.
type tablesSave struct {
	done   chan struct{}
	tables map[string]iptables.Table
	err    error
}

// startSave starts saving the tables in the background. The save is a
// process of its own (0.05 to 0.2 s on a slow node): while it runs, the
// full sync's runner syncs the changes that come in instead of holding
// them back (StepWaiter).
func (rs *ruleSync) startSave() {
	s := &tablesSave{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.tables, s.err = rs.k.IPTables.SaveTables(rs.tables...)
	}()
	rs.save = s
}

func newRuleSync(k Kernel, r Rules) *ruleSync {
	return &ruleSync{k: k, r: r, tables: savedTables(r), saved: map[string]iptables.Table{}}
}

// ensureSets creates the sets ReadState found missing and keeps the
// members of r's lists.
func (rs *ruleSync) ensureSets(missing []iptables.Set) error {
	for _, s := range missing {
		if err := rs.k.Sets.CreateSet(s); err != nil && !errors.Is(err, iptables.ErrExists) {
			return err
		}
		rs.changed = append(rs.changed, fmt.Sprintf("ipset create %s %s", s.Name, s.Type))
	}
	for _, l := range rs.r.Lists {
		done, err := ensureList(rs.k.Sets, l)
		rs.changed = append(rs.changed, done...)
		if err != nil {
			return err
		}
	}
	return nil
}

// writeTables takes the tables' save (waiting for it, started here if
// startSave did not) and, in one iptables-restore, rewrites in each table
// the chains whose body differs and inserts its missing jumps.
func (rs *ruleSync) writeTables() error {
	if rs.save == nil {
		rs.startSave()
	}
	<-rs.save.done
	saved, err := rs.save.tables, rs.save.err
	tables := rs.tables
	rs.save, rs.tables = nil, nil
	if err != nil {
		return err
	}
	var writes []iptables.TableWrite
	for _, table := range tables {
		t := saved[table]
		rs.saved[table] = t
		w := iptables.TableWrite{Table: table, Chains: staleChains(t, rs.r.Chains[table])}
		for _, j := range rs.r.Jumps {
			if j.Table == table && !slices.ContainsFunc(t.Rules[j.Chain], func(r []string) bool { return slices.Equal(r, j.Spec) }) {
				w.Inserts = append(w.Inserts, iptables.Insert{Chain: j.Chain, Spec: j.Spec})
			}
		}
		if len(w.Chains) > 0 || len(w.Inserts) > 0 {
			writes = append(writes, w)
		}
	}
	if len(writes) == 0 {
		return nil
	}
	if err := rs.k.IPTables.RestoreTables(writes); err != nil {
		return err
	}
	for _, w := range writes {
		for _, c := range w.Chains {
			rs.changed = append(rs.changed, fmt.Sprintf("iptables-restore -t %s %s", w.Table, c.Name))
		}
		for _, in := range w.Inserts {
			rs.changed = append(rs.changed, fmt.Sprintf("iptables -t %s -I %s %s", w.Table, in.Chain, strings.Join(in.Spec, " ")))
		}
	}
	return nil
}

// sweep removes what of kube-ipvs' r does not want, judged from the tables
// as the table steps read them (a jump a step inserted is wanted anyway).
func (rs *ruleSync) sweep() error {
	setNames, err := rs.k.Sets.ListSets()
	if err != nil {
		return err
	}
	left := findLeftovers(rs.saved, rs.r, setNames)
	if left.empty() {
		return nil
	}
	done, err := left.remove(rs.k.IPTables, rs.k.Sets, nil)
	rs.changed = append(rs.changed, done...)
	return err
}

// staleChains returns the chains whose body in the saved table differs
// from the wanted one, or that it does not hold.
func staleChains(saved iptables.Table, want []iptables.Chain) []iptables.Chain {
	var stale []iptables.Chain
	for _, c := range want {
		if !slices.Contains(saved.Chains, c.Name) || !slices.EqualFunc(saved.Rules[c.Name], c.Rules, slices.Equal) {
			stale = append(stale, c)
		}
	}
	return stale
}

// ensureList makes the kernel's set of l hold exactly l's members,
// creating it if missing: it adds the missing members and deletes the
// others. It reports what it changed: each member is a line, but a list of
// thousands is summed up.
func ensureList(sets iptables.Sets, l List) ([]string, error) {
	var changed []string
	have, err := sets.ListEntries(l.Set.Name)
	if errors.Is(err, iptables.ErrNotFound) {
		if err := sets.CreateSet(l.Set); err != nil && !errors.Is(err, iptables.ErrExists) {
			return nil, err
		}
		changed = append(changed, fmt.Sprintf("ipset create %s %s", l.Set.Name, l.Set.Type))
	} else if err != nil {
		return nil, err
	}
	want := make(map[iptables.Entry]bool, len(l.Members))
	for _, e := range l.Members {
		want[e] = true
	}
	var added, deleted []string
	for _, e := range have {
		if want[e] {
			delete(want, e)
			continue
		}
		if err := sets.DelEntry(l.Set.Name, e); err != nil && !errors.Is(err, iptables.ErrNotFound) {
			return changed, err
		}
		deleted = append(deleted, e.String())
	}
	for _, e := range l.Members {
		if !want[e] {
			continue
		}
		if err := sets.AddEntry(l.Set.Name, e); err != nil && !errors.Is(err, iptables.ErrExists) {
			return changed, err
		}
		added = append(added, e.String())
	}
	changed = append(changed, summarize("ipset add "+l.Set.Name, added)...)
	return append(changed, summarize("ipset del "+l.Set.Name, deleted)...), nil
}

// summarize renders one line per member, or, past 10, one line with the
// count and the first of them.
func summarize(op string, members []string) []string {
	const most = 10
	if len(members) <= most {
		lines := make([]string, len(members))
		for i, m := range members {
			lines[i] = op + " " + m
		}
		return lines
	}
	return []string{fmt.Sprintf("%s: %d members (%s, …)", op, len(members), strings.Join(members[:3], ", "))}
}

// ApplyResult is what Apply did.
type ApplyResult struct {
	// Done lists the operations that took effect, in order (a compensating
	// one included), for the caller's mirror of the kernel.
	Done []Op
	// Failed holds, per Service, the first failure and every operation of
	// that Service that failed or was not run after it.
	Failed map[types.NamespacedName]*Failure
}

// Failure is one Service's failed part of an Apply.
type Failure struct {
	Err error
	Ops []Op
}

// Apply runs ops in order. A failure is confined to the Service it belongs
// to (Op.Owner): that Service's later operations are not run (they depend
// on the failed one: a real server on its virtual server, a virtual server
// on its masquerade set members), and every other Service's operations go
// ahead. Operations whose goal already holds (adding a member that is
// there, removing one that is gone) count as done; a real server that
// already exists is updated instead. A virtual server that exists but is
// not recorded as kube-ipvs' is someone else's: adding it fails, and the
// ownership record written just before is taken back.
func Apply(k Kernel, ops []Op) ApplyResult {
	res := ApplyResult{Done: make([]Op, 0, len(ops)), Failed: map[types.NamespacedName]*Failure{}}
	adder, _ := k.Sets.(iptables.EntryAdder)
	batcher, _ := k.IPVS.(ipvs.Batcher)
	for i := 0; i < len(ops); i++ {
		n := res.batchRun(ops[i:])
		run := ops[i : i+n]
		switch {
		case n >= minBatch && run[0].Kind == OpAddEntry && adder != nil:
			i += n - 1
			if addBatch(adder, run) {
				res.Done = append(res.Done, run...)
				continue
			}
			for _, o := range run { // the kernel refused one: one by one, to learn which
				res.apply(k, o)
			}
		case n >= minBatch && run[0].Kind != OpAddEntry && batcher != nil:
			i += n - 1
			res.writeBatch(k, batcher, run)
		default:
			res.apply(k, ops[i])
		}
	}
	return res
}

// Additions (set members, virtual servers, real servers) are made in
// batches of minBatch to maxBatch, one request each (a node's first sync
// adds a virtual server, its real servers and two or three members per
// Service); fewer cost few requests anyway, one each.
const (
	minBatch = 16
	maxBatch = 256
)

// batchRun is how many ops from the first are additions of one kind (and,
// for set members, to one set), at most maxBatch, none of a Service that
// failed already.
func (res *ApplyResult) batchRun(ops []Op) int {
	switch ops[0].Kind {
	case OpAddEntry, OpAddService, OpAddDest:
	default:
		return 1
	}
	n := 0
	for n < len(ops) && n < maxBatch {
		o := ops[n]
		if o.Kind != ops[0].Kind || (o.Kind == OpAddEntry && !o.Entry.sameSet(ops[0].Entry)) || res.Failed[o.Owner] != nil {
			break
		}
		n++
	}
	return max(n, 1)
}

// writeBatch adds the virtual servers or real servers of run in one
// request. What the kernel refused is run again alone, so that it is
// answered as apply answers it (a real server there already is updated;
// a virtual server someone else made takes its record back) and fails
// its Service. A write the kernel took is done, even when an earlier one
// of its Service failed in the same batch: the mirror must hold it.
func (res *ApplyResult) writeBatch(k Kernel, b ipvs.Batcher, run []Op) {
	ws := make([]ipvs.Write, len(run))
	for i, o := range run {
		if o.Kind == OpAddService {
			ws[i] = ipvs.Write{Method: ipvs.MethodAddService, Service: o.Service}
		} else {
			ws[i] = ipvs.Write{Method: ipvs.MethodAddDestination, Key: o.Service.Key, Dest: o.Dest}
		}
	}
	for i, err := range b.Batch(ws) {
		if err == nil {
			res.Done = append(res.Done, run[i])
			continue
		}
		res.apply(k, run[i])
	}
}

// addBatch adds the members of run, all of one set, in one request, and
// reports whether the kernel took them all.
func addBatch(adder iptables.EntryAdder, run []Op) bool {
	entries := make([]iptables.Entry, len(run))
	for i, o := range run {
		entries[i] = o.Entry.Entry()
	}
	return adder.AddEntries(run[0].Entry.Set(), entries) == nil
}

// apply runs one operation, unless its Service failed already, and records
// the outcome.
func (res *ApplyResult) apply(k Kernel, o Op) {
	if f := res.Failed[o.Owner]; f != nil {
		f.Ops = append(f.Ops, o)
		return
	}
	err := applyOne(k, o)
	if errors.Is(err, errForeign) {
		undo := Op{Kind: OpDelEntry, Entry: ownedEntry(familyOf(o.Service.Key.Addr), o.Service.Key), Owner: o.Owner}
		if uerr := applyOne(k, undo); uerr != nil {
			err = errors.Join(err, uerr)
		} else {
			res.Done = append(res.Done, undo)
		}
	}
	if err != nil {
		res.Failed[o.Owner] = &Failure{Err: fmt.Errorf("%s: %w", o, err), Ops: []Op{o}}
		return
	}
	res.Done = append(res.Done, o)
}

// errForeign marks adding a virtual server that exists without kube-ipvs'
// record: someone else made it.
var errForeign = errors.New("a virtual server not made by kube-ipvs holds this address and port; kube-ipvs leaves it alone")

func applyOne(k Kernel, o Op) error {
	switch o.Kind {
	case OpAddEntry:
		return tolerate(k.Sets.AddEntry(o.Entry.Set(), o.Entry.Entry()), iptables.ErrExists)
	case OpDelEntry:
		return tolerate(k.Sets.DelEntry(o.Entry.Set(), o.Entry.Entry()), iptables.ErrNotFound)
	case OpBindAddr:
		return tolerate(k.Addrs.AddAddr(o.Addr), netif.ErrExists)
	case OpUnbindAddr:
		return tolerate(k.Addrs.DelAddr(o.Addr), netif.ErrNotFound)
	case OpAddService:
		err := k.IPVS.AddService(o.Service)
		if errors.Is(err, ipvs.ErrExists) {
			return fmt.Errorf("%w (%w)", errForeign, err)
		}
		return err
	case OpUpdateService:
		return k.IPVS.UpdateService(o.Service)
	case OpDelService:
		return tolerate(k.IPVS.DeleteService(o.Service.Key), ipvs.ErrNotFound)
	case OpAddDest:
		err := k.IPVS.AddDestination(o.Service.Key, o.Dest)
		if errors.Is(err, ipvs.ErrExists) {
			return k.IPVS.UpdateDestination(o.Service.Key, o.Dest)
		}
		return err
	case OpUpdateDest:
		return k.IPVS.UpdateDestination(o.Service.Key, o.Dest)
	case OpDelDest:
		return tolerate(k.IPVS.DeleteDestination(o.Service.Key, o.Dest.Addr), ipvs.ErrNotFound)
	}
	return fmt.Errorf("unknown operation kind %d", o.Kind)
}

// tolerate treats the given error as success.
func tolerate(err, ok error) error {
	if errors.Is(err, ok) {
		return nil
	}
	return err
}

// addrsOf returns the addresses of a family, for filtering kernel reads.
func addrsOf(addrs []netip.Addr, family v1.IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}
