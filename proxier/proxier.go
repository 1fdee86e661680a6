// Package proxier turns Services and EndpointSlices into kernel state. It
// records what changed (event handlers never touch the kernel), builds the
// desired State per Service with the pure BuildService, diffs it with the
// pure Plan, and runs the operations in a safe order with Apply.
package proxier

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/healthcheck"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// Options is what the proxier is told at start.
type Options struct {
	Build BuildConfig
	Rules RuleConfig
	// DryRun computes and logs every plan but never writes to the kernel
	// (it still reads it, to plan against what is there).
	DryRun bool
	// DrainTimeout bounds how long a TCP or SCTP real server whose endpoint
	// left stays at weight 0 so its connections can finish; 0 deletes it at
	// once.
	DrainTimeout time.Duration
	// RetryMin and RetryMax bound the per-Service retry delay after a
	// failed operation, doubled at each failure; zero values are 1s and
	// 30s.
	RetryMin, RetryMax time.Duration
	// Clock is the time source of drains and retries; nil is the real clock.
	Clock clock.Clock
	// NodePorts says which node addresses NodePorts are served on.
	NodePorts NodePortConfig
	// Health serves the health-check node ports; nil serves none.
	Health HealthServer
	// Metrics hears what the proxier does; nil: nothing does.
	Metrics Metrics
	// Events records the warnings about one Service as Events on it; nil
	// records none.
	Events EventRecorder
	// ExcludeCIDRs (ipvs.excludeCIDRs) hold virtual servers kube-ipvs never
	// adopts: one in them that kube-ipvs' record does not name is someone
	// else's even when its address is bound on kipvs0 and a Service wants
	// it.
	ExcludeCIDRs []netip.Prefix
	// TakeOver, when set, takes the node over from a stopped kube-proxy in
	// IPVS mode (see TakeOver).
	TakeOver *TakeOver
}

// EventRecorder records a Warning Event on a Service (package events).
// It must not block.
type EventRecorder interface {
	Service(svc *v1.Service, reason, note string)
}

// NodePortConfig is the nodePortAddresses configuration: the Node's
// primary addresses, or the local addresses inside CIDRs.
type NodePortConfig struct {
	Primary bool
	CIDRs   []netip.Prefix
}

// HealthServer serves the health-check node ports of the Services with
// externalTrafficPolicy Local (package healthcheck).
type HealthServer interface {
	Sync(addrs []netip.Addr, services []healthcheck.Service) error
}

// Proxier holds the snapshot of the API objects and what was last applied.
// Record methods may be called from any goroutine; Sync and the other
// methods from one at a time.
type Proxier struct {
	log    *zap.Logger
	kernel Kernel
	opts   Options
	rules  Rules
	clock  clock.Clock
	viewMu sync.RWMutex // held by Sync for writing, by View for reading (inspect.go)

	mu      sync.Mutex // guards pending and skipped
	pending changes
	skipped map[Reason]int
	metrics Metrics
	started time.Time // endpoint changes triggered before are not timed

	// Owned by Sync.
	services     map[types.NamespacedName]*v1.Service
	bySvc        map[types.NamespacedName][]*discovery.EndpointSlice // in name order
	sliceSvc     map[types.NamespacedName]types.NamespacedName
	node         *v1.Node     // this node, as last seen
	local        []netip.Addr // the node's addresses but kipvs0's, as last read
	build        BuildConfig  // opts.Build with the node-wide inputs filled in
	health       map[types.NamespacedName]Health
	healthSync   bool // health changed since the health server was last synced
	healthFailed bool // the health server's last Sync failed: try again
	want         *desired
	marks        *marks // the firewall marks of short-circuit virtual servers
	marksSeeded  bool   // marks has read what the kernel held at start
	applied      *State // what the kernel holds, as far as we know; nil: read it back
	drainSince   map[ipvs.ServiceKey]map[netip.AddrPort]time.Time
	failures     map[types.NamespacedName]*retry
	staleFlows   []conntrack.Flow // UDP conntrack entries still to delete
	flowErr      string           // the last conntrack error logged
	// triggers are the last-change-trigger-times of endpoint changes not
	// yet programmed, per Service; noLocal the Services whose Local
	// policies have no endpoint here.
	triggers map[types.NamespacedName][]time.Time
	noLocal  map[types.NamespacedName]NoLocal
	// skips are what BuildService last skipped of each Service that has
	// any, for View.
	skips map[types.NamespacedName][]Skip
	// dryPlanned, in dry-run mode, is every operation logged since the
	// last full sync that is still planned; dryFull is set while a full
	// sync applies.
	dryPlanned map[string]struct{}
	dryFull    bool
	// kubeProxy is what a take-over read of kube-proxy's; tookOver is set
	// once nothing of kube-proxy is left.
	kubeProxy *kubeProxyState
	tookOver  bool
	// pass is the full sync in progress when it runs in steps (FullStep).
	pass *fullPass
}

