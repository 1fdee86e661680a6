package proxier

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// A full sync reads the kernel back, ensures the rules and repairs every
// difference from the desired state. It runs in steps (FullStep), so that
// the runner can sync a change recorded meanwhile between two of them
// instead of after the whole pass, which on a node of thousands of
// Services takes seconds:
//
//  1. begin: ensure kipvs0 and read the VIPs into a new mirror of the
//     kernel; then a step per set, reading its members into it, and one
//     for the virtual servers (one dump), which makes it the mirror
//     (p.applied); each virtual server keeps the real servers the old
//     mirror had for it, until step 2 reads them. Then, a step each: the
//     sets, each table's rules (one iptables-save, and one
//     iptables-restore if anything differs), the sweep, and the anchors
//     and local routes.
//  2. chunks, in key order, for about a step's budget each: read the real
//     servers of each virtual server, put them in the mirror, and repair
//     those virtual servers (and their own set members and address).
//  3. end: repair every address and set member, retry what failed, and
//     remove the routes no longer configured.
//
// A step reads a piece of the kernel and writes it into the mirror in one
// go, so between two steps the mirror is as exact as after an incremental
// sync, and an incremental sync planned against it is right; until the
// new mirror replaces the old one, what such a sync did is replayed on
// both (Proxier.mirror). The first full sync (no mirror yet) reads
// everything, every real server included, in its first step.
type fullPass struct {
	// reading, until the read ends, is the new mirror being read, and
	// toRead the sets still to read into it.
	reading *State
	toRead  []iptables.Set
	// keys are the virtual servers still to repair, in key order.
	keys []ipvs.ServiceKey
	// unread are those whose real servers the mirror has from before the
	// pass: they are read before they are repaired.
	unread map[ipvs.ServiceKey]bool
	// rules, until the rules are ensured, are the steps left of that
	// (nil in dry-run mode), and missing the sets ReadState found missing;
	// routed is set once the anchors and routes are (step 1's tail).
	rules    *ruleSync
	missing  []iptables.Set
	setsDone bool
	routed   bool
	// stale are the local routes to remove at the end.
	stale []netip.Prefix
	// failing are the retries pending when the pass began, with their
	// attempts then: one that failed no more since is over at the end
	// (the pass planned every key again).
	failing map[*retry]int
	// dryPlanned, in dry-run mode, is what the pass logged.
	dryPlanned map[string]struct{}
}

// FullStep runs the next step of a full sync, starting one if none is in
// progress, for about budget (0: the whole sync); done reports that the
// full sync ended. An error ends it: the node as a whole is not synced, and
// the next full sync starts from a new read of everything. Incremental
// syncs (Sync(false)) may run between steps.
func (p *Proxier) FullStep(budget time.Duration) (done bool, err error) {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	defer p.syncHealth()
	defer p.tally()
	if p.pass == nil {
		p.seedMarks()
		ch := p.takeChanges()
		p.takeTriggers(ch.triggers)
		p.absorb(ch, p.updateNodeInputs(ch, true), discard()) // the full scope covers it
	}
	return p.fullStep(budget)
}

// StepReady is the StepWaiter's: while a step's iptables-save runs, the
// channel that closes when it ends.
func (p *Proxier) StepReady() <-chan struct{} {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	if p.pass == nil || p.pass.rules == nil || p.pass.rules.save == nil {
		return nil
	}
	return p.pass.rules.save.done
}

// fullSync runs a whole full sync, dropping one in progress.
func (p *Proxier) fullSync() error {
	p.pass = nil
	for {
		done, err := p.fullStep(0)
		if done || err != nil {
			return err
		}
	}
}

// fullStep runs one step of the pass (see fullPass) and logs, at debug
// level, what it was and how long it took: the longest step is how long a
// change recorded meanwhile may wait.
func (p *Proxier) fullStep(budget time.Duration) (bool, error) {
	var err error
	began, step, keys := p.clock.Now(), "", 0
	defer func() {
		p.log.Debug("full sync step", zap.String("step", step), zap.Int("virtualServers", keys),
			zap.Duration("took", p.clock.Since(began)), zap.Error(err))
	}()
	switch {
	case p.pass == nil:
		step = "begin"
		err = p.beginPass()
	case p.pass.reading != nil:
		step = "read virtual servers"
		if len(p.pass.toRead) > 0 {
			step = "read set " + p.pass.toRead[0].Name
		}
		err = p.readStep()
	case !p.pass.routed:
		step, err = p.rulesStep()
	case len(p.pass.keys) > 0:
		step, keys = "repair", len(p.pass.keys)
		err = p.repairChunk(budget)
		keys -= len(p.pass.keys)
	default:
		step = "end"
		err = p.endPass()
		if err == nil {
			p.pass = nil
			return true, nil
		}
	}
	if err != nil {
		p.pass, p.applied = nil, nil
		return true, err
	}
	return false, nil
}

