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
//  1. begin: ensure kipvs0, read the VIPs into a new mirror of the
//     kernel and start reading the sets' members and the virtual servers
//     (one dump) in the background, while the runner syncs what changes
//     (StepReady); then read: put what the background read found into
//     the new mirror and make it the mirror (p.applied); each virtual
//     server keeps the real servers the old mirror had for it, until
//     step 2 reads them. Then, a step each: the
//     sets, each table's rules (one iptables-save, and one
//     iptables-restore if anything differs), the sweep, and the anchors
//     and local routes.
//  2. chunks, in key order, for about a step's budget each (reading
//     and repairing): read the real servers of each virtual server, put
//     them in the mirror, and repair those virtual servers (and their own
//     set members and address).
//  3. end: repair every address and set member, retry what failed, and
//     remove the routes no longer configured.
//
// A step reads a piece of the kernel and writes it into the mirror in one
// go, so between two steps the mirror is as exact as after an incremental
// sync, and an incremental sync planned against it is right; until the
// new mirror replaces the old one, what such a sync did is replayed on
// both (Proxier.mirror), and the set members and virtual servers it
// touched while the background read ran, which that read may have seen
// before or after the change, are taken from the old mirror. The first
// full sync (no mirror yet) reads everything, every real server included,
// in its first step.
type fullPass struct {
	// reading, until the read ends, is the new mirror being read, read
	// the read of the sets and virtual servers running in the background,
	// and touched what incremental syncs changed since it started.
	reading *State
	read    *kernelRead
	touched touched
	// keys are the virtual servers still to repair, in key order.
	keys []ipvs.ServiceKey
	// readAll is set when the read read every real server (the first
	// full sync); otherwise each chunk reads those of its keys the mirror
	// has before it repairs them.
	readAll bool
	// rules, until the rules are ensured, are the steps left of that
	// (nil in dry-run mode), and missing the sets the read found missing;
	// routed is set once the anchors and routes are (step 1's tail).
	rules    *ruleSync
	missing  []iptables.Set
	setsDone bool
	routed   bool
	// applyPerKey is how long the last chunk took to plan and apply, per
	// virtual server, after it read them (unset in the first full sync).
	applyPerKey time.Duration
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

// StepReady is the StepWaiter's: while the background read a pass
// begins with, or a step's iptables-save, runs, the channel that closes
// when it ends.
func (p *Proxier) StepReady() <-chan struct{} {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	switch pass := p.pass; {
	case pass == nil:
		return nil
	case pass.reading != nil:
		return pass.read.done
	case pass.rules != nil && pass.rules.save != nil:
		return pass.rules.save.done
	}
	return nil
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
		step = "read"
		err = p.endRead()
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

// beginPass is step 1's first: it ensures kipvs0, reads the addresses and
// starts reading the sets and the virtual servers in the background, into
// a new mirror that the incremental syncs in between keep up to date as
// they do the old one, which they plan against until the read ends (see
// endRead); the first full sync, with no mirror to plan against, waits
// for that read and ends it at once.
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
	pass := &fullPass{failing: map[*retry]int{}, dryPlanned: map[string]struct{}{},
		reading: NewState(), touched: newTouched()}
	for _, r := range p.failures {
		pass.failing[r] = r.attempts
	}
	if err := readAddrs(p.kernel, p.opts.Build.Family, pass.reading); err != nil {
		return fmt.Errorf("reading kernel state: %w", err)
	}
	pass.read = startRead(p.kernel, p.opts.Build.Family, p.rules.Sets)
	p.pass = pass
	if p.applied == nil {
		return p.endRead()
	}
	return nil
}

// endRead is step 1's second: it waits for the background read, puts
// what it found into the new mirror, and makes that the mirror: each
// virtual server keeps the real servers the old one had for it, until its
// chunk reads them; the first full sync reads them all now.
func (p *Proxier) endRead() error {
	pass, old, current := p.pass, p.applied, p.pass.reading
	r := pass.read
	<-r.done
	if r.err != nil {
		return fmt.Errorf("reading kernel state: %w", r.err)
	}
	// The replays on current's members and virtual servers are dropped:
	// the read has them, or touched.
	current.Entries, current.Servers, pass.missing = r.entries, r.servers, r.missing
	// What an incremental sync did since the read began may be missing
	// from it; the old mirror has it (mirror replays it there).
	if old != nil {
		for e := range pass.touched.entries {
			if _, ok := old.Entries[e]; ok {
				current.Entries[e] = struct{}{}
			} else {
				delete(current.Entries, e)
			}
		}
	}
	adopt := func(k ipvs.ServiceKey, bound bool) bool {
		_, wanted := p.want.state.Servers[k]
		return wanted && (bound || p.takingOver(k)) && !p.excluded(k.Addr)
	}
	adoptServers(r.others, p.opts.Build.Family, current, adopt)
	if old != nil {
		for k := range pass.touched.servers {
			if vs, ok := old.Servers[k]; ok {
				current.Servers[k] = vs
			} else {
				delete(current.Servers, k)
			}
		}
	}
	for k, vs := range current.Servers {
		if old != nil {
			vs.Dests = old.Servers[k].Dests
		} else {
			var err error
			if vs.Dests, err = readDests(p.kernel, k); err != nil {
				return fmt.Errorf("reading kernel state: %w", err)
			}
		}
		current.Servers[k] = vs
	}
	pass.readAll = old == nil
	if !p.opts.DryRun {
		pass.rules = newRuleSync(p.kernel, p.rules)
	}
	for _, m := range current.foreignMarks {
		if name, ok := p.marks.avoid(m); ok {
			p.rebuild(name, discard()) // the pass covers every key
		}
	}
	pass.keys = p.passKeys(current, r)
	p.applied, pass.reading, pass.read, pass.touched = current, nil, nil, touched{}
	return nil
}

// passKeys are the keys a pass repairs, in order: those the read found
// recorded (in order), merged with every other the new mirror (adopted or
// added since the read), the desired state or a drain has, sorted apart:
// few but on a node's first sync.
func (p *Proxier) passKeys(mirror *State, r *kernelRead) []ipvs.ServiceKey {
	inMirror := func(k ipvs.ServiceKey) bool {
		_, ok := mirror.Servers[k]
		return ok
	}
	extra := map[ipvs.ServiceKey]bool{}
	for _, svc := range r.others {
		if inMirror(svc.Key) { // adopted
			extra[svc.Key] = true
		}
	}
	for k := range p.want.state.Servers {
		if !inMirror(k) {
			extra[k] = true
		}
	}
	for k := range p.drainSince {
		if !inMirror(k) {
			extra[k] = true
		}
	}
	// A virtual server touched since the read: one added is in the
	// mirror; one deleted is dropped from the read's keys (and is in
	// extra if wanted or draining).
	dropped := map[ipvs.ServiceKey]bool{}
	for k := range p.pass.touched.servers {
		if inMirror(k) {
			extra[k] = true
		} else {
			dropped[k] = true
		}
	}
	read := r.keys
	if len(extra) == 0 && len(dropped) == 0 {
		return read
	}
	more := slices.SortedFunc(maps.Keys(extra), ipvs.ServiceKey.Compare)
	keys := make([]ipvs.ServiceKey, 0, len(read)+len(more))
	for len(read) > 0 || len(more) > 0 {
		switch {
		case len(more) == 0 || (len(read) > 0 && read[0].Compare(more[0]) < 0):
			if !dropped[read[0]] {
				keys = append(keys, read[0])
			}
			read = read[1:]
		case len(read) > 0 && read[0] == more[0]:
			read = read[1:] // in both
		default:
			keys, more = append(keys, more[0]), more[1:]
		}
	}
	return keys
}

// maxChunk bounds the virtual servers one step repairs, so that a step
// that reads nothing (the first full sync read everything at once) does
// not plan and apply them all in one go.
const maxChunk = 256

// rulesStep is one of step 1's tail: the sets, then the save of the
// tables, then their writes, then the sweep (each a step), then the
// anchors and the routes, after the rules:
// the filter rejects what host ports would answer on a Service CIDR before
// its route makes it local. It returns the step's name for the log.
func (p *Proxier) rulesStep() (step string, err error) {
	rs := p.pass.rules
	switch {
	case rs != nil && !p.pass.setsDone:
		step, err = "sets", rs.ensureSets(p.pass.missing)
		p.pass.setsDone = true
	case rs != nil && rs.tables != nil && rs.save == nil:
		// Its own step, so that the runner syncs changes while it runs
		// (StepReady); the next step reads it and fixes the tables.
		rs.startSave()
		return "save tables", nil
	case rs != nil && rs.tables != nil:
		step, err = "rules", rs.writeTables()
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
// them and, by the last chunk's pace, planning and applying them (at least
// one, at most maxChunk; no bound for a zero budget), then plans and
// applies those. The first full sync reads nothing here and writes
// nearly everything: its chunks are maxChunk keys.
func (p *Proxier) repairChunk(budget time.Duration) error {
	began := p.clock.Now()
	var chunk, read, unread []ipvs.ServiceKey
	more := func() bool {
		if len(chunk) == 0 || budget <= 0 {
			return true
		}
		after := time.Duration(len(chunk)+1) * p.pass.applyPerKey
		return len(chunk) < maxChunk && p.clock.Since(began)+after < budget
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
	applying := p.clock.Now()
	// The connection counts of what was just read are fresh; those of
	// the rest the mirror may have from an operation, not the kernel.
	sc := NewScope()
	p.updateDrains(p.applied, read, true, sc)
	p.updateDrains(p.applied, unread, false, sc)
	for _, k := range chunk {
		p.scopeServer(sc, k)
	}
	p.applyPass(Plan(p.want.state, p.applied, sc))
	if !p.pass.readAll {
		p.pass.applyPerKey = p.clock.Since(applying) / time.Duration(len(chunk))
	}
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
// unless the read read them all (the first full sync) or the mirror lacks
// k, and reports whether it read them. A virtual server gone since the
// bulk read leaves the mirror.
func (p *Proxier) readServer(k ipvs.ServiceKey) (bool, error) {
	if p.pass.readAll {
		return false, nil
	}
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
	// When the addresses and set members agree already, as they nearly
	// always do, the end plans nothing: checking that costs a lookup per
	// member, building its scope several (at 5,000 Services, most of a
	// slow node's 0.1 s end step).
	if !p.want.state.membersAgree(p.applied) {
		p.applyPass(Plan(p.want.state, p.applied, p.want.endScope(p.applied)))
	}
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