// changes is what the event handlers recorded since the last sync. A nil
// object records a deletion.
type changes struct {
	services map[types.NamespacedName]*v1.Service
	slices   map[types.NamespacedName]*CachedSlice
	node     *v1.Node
	// addrs records that the node's addresses may have changed.
	addrs bool
	// triggers are the last-change-trigger-times of the slices recorded,
	// per Service.
	triggers map[types.NamespacedName][]time.Time
}

// New returns a proxier. It does nothing to the kernel.
func New(log *zap.Logger, k Kernel, opts Options) *Proxier {
	if opts.RetryMin <= 0 {
		opts.RetryMin = time.Second
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(30*time.Second, opts.RetryMin)
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	m := opts.Metrics
	if m == nil {
		m = nopMetrics{}
	}
	p := &Proxier{
		log:        log,
		kernel:     k,
		opts:       opts,
		rules:      BuildRules(opts.Rules),
		clock:      clk,
		skipped:    map[Reason]int{},
		services:   map[types.NamespacedName]*v1.Service{},
		bySvc:      map[types.NamespacedName][]*discovery.EndpointSlice{},
		sliceSvc:   map[types.NamespacedName]types.NamespacedName{},
		want:       newDesired(opts.Build.Family),
		marks:      newMarks(opts.Rules.MasqueradeBit),
		drainSince: map[ipvs.ServiceKey]map[netip.AddrPort]time.Time{},
		failures:   map[types.NamespacedName]*retry{},
		build:      opts.Build,
		health:     map[types.NamespacedName]Health{},
		metrics:    m,
		started:    clk.Now(),
		triggers:   map[types.NamespacedName][]time.Time{},
		noLocal:    map[types.NamespacedName]NoLocal{},
		skips:      map[types.NamespacedName][]Skip{},
	}
	p.pending = newChanges()
	if a := anchors(opts.Build.ServiceCIDRs); len(a) > 0 {
		p.want.replace(anchorName, &Fragment{Addrs: a}, NewScope())
	}
	return p
}

func newChanges() changes {
	return changes{
		services: map[types.NamespacedName]*v1.Service{},
		slices:   map[types.NamespacedName]*CachedSlice{},
		triggers: map[types.NamespacedName][]time.Time{},
	}
}

// OnService records an added or updated Service.
func (p *Proxier) OnService(svc *v1.Service) { p.recordService(svc, svc) }

// OnServiceDelete records a deleted Service.
func (p *Proxier) OnServiceDelete(svc *v1.Service) { p.recordService(svc, nil) }

// OnSlice records an added or updated EndpointSlice.
func (p *Proxier) OnSlice(s *discovery.EndpointSlice) { p.recordSlice(cachedOf(s), false) }

// OnSliceDelete records a deleted EndpointSlice.
func (p *Proxier) OnSliceDelete(s *discovery.EndpointSlice) { p.recordSlice(cachedOf(s), true) }

func (p *Proxier) recordService(key, svc *v1.Service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending.services[types.NamespacedName{Namespace: key.Namespace, Name: key.Name}] = svc
	p.metrics.ServiceChanged(len(p.pending.services))
}

// recordSlice records s, or its deletion.
func (p *Proxier) recordSlice(s *CachedSlice, deleted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	if deleted {
		p.pending.slices[key] = nil
	} else {
		p.pending.slices[key] = s
	}
	// As kube-proxy: a deleted slice's trigger time is that of its last
	// update, so the Service's pending ones are dropped, not timed; one
	// from before the proxy started is not timed either.
	svc := types.NamespacedName{Namespace: s.Namespace, Name: s.Service}
	if deleted {
		p.pending.triggers[svc] = nil // and those a sync took already
	} else if t := s.Trigger; t.After(p.started) && svc.Name != "" {
		p.pending.triggers[svc] = append(p.pending.triggers[svc], t)
	}
	p.metrics.SliceChanged(len(p.pending.slices))
}

// OnNode records this node's Node object.
func (p *Proxier) OnNode(n *v1.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending.node = n
}

// OnLocalAddrsChanged records that an address was added to or removed from
// one of the node's interfaces.
func (p *Proxier) OnLocalAddrsChanged() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending.addrs = true
}