// beginPass is step 1's first: it ensures kipvs0 and reads the addresses.
// The sets and the virtual servers are read in steps after it (readStep),
// into a new mirror that the incremental syncs in between keep up to date
// as they do the old one, which they plan against until the read ends;
// the first full sync, with no mirror to plan against, reads them all at
// once.
func (p *Proxier) beginPass() error {
	if !p.opts.DryRun {
		// Someone may have deleted or downed kipvs0; without it no VIP is
		// accepted. Like `ip link add`, it writes only when something is
		// missing.
		if err := p.kernel.Addrs.EnsureLink(); err != nil {
			return err
		}
	}
	p.readKubeProxy()
	pass := &fullPass{unread: map[ipvs.ServiceKey]bool{}, failing: map[*retry]int{}, dryPlanned: map[string]struct{}{},
		reading: NewState(), toRead: slices.Clone(p.rules.Sets)}
	for _, r := range p.failures {
		pass.failing[r] = r.attempts
	}
	if err := readAddrs(p.kernel, p.opts.Build.Family, pass.reading); err != nil {
		return fmt.Errorf("reading kernel state: %w", err)
	}
	p.pass = pass
	for p.applied == nil && pass.reading != nil {
		if err := p.readStep(); err != nil {
			return err
		}
	}
	return nil
}

// readStep reads one set, or, once the sets are read, the virtual servers,
// which ends the read (see endRead).
func (p *Proxier) readStep() error {
	pass := p.pass
	if len(pass.toRead) == 0 {
		return p.endRead()
	}
	set := pass.toRead[0]
	pass.toRead = pass.toRead[1:]
	found, err := readSet(p.kernel, set, pass.reading)
	if err != nil {
		return fmt.Errorf("reading kernel state: %w", err)
	}
	if !found {
		pass.missing = append(pass.missing, set)
	}
	return nil
}

// endRead reads the virtual servers (one dump) and makes the new mirror
// the mirror: each virtual server keeps the real servers the old one had
// for it, until its chunk reads them; the first full sync reads them all
// now.
func (p *Proxier) endRead() error {
	pass, old, current := p.pass, p.applied, p.pass.reading
	adopt := func(k ipvs.ServiceKey, bound bool) bool {
		_, wanted := p.want.state.Servers[k]
		return wanted && (bound || p.takingOver(k)) && !p.excluded(k.Addr)
	}
	if err := readServers(p.kernel, p.opts.Build.Family, current, adopt); err != nil {
		return fmt.Errorf("reading kernel state: %w", err)
	}
	for k, vs := range current.Servers {
		if old != nil {
			vs.Dests = old.Servers[k].Dests
			pass.unread[k] = true
		} else {
			var err error
			if vs.Dests, err = readDests(p.kernel, k); err != nil {
				return fmt.Errorf("reading kernel state: %w", err)
			}
		}
		current.Servers[k] = vs
	}
	if !p.opts.DryRun {
		pass.rules = newRuleSync(p.kernel, p.rules)
	}
	for _, m := range current.foreignMarks {
		if name, ok := p.marks.avoid(m); ok {
			p.rebuild(name, discard()) // the pass covers every key
		}
	}
	keys := map[ipvs.ServiceKey]bool{}
	for _, m := range []map[ipvs.ServiceKey]VirtualServer{current.Servers, p.want.state.Servers} {
		for k := range m {
			keys[k] = true
		}
	}
	for k := range p.drainSince {
		keys[k] = true
	}
	pass.keys = slices.SortedFunc(maps.Keys(keys), ipvs.ServiceKey.Compare)
	p.applied, pass.reading = current, nil
	return nil
}

// maxChunk bounds the virtual servers one step repairs, so that a step
// that reads nothing (the first full sync read everything at once) does
// not plan and apply them all in one go.
const maxChunk = 256

// rulesStep is one of step 1's tail: the sets, then a table, then the
// sweep (each a step), then the anchors and the routes, after the rules:
// the filter rejects what host ports would answer on a Service CIDR before
// its route makes it local. It returns the step's name for the log.
func (p *Proxier) rulesStep() (step string, err error) {
	rs := p.pass.rules
	switch {
	case rs != nil && !p.pass.setsDone:
		step, err = "sets", rs.ensureSets(p.pass.missing)
		p.pass.setsDone = true
	case rs != nil && len(rs.tables) > 0 && rs.save == nil:
		// Its own step, so that the runner syncs changes while it runs
		// (StepReady); the next step reads it and fixes the table.
		rs.startSave()
		return "save " + rs.tables[0], nil
	case rs != nil && len(rs.tables) > 0:
		step = "rules " + rs.tables[0]
		err = rs.nextTable()
	case rs != nil:
		step, err = "sweep", rs.sweep()
		p.pass.rules = nil
	default:
		if err := p.bindAnchors(p.applied); err != nil {
			return "routes", err
		}
		p.pass.stale, err = p.addRoutes()
		p.pass.routed = true
		return "routes", err
	}
	for _, c := range rs.changed {
		p.log.Info("rules changed", zap.String("op", c))
	}
	rs.changed = nil
	if err != nil {
		return step, fmt.Errorf("ensuring rules: %w", err)
	}
	return step, nil
}