// Skipped returns how many times each kind of bad input was skipped.
func (p *Proxier) Skipped() map[Reason]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.skipped)
}

// Sync brings the kernel in line with the recorded changes. A full sync
// reads the kernel back, re-checks the rules and repairs any drift; an
// incremental one works from what was last applied and touches only the
// Services that changed (and those whose retry is due), so with nothing
// changed it neither reads nor writes the kernel. A failed operation is
// confined to its Service, which is retried with backoff (see RetryAt);
// Sync returns an error only when the node as a whole could not be synced
// (the kernel could not be read, the rules not written), and then the next
// sync is full.
func (p *Proxier) Sync(full bool) error {
	p.viewMu.Lock()
	defer p.viewMu.Unlock()
	defer p.syncHealth()
	p.seedMarks()
	ch := p.takeChanges()
	p.takeTriggers(ch.triggers)
	defer p.tally()
	if full || p.applied == nil {
		p.absorb(ch, p.updateNodeInputs(ch, true), discard()) // the full scope covers it
		return p.fullSync()
	}
	sc := p.absorb(ch, p.updateNodeInputs(ch, false), NewScope())
	p.addRetries(sc, false)
	if !sc.Empty() {
		keys := slices.SortedFunc(maps.Keys(sc.Servers), ipvs.ServiceKey.Compare)
		p.updateDrains(p.applied, keys, false, sc)
		p.apply(Plan(p.want.state, p.applied, sc))
	}
	p.programmed()
	p.deleteStaleFlows()
	return nil
}

func (p *Proxier) takeChanges() changes {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.pending
	p.pending = newChanges()
	p.metrics.ChangesTaken()
	return ch
}

// absorb folds changes into the snapshot, rebuilds the fragments of the
// Services they touch (every Service when all is set: a node-wide input
// changed) and puts the keys whose desired state moved into sc, which it
// returns.
func (p *Proxier) absorb(ch changes, all bool, sc *Scope) *Scope {
	dirty := map[types.NamespacedName]bool{}
	if all {
		for name := range p.services {
			dirty[name] = true
		}
	}
	for name, svc := range ch.services {
		if svc == nil {
			delete(p.services, name)
		} else {
			p.services[name] = svc
		}
		dirty[name] = true
	}
	for key, s := range ch.slices {
		p.absorbSlice(key, s, dirty)
	}
	// In name order, so that the Services that get new short-circuit marks
	// in one sync get them in the same order every time.
	for _, name := range slices.SortedFunc(maps.Keys(dirty), compareNames) {
		p.rebuild(name, sc)
	}
	return sc
}

// absorbSlice files a slice under the Service its label names, moving it
// if the label changed.
func (p *Proxier) absorbSlice(key types.NamespacedName, s *CachedSlice, dirty map[types.NamespacedName]bool) {
	if old, ok := p.sliceSvc[key]; ok {
		if i, found := slices.BinarySearchFunc(p.bySvc[old], key, compareSlice); found {
			p.bySvc[old] = slices.Delete(p.bySvc[old], i, i+1)
		}
		if len(p.bySvc[old]) == 0 {
			delete(p.bySvc, old)
		}
		delete(p.sliceSvc, key)
		dirty[old] = true
	}
	if s == nil {
		return
	}
	svcName := s.Service
	if svcName == "" {
		p.count(types.NamespacedName{Namespace: s.Namespace}, []Skip{{Reason: ReasonSliceWithoutService, Detail: "slice " + key.String()}})
		return
	}
	name := types.NamespacedName{Namespace: s.Namespace, Name: svcName}
	// A slice per Service is the rule: a sorted list, not a map, is what
	// it costs least to keep for thousands of them.
	i, _ := slices.BinarySearchFunc(p.bySvc[name], key, compareSlice)
	p.bySvc[name] = slices.Insert(p.bySvc[name], i, s.EndpointSlice)
	p.sliceSvc[key] = name
	dirty[name] = true
}

// rebuild recomputes one Service's fragment.
func (p *Proxier) rebuild(name types.NamespacedName, sc *Scope) {
	svc := p.services[name]
	if svc == nil {
		p.count(name, p.want.replace(name, nil, sc))
		p.marks.assign(name, nil)
		p.setHealth(name, nil)
		p.setNoLocal(name, NoLocal{})
		delete(p.skips, name)
		return
	}
	f, skips := BuildService(svc, p.slicesOf(name), p.build)
	if len(skips) > 0 {
		p.skips[name] = skips
	} else {
		delete(p.skips, name)
	}
	p.count(name, skips)
	p.count(name, p.marks.assign(name, f))
	p.count(name, p.want.replace(name, f, sc))
	p.setHealth(name, f.Health)
	p.setNoLocal(name, f.NoLocal)
}

// seedMarks reads, once, the short-circuit marks the kernel holds from an
// earlier run, so that each Service gets its marks back. Failing to read
// them costs only stable marks: the next full sync repairs the rest.
func (p *Proxier) seedMarks() {
	if p.marksSeeded {
		return
	}
	p.marksSeeded = true
	set := setName(SetShortCircuit, p.opts.Build.Family)
	entries, err := p.kernel.Sets.ListEntries(set)
	if err != nil && !errors.Is(err, iptables.ErrNotFound) {
		p.log.Warn("reading the short-circuit marks of the last run; marks may move", zap.Error(err))
	}
	p.marks.seedFrom(set, entries)
}

// count counts and logs skipped input; normal input (Reason.Normal) is
// only logged, at debug.
func (p *Proxier) count(name types.NamespacedName, skips []Skip) {
	if len(skips) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range skips {
		fields := []zap.Field{zap.Stringer("service", name), zap.String("reason", string(s.Reason)), zap.String("detail", s.Detail)}
		if s.Reason.Normal() {
			p.log.Debug("not programmed", fields...)
			continue
		}
		p.skipped[s.Reason]++
		p.metrics.Skipped(string(s.Reason))
		p.log.Warn("skipping bad input", fields...)
		about := name
		if s.About.Name != "" {
			about = s.About
		}
		if svc := p.services[about]; svc != nil && p.opts.Events != nil {
			p.opts.Events.Service(svc, string(s.Reason), s.Detail)
		}
	}
}

// apply runs or, in dry-run mode, logs the plan, and brings the mirror of
// the kernel (p.applied) up to date with what took effect. Failures are
// recorded per Service for retry (see retries.go).
func (p *Proxier) apply(ops []Op) {
	failed := p.run(ops)
	p.settle(failed)
	p.avoidForeignMarks(failed)
}

// run runs or, in dry-run mode, logs the plan, brings the mirror up to
// date with what took effect, and returns what failed, by Service.
func (p *Proxier) run(ops []Op) map[types.NamespacedName]*Failure {
	if p.opts.DryRun {
		p.logDryRun(ops)
		p.mirror(ops)
		return nil
	}
	if p.log.Core().Enabled(zap.DebugLevel) {
		for _, o := range ops {
			p.log.Debug("apply", zap.Stringer("op", o))
		}
	}
	res := Apply(p.kernel, ops)
	var done [OpDelEntry + 1]int
	for _, o := range res.Done {
		done[o.Kind]++
	}
	for kind, n := range done {
		if n > 0 {
			p.metrics.Applied(OpKind(kind).Name(), nil, n)
		}
	}
	for _, f := range res.Failed {
		p.metrics.Applied(f.Ops[0].Kind.Name(), f.Err, 1)
	}
	if len(res.Done) > 0 {
		p.log.Info("applied", zap.Int("ops", len(res.Done)))
	}
	p.staleFlows = append(p.staleFlows, conntrackFlows(res.Done, p.applied)...)
	p.mirror(res.Done)
	return res.Failed
}