// repairChunk is a step 2: it takes keys until budget is spent reading
// them (at least one, at most maxChunk; no bound for a zero budget), then
// plans and applies those.
func (p *Proxier) repairChunk(budget time.Duration) error {
	began := p.clock.Now()
	var chunk, read, unread []ipvs.ServiceKey
	more := func() bool {
		return len(chunk) == 0 || budget <= 0 || (len(chunk) < maxChunk && p.clock.Since(began) < budget)
	}
	for len(p.pass.keys) > 0 && more() {
		k := p.pass.keys[0]
		p.pass.keys = p.pass.keys[1:]
		fresh, err := p.readServer(k)
		if err != nil {
			return fmt.Errorf("reading kernel state: %w", err)
		}
		chunk = append(chunk, k)
		if fresh {
			read = append(read, k)
		} else {
			unread = append(unread, k)
		}
	}
	// The connection counts of what was just read are fresh; those of
	// the rest the mirror may have from an operation, not the kernel.
	sc := NewScope()
	p.updateDrains(p.applied, read, true, sc)
	p.updateDrains(p.applied, unread, false, sc)
	for _, k := range chunk {
		p.scopeServer(sc, k)
	}
	p.applyPass(Plan(p.want.state, p.applied, sc))
	return nil
}

// applyPass applies a step's plan: what fails is recorded for retry, but
// no retry ends before the pass does (see endPass).
func (p *Proxier) applyPass(ops []Op) {
	p.dryFull = true
	failed := p.run(ops)
	p.dryFull = false
	p.recordFailures(failed)
	p.avoidForeignMarks(failed)
}

// readServer puts the real servers the kernel holds for k into the mirror,
// if the pass has not read them yet and the mirror has k, and reports
// whether it read them. A virtual server gone since the bulk read leaves
// the mirror.
func (p *Proxier) readServer(k ipvs.ServiceKey) (bool, error) {
	if !p.pass.unread[k] {
		return false, nil
	}
	delete(p.pass.unread, k)
	vs, ok := p.applied.Servers[k]
	if !ok {
		return false, nil // an incremental sync deleted it since
	}
	dests, err := readDests(p.kernel, k)
	if errors.Is(err, ipvs.ErrNotFound) {
		delete(p.applied.Servers, k)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Shared with the desired state when equal (connection counts
	// included: those of a quiet server are 0), as applyAll shares.
	if w := p.want.state.Servers[k].Dests; slices.Equal(dests, w) {
		dests = w
	}
	vs.Dests = dests
	p.applied.Servers[k] = vs
	return true, nil
}

// scopeServer puts virtual server k into sc with what must change in the
// same plan: its ownership record, its owner's set members of it, and its
// address. Everything else of the sets and addresses is the end's.
func (p *Proxier) scopeServer(sc *Scope, k ipvs.ServiceKey) {
	owner, owned := p.want.owner(k)
	addOnce(sc.Servers, k, owner)
	addOnce(sc.Entries, ownedEntry(p.opts.Build.Family, k), owner)
	if owned {
		for _, e := range p.want.part(owner, k).Entries {
			addOnce(sc.Entries, e, owner)
		}
	}
	if !k.IsMark() {
		addOnce(sc.Addrs, k.Addr, owner)
	}
}

// endPass is step 3.
func (p *Proxier) endPass() error {
	// The chunks repaired the virtual servers with their records and set
	// members: a record goes in only with its virtual server (a Service
	// refused for someone else's virtual server has none), and a set
	// member of a virtual server that failed waits for its retry.
	p.applyPass(Plan(p.want.state, p.applied, p.want.endScope(p.applied)))
	for name, r := range p.failures {
		if attempts, ok := p.pass.failing[r]; ok && attempts == r.attempts {
			p.log.Info("operations succeed again", zap.Stringer("service", name), zap.Int("failedAttempts", r.attempts))
			delete(p.failures, name)
		}
	}
	if p.opts.DryRun {
		p.dryPlanned = p.pass.dryPlanned
	}
	// A Service CIDR no longer configured goes only now that its
	// ClusterIPs are bound one by one: none stops being accepted.
	if err := p.delRoutes(p.pass.stale); err != nil {
		return err
	}
	p.finishTakeOver()
	p.programmed()
	p.deleteStaleFlows()
	return nil
}