// mirror changes the mirror of the kernel as done changed the kernel, and
// the new mirror a full sync is reading (see beginPass) too, noting what
// changed for when that read ends (see endRead).
func (p *Proxier) mirror(done []Op) {
	p.applied.applyAll(done, p.want.state)
	if p.pass == nil || p.pass.reading == nil {
		return
	}
	p.pass.reading.applyAll(done, p.want.state)
	p.pass.touched.record(done)
}

// avoidForeignMarks gives another mark to a Service whose short circuit
// could not be added because someone else's firewall-mark virtual server
// has its mark. A full sync finds those before it plans; this covers one
// made between that read and the add.
func (p *Proxier) avoidForeignMarks(failed map[types.NamespacedName]*Failure) {
	for name, f := range failed {
		o := f.Ops[0]
		if o.Kind == OpAddService && o.Service.Key.IsMark() && errors.Is(f.Err, errForeign) {
			p.marks.avoid(o.Service.Key.Mark)
			if svc := p.services[name]; svc != nil {
				p.recordService(svc, svc) // rebuilt with another mark at the next sync
			}
		}
	}
}

// conntrackFlows are the UDP conntrack entries to delete after ops: those
// of each removed UDP real server, and every entry of a removed UDP
// virtual server. The connections of a firewall-mark virtual server were
// made to the UDP addresses its SHORT-CIRCUIT members map to its mark in
// was, the state before ops.
func conntrackFlows(done []Op, was *State) []conntrack.Flow {
	var flows []conntrack.Flow
	var marked map[uint32][]netip.AddrPort
	add := func(o Op, addrs ...netip.AddrPort) {
		for _, a := range addrs {
			if o.Kind == OpDelDest {
				flows = append(flows, conntrack.Flow{Service: a, Endpoint: o.Dest.Addr})
			} else {
				flows = append(flows, conntrack.Flow{Service: a})
			}
		}
	}
	for _, o := range done {
		k := o.Service.Key
		switch {
		case o.Kind != OpDelDest && o.Kind != OpDelService:
		case k.IsMark():
			if marked == nil {
				marked = udpShortCircuits(was)
			}
			add(o, marked[k.Mark]...)
		case k.Proto == ipvs.UDP:
			add(o, k.AddrPort())
		}
	}
	return flows
}

// udpShortCircuits maps each short-circuit mark to the UDP addresses s's
// SHORT-CIRCUIT members give it.
func udpShortCircuits(s *State) map[uint32][]netip.AddrPort {
	out := map[uint32][]netip.AddrPort{}
	for e := range s.Entries {
		if e.Mark() == 0 {
			continue
		}
		if m := e.Entry(); m.Proto == ipvs.UDP.String() {
			out[m.Mark] = append(out[m.Mark], netip.AddrPortFrom(m.Addr, m.Port))
		}
	}
	for _, addrs := range out {
		slices.SortFunc(addrs, netip.AddrPort.Compare)
	}
	return out
}

// deleteStaleFlows deletes the UDP conntrack entries of removed real
// servers, so a UDP client that keeps its source port is rescheduled at
// its next packet instead of staying with a dead pod. On failure they are
// kept and tried again at the next sync.
func (p *Proxier) deleteStaleFlows() {
	if len(p.staleFlows) == 0 || p.opts.DryRun || p.kernel.Conntrack == nil {
		p.staleFlows = nil
		return
	}
	n, err := p.kernel.Conntrack.DeleteUDP(p.staleFlows)
	if err != nil {
		if err.Error() != p.flowErr {
			p.log.Error("deleting stale UDP conntrack entries; will retry", zap.Int("flows", len(p.staleFlows)), zap.Error(err))
			p.flowErr = err.Error()
		}
		return
	}
	p.log.Debug("deleted stale UDP conntrack entries", zap.Int("flows", len(p.staleFlows)), zap.Int("entries", n))
	p.staleFlows, p.flowErr = nil, ""
}

// slicesOf returns a Service's EndpointSlices in name order, so that what
// BuildService reports of them comes in the same order every time.
func (p *Proxier) slicesOf(name types.NamespacedName) []*discovery.EndpointSlice {
	return p.bySvc[name]
}

// compareSlice orders a Service's slices by name.
func compareSlice(s *discovery.EndpointSlice, key types.NamespacedName) int {
	return compareNames(types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, key)
}
