package proxier

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// stepCluster records n Services of two endpoints each on p: more than one
// chunk of virtual servers.
func stepCluster(p *Proxier, n int) []*discovery.EndpointSlice {
	var slices []*discovery.EndpointSlice
	vip := netip.MustParseAddr("10.96.1.0")
	for i := range n {
		vip = vip.Next()
		name := fmt.Sprintf("svc-%04d", i)
		p.OnService(service(ns, name, withClusterIP(vip.String())))
		s := slice(ns, name+"-1", name, withEndpoints(ep(fmt.Sprintf("10.244.%d.%d", 10+i/200, 1+i%200)), ep("10.244.9.9")))
		p.OnSlice(s)
		slices = append(slices, s)
	}
	return slices
}

// steps runs FullStep until the pass ends and returns how many steps it
// took; between the first and the second it calls between.
func steps(t *testing.T, p *Proxier, between func()) int {
	t.Helper()
	for n := 1; ; n++ {
		done, err := p.FullStep(time.Hour)
		if err != nil {
			t.Fatalf("step %d: %v", n, err)
		}
		if done {
			return n
		}
		if n == 1 && between != nil {
			between()
		}
	}
}

// A change recorded while a full sync runs is programmed by an incremental
// sync between two of its steps, and the pass, which reads each virtual
// server only when it repairs it, neither undoes it nor misses the drift
// it was there for.
func TestChangeDuringAFullSyncIsSyncedBetweenSteps(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	slices := stepCluster(p, 3*maxChunk)
	mustSync(t, p, false)

	// Drift, for the pass to repair: a real server and a virtual server
	// deleted by hand, in the last chunk.
	last := key("10.96.3.255", ipvs.TCP, 80)
	if !strings.Contains(n.ipvs.Dump(), "-A -t 10.96.3.255:80") {
		t.Fatalf("the last Service is not where the test expects it:\n%s", n.ipvs.Dump()[:200])
	}
	if err := n.ipvs.DeleteDestination(last, ap("10.244.9.9:8080")); err != nil {
		t.Fatal(err)
	}
	gone := key("10.96.3.254", ipvs.TCP, 80)
	if err := n.ipvs.DeleteService(gone); err != nil {
		t.Fatal(err)
	}

	// During the pass: the first Service's endpoint moves, the second
	// Service goes, a new one comes.
	moved := slices[0].DeepCopy()
	moved.Endpoints[0].Addresses = []string{"10.244.200.1"}
	var during string
	count := steps(t, p, func() {
		p.OnSlice(moved)
		p.OnServiceDelete(service(ns, "svc-0001"))
		p.OnService(service(ns, "late", withClusterIP("10.96.9.9")))
		p.OnSlice(slice(ns, "late-1", "late", withEndpoints(ep("10.244.201.1"))))
		mustSync(t, p, false)
		during = n.ipvs.Dump()
	})
	// The change comes while the background read runs, or after it:
	// the incremental sync plans against the old mirror, and the new one
	// takes what it touched from the old.
	if want := 11; count != want {
		t.Errorf("the pass took %d steps, want %d: the begin, the read's end, the sets, the tables' save and their writes, the sweep, the routes, 3 chunks and the end", count, want)
	}
	for _, want := range []string{"-a -t 10.96.1.1:80 -r 10.244.200.1:8080", "-A -t 10.96.9.9:80", "-a -t 10.96.9.9:80 -r 10.244.201.1:8080"} {
		if !strings.Contains(during, want) {
			t.Errorf("between two steps the kernel lacks %q", want)
		}
	}
	if strings.Contains(during, "-A -t 10.96.1.2:80") {
		t.Errorf("between two steps the deleted Service is still there")
	}
	got := n.ipvs.Dump()
	for _, want := range []string{"-a -t 10.96.3.255:80 -r 10.244.9.9:8080", "-A -t 10.96.3.254:80", "-a -t 10.96.1.1:80 -r 10.244.200.1:8080", "-A -t 10.96.9.9:80"} {
		if !strings.Contains(got, want) {
			t.Errorf("after the pass the kernel lacks %q", want)
		}
	}
	for _, unwanted := range []string{"-A -t 10.96.1.2:80", "-a -t 10.96.1.1:80 -r 10.244.10.1:8080"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("after the pass the kernel still has %q", unwanted)
		}
	}
	// The mirror is exact: a full sync now finds nothing to do.
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync after the stepped one wrote %d times: %v", w, n.callLog())
	}
}

// A full sync with nothing to repair writes nothing, stepped or not.
func TestSteppedFullSyncWithNothingChangedWritesNothing(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, maxChunk+1)
	mustSync(t, p, false)
	n.resetCalls()
	// The begin, the read's end, the sets, the tables' save and their
	// writes, the sweep, the routes, two chunks and the end.
	if count, want := steps(t, p, nil), 10; count != want {
		t.Errorf("%d steps, want %d", count, want)
	}
	if _, w := n.calls(); w != 0 {
		t.Errorf("wrote %d times: %v", w, n.callLog())
	}
}

// fakeStepper is a Stepper whose full sync takes three steps; a request
// comes during the first.
type fakeStepper struct {
	r     *Runner
	calls []string
	steps int
}

func (s *fakeStepper) Sync(full bool) error {
	s.calls = append(s.calls, fmt.Sprintf("sync(full=%v)", full))
	return nil
}

func (s *fakeStepper) RetryAt() time.Time { return time.Time{} }

func (s *fakeStepper) FullStep(time.Duration) (bool, error) {
	s.steps++
	s.calls = append(s.calls, fmt.Sprintf("step %d", s.steps))
	if s.steps == 1 {
		s.r.Request()
	}
	return s.steps == 3, nil
}

func TestRunnerSyncsARequestBetweenFullSteps(t *testing.T) {
	s := &fakeStepper{}
	s.r = NewRunner(zap.NewNop(), testingclock.NewFakeClock(time.Unix(1_000_000, 0)), RunnerConfig{}, s)
	if s.r.cfg.StepBudget != DefaultStepBudget {
		t.Errorf("step budget %v, want %v", s.r.cfg.StepBudget, DefaultStepBudget)
	}
	if err := s.r.sync(true); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.calls, ", "), "step 1, sync(full=false), step 2, step 3"; got != want {
		t.Errorf("calls: %s, want %s", got, want)
	}
	s.calls = nil
	if err := s.r.sync(false); err != nil || strings.Join(s.calls, ", ") != "sync(full=false)" {
		t.Errorf("an incremental sync: %v, %v", s.calls, err)
	}
}

// A node's first sync adds the set members of many Services in batches,
// one request per set and batch; when the kernel refuses a batch, they are
// added one by one and only the Service whose member fails waits for its
// retry.
func TestSetMembersAreAddedInBatches(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, 40)
	mustSync(t, p, false)
	if c := n.sets.Calls(); c[iptables.MethodAddEntries] == 0 || c[iptables.MethodAddEntry] != 0 {
		t.Errorf("calls %v: want the members in batches", c)
	}
	want := n.sets.Dump()

	n = newFakeNode()
	p = newTestProxier(t, n, testOptions())
	n.sets.FailOn(iptables.MethodAddEntries, "", errors.New("refused"))
	bad := "10.96.1.7,tcp:80"
	n.sets.Hook = func(method string, args ...string) error {
		if method == iptables.MethodAddEntry && args[0] == SetClusterIP && args[1] == bad {
			return errors.New("no room")
		}
		return nil
	}
	stepCluster(p, 40)
	mustSync(t, p, false)
	f := p.Failures()
	if len(f) != 1 || f[nameOf(ns, "svc-0006")].Err == nil {
		t.Fatalf("failures %v, want svc-0006 alone", f)
	}
	if c := n.sets.Calls(); c[iptables.MethodAddEntry] == 0 {
		t.Errorf("calls %v: want the refused batches one by one", c)
	}
	n.sets.Hook = nil
	n.sets.FailOn(iptables.MethodAddEntries, "", nil)
	mustSync(t, p, true)
	checkDump(t, "sets after the retry", n.sets.Dump(), want)
}

// The end of a full sync repairs exactly what a scope of every key holds
// but the virtual servers, their ownership records and their owners' set
// members: the same keys, attributed to the same Services, as the pass
// computed before it built that scope directly.
func TestEndScopeIsEverythingButWhatTheChunksRepair(t *testing.T) {
	mix := benchMixes[1] // NodePorts and LoadBalancers with source ranges: set members of both kinds
	svcs, objs := mix.cluster(80)
	p, _ := startMix(t, mix, svcs, objs)
	// A second Service claiming a LoadBalancer's virtual servers with
	// other source ranges: its members are not the owner's.
	i := slices.IndexFunc(svcs, func(s *v1.Service) bool { return len(s.Spec.LoadBalancerSourceRanges) > 0 })
	if i < 0 {
		t.Fatal("the mix has no LoadBalancer with source ranges")
	}
	dup := svcs[i].DeepCopy()
	dup.Name = "zz-" + dup.Name
	dup.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24"}
	p.OnService(dup)
	mustSync(t, p, true)
	// What only the kernel holds: a stale member and address.
	var stale SetEntry
	for e := range p.applied.Entries {
		stale = e
		break
	}
	m := stale.Entry()
	m.Port++
	stale = NewSetEntry(stale.Set(), m)
	p.applied.Entries[stale] = struct{}{}
	p.applied.Addrs[netip.MustParseAddr("10.99.0.1")] = struct{}{}

	// The scope of everything, less what the chunks repaired.
	want := NewScope()
	for _, name := range slices.SortedFunc(maps.Keys(p.want.frags), compareNames) {
		p.want.scopeFragment(want, name, p.want.frags[name])
	}
	want.addState(p.applied)
	clear(want.Servers)
	for k := range p.want.state.Servers {
		owner, owned := p.want.owner(k)
		delete(want.Entries, ownedEntry(p.opts.Build.Family, k))
		if owned {
			for _, e := range p.want.part(owner, k).Entries {
				delete(want.Entries, e)
			}
		}
	}
	if len(want.Entries) < 2 || len(want.Addrs) < 2 {
		t.Fatalf("the case is too small to show anything: %d members, %d addresses", len(want.Entries), len(want.Addrs))
	}
	got := p.want.endScope(p.applied)
	if len(got.Servers) != 0 || !maps.Equal(got.Entries, want.Entries) || !maps.Equal(got.Addrs, want.Addrs) {
		t.Errorf("endScope: %d servers\nmembers %v\nwant    %v\naddresses %v\nwant      %v",
			len(got.Servers), got.Entries, want.Entries, got.Addrs, want.Addrs)
	}
}

// A node's first sync adds its virtual servers and real servers in
// batches, with the single calls' outcome: a virtual server someone else
// made is left alone and its record taken back, a refused real server
// fails its Service alone, and the rest goes in.
func TestVirtualAndRealServersAreAddedInBatches(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, 40)
	mustSync(t, p, false)
	if b, c := n.ipvs.Batches(), n.ipvs.Calls(); b < 2 || c[ipvs.MethodAddService] != 40 || c[ipvs.MethodAddDestination] != 80 {
		t.Errorf("%d batches, calls %v: want the 40 virtual servers and 80 real servers in batches", b, c)
	}
	want := n.ipvs.Dump()

	n = newFakeNode()
	p = newTestProxier(t, n, testOptions())
	foreign := key("10.96.1.4", ipvs.TCP, 80) // svc-0003's
	if err := n.ipvs.AddService(ipvs.Service{Key: foreign, Scheduler: "wlc"}); err != nil {
		t.Fatal(err)
	}
	refused := key("10.96.1.10", ipvs.TCP, 80) // svc-0009's
	n.ipvs.FailOn(ipvs.MethodAddDestination, refused, errors.New("no room"))
	stepCluster(p, 40)
	mustSync(t, p, false)
	f := p.Failures()
	if len(f) != 2 || f[nameOf(ns, "svc-0003")].Err == nil || f[nameOf(ns, "svc-0009")].Err == nil {
		t.Fatalf("failures %v, want svc-0003 and svc-0009", f)
	}
	if n.ipvs.Batches() < 2 {
		t.Errorf("%d batches", n.ipvs.Batches())
	}
	if got := n.ipvs.DumpService(foreign); got != "-A -t 10.96.1.4:80 -s wlc\n" {
		t.Errorf("someone else's virtual server changed:\n%s", got)
	}
	owned := ownedEntry(v1.IPv4Protocol, foreign)
	if members, err := n.sets.ListEntries(owned.Set()); err != nil || slices.Contains(members, owned.Entry()) {
		t.Errorf("the record of someone else's virtual server stayed (%v): %v", err, members)
	}
	if got := n.ipvs.DumpService(key("10.96.1.11", ipvs.TCP, 80)); !strings.Contains(got, "-a -t 10.96.1.11:80 -r 10.244.9.9:8080") {
		t.Errorf("svc-0010 is not all there:\n%s", got)
	}
	n.ipvs.FailOn(ipvs.MethodAddDestination, refused, nil)
	if err := n.ipvs.DeleteService(foreign); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p, true)
	checkDump(t, "IPVS after the retry", n.ipvs.Dump(), want)
}

// While a full sync's iptables-save runs (here it hangs until the test
// lets it go), the runner syncs a change that comes in: a slow save holds
// no change back.
func TestChangeDuringASaveIsSyncedBeforeTheSaveEnds(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, 2)
	mustSync(t, p, false)

	saving := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	n.ipt.Hook = func(method string, _ ...string) error {
		if method == iptables.MethodSaveTables {
			once.Do(func() {
				saving <- struct{}{}
				<-release // only the first save hangs
			})
		}
		return nil
	}
	r := NewRunner(zap.NewNop(), clock.RealClock{}, RunnerConfig{MinInterval: time.Millisecond, FullInterval: time.Hour}, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() {
		cancel()
		close(release)
		<-done
	}()
	select {
	case <-saving:
	case <-time.After(10 * time.Second):
		t.Fatal("the full sync never saved the tables")
	}
	p.OnService(service(ns, "late", withClusterIP("10.96.9.9")))
	p.OnSlice(slice(ns, "late-1", "late", withEndpoints(ep("10.244.201.1"))))
	r.Request()
	waitFor(t, func() bool { return strings.Contains(n.ipvs.Dump(), "-a -t 10.96.9.9:80 -r 10.244.201.1:8080") })
	// (A runner that ran the next step at once would wait for the save
	// there, holding the change back, and this wait would fail.)
	if p.StepReady() == nil {
		t.Fatal("the change was synced, and StepReady says no save runs")
	}
	release <- struct{}{}
	waitFor(t, func() bool { return p.StepReady() == nil })
}

// heldDump is an IPVS table whose ListServices, once armed (hold),
// reads the table at once but answers only when the test lets it
// (release): what changes in between is missing from its answer, and
// from the set members a full sync's background read read before it, as
// from a kernel read that ran while an incremental sync wrote.
type heldDump struct {
	*ipvs.Fake
	mu      sync.Mutex
	release chan struct{} // nil: answer at once
}

func (h *heldDump) hold() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.release = make(chan struct{})
	return h.release
}

func (h *heldDump) ListServices() ([]ipvs.Service, error) {
	svcs, err := h.Fake.ListServices()
	h.mu.Lock()
	release := h.release
	h.release = nil
	h.mu.Unlock()
	if release != nil {
		<-release
	}
	return svcs, err
}

// fullSyncs is an Observer that hears each full sync end.
type fullSyncs chan error

func (fullSyncs) Started(time.Time) {}
func (fullSyncs) Queued(time.Time)  {}
func (f fullSyncs) Synced(_ time.Time, full bool, _ time.Duration, err error) {
	if full {
		f <- err
	}
}

// While a full sync's background read of the sets and virtual servers
// runs (here it answers only when the test lets it), the runner syncs the
// changes that come in: a Service added and one deleted. The read answers
// with the kernel from before them, and the pass, which takes their
// virtual servers and set members from the mirror the incremental sync
// kept, neither calls the new virtual server someone else's nor keeps
// the deleted one, and writes nothing: the incremental sync did it all.
func TestChangeDuringTheReadIsSyncedAndKeptByThePass(t *testing.T) {
	n := newFakeNode()
	h := &heldDump{Fake: n.ipvs}
	k := n.kernel()
	k.IPVS = h
	if err := Setup(zap.NewNop(), k, n.sysctl, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	p := New(zap.NewNop(), k, testOptions())
	stepCluster(p, 3)
	mustSync(t, p, true) // the first full sync reads in its step: no mirror to plan against meanwhile
	release := h.hold()

	r := NewRunner(zap.NewNop(), clock.RealClock{}, RunnerConfig{MinInterval: time.Millisecond, FullInterval: time.Hour}, p)
	synced := make(fullSyncs, 1)
	r.Observe(synced)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stop := func() {
		if release != nil {
			close(release)
			release = nil
		}
		cancel()
		<-done
	}
	defer stop()
	waitFor(t, func() bool { return p.StepReady() != nil })
	p.OnService(service(ns, "late", withClusterIP("10.96.9.9")))
	p.OnSlice(slice(ns, "late-1", "late", withEndpoints(ep("10.244.201.1"))))
	p.OnServiceDelete(service(ns, "svc-0001"))
	r.Request()
	waitFor(t, func() bool {
		d := n.ipvs.Dump()
		return strings.Contains(d, "-a -t 10.96.9.9:80 -r 10.244.201.1:8080") && !strings.Contains(d, "-A -t 10.96.1.2:80")
	})
	if p.StepReady() == nil {
		t.Fatal("the change was synced, and StepReady says no read runs")
	}
	n.resetCalls()
	close(release)
	release = nil
	select {
	case err := <-synced:
		if err != nil {
			t.Fatalf("the full sync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the full sync never ended")
	}
	stop()
	if _, w := n.calls(); w != 0 {
		t.Errorf("the pass wrote %d times: %v", w, n.callLog())
	}
	if len(p.failures) > 0 {
		t.Errorf("the pass failed Services: %v", slices.Collect(maps.Keys(p.failures)))
	}
	got := n.ipvs.Dump()
	for _, want := range []string{"-A -t 10.96.9.9:80", "-a -t 10.96.9.9:80 -r 10.244.201.1:8080", "-A -t 10.96.1.1:80", "-A -t 10.96.1.3:80"} {
		if !strings.Contains(got, want) {
			t.Errorf("after the pass the kernel lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "-A -t 10.96.1.2:80") {
		t.Errorf("after the pass the deleted Service is back:\n%s", got)
	}
	if _, ok := p.applied.Servers[key("10.96.1.2", ipvs.TCP, 80)]; ok {
		t.Error("the mirror holds the deleted virtual server")
	}
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync after the pass wrote %d times: %v", w, n.callLog())
	}
}

// The keys a pass repairs are, in order, every key of the new mirror, of
// the desired state and of a drain, each once: passKeys merges those the
// read found (in order) with the few others, and drops a virtual server
// an incremental sync deleted during the read that nothing wants.
func TestPassKeysAreTheSortedUnion(t *testing.T) {
	p := newTestProxier(t, newFakeNode(), testOptions())
	k := func(i int) ipvs.ServiceKey {
		return key(fmt.Sprintf("10.96.%d.%d", i/250, 1+i%250), ipvs.TCP, 80)
	}
	for round := range 50 {
		// Keys 0..99: each in the read or not, touched or not, in the
		// mirror, wanted, draining, at random but for the invariant the
		// read keeps: a key it read is in the mirror unless touched.
		r := &kernelRead{}
		mirror := NewState()
		p.want.state = NewState()
		p.drainSince = map[ipvs.ServiceKey]map[netip.AddrPort]time.Time{}
		p.pass = &fullPass{touched: newTouched()}
		want := map[ipvs.ServiceKey]bool{}
		bit := func(i, b int) bool { return (i*7919+round*104729)>>b&1 == 1 }
		for i := range 100 {
			read, touched := bit(i, 1), bit(i, 2)
			inMirror := bit(i, 3) || (read && !touched)
			if read {
				r.keys = append(r.keys, k(i))
			}
			if touched {
				p.pass.touched.servers[k(i)] = true
			}
			if inMirror {
				mirror.Servers[k(i)] = VirtualServer{}
				want[k(i)] = true
				if !read && !touched {
					r.others = append(r.others, ipvs.Service{Key: k(i)}) // adopted
				}
			}
			if bit(i, 4) {
				p.want.state.Servers[k(i)] = VirtualServer{}
				want[k(i)] = true
			}
			if bit(i, 5) {
				p.drainSince[k(i)] = nil
				want[k(i)] = true
			}
		}
		got := p.passKeys(mirror, r)
		if exp := slices.SortedFunc(maps.Keys(want), ipvs.ServiceKey.Compare); !slices.Equal(got, exp) {
			t.Fatalf("round %d: keys\n%v\nwant\n%v", round, got, exp)
		}
	}
}

// A virtual server the background read found without a record, whose
// record an incremental sync wrote after the read read the sets, is
// kube-ipvs': the pass neither calls its mark someone else's nor drops
// it; one nobody recorded or adopts stays foreign.
func TestServerRecordedSinceTheReadIsOurs(t *testing.T) {
	family := testOptions().Build.Family
	ours, theirs := ipvs.MarkKey(0x2001, false), ipvs.MarkKey(0x1f01, false)
	s := NewState()
	s.Entries[ownedEntry(family, ours)] = struct{}{}
	adoptServers([]ipvs.Service{{Key: ours}, {Key: theirs}}, family, s, nil)
	if _, ok := s.Servers[ours]; !ok {
		t.Errorf("the recorded virtual server %s is not in the mirror", ours)
	}
	if _, ok := s.Servers[theirs]; ok {
		t.Errorf("someone else's virtual server %s is in the mirror", theirs)
	}
	if !slices.Equal(s.foreignMarks, []uint32{0x1f01}) {
		t.Errorf("foreign marks %#x, want [0x1f01]", s.foreignMarks)
	}
}

// timedIPVS makes the fake kernel's reads of real servers and its writes
// of them take time on clk.
type timedIPVS struct {
	ipvs.Interface
	clk         *testingclock.FakeClock
	read, write time.Duration
}

func (k timedIPVS) ListDestinations(key ipvs.ServiceKey) ([]ipvs.Destination, error) {
	k.clk.Step(k.read)
	return k.Interface.ListDestinations(key)
}

func (k timedIPVS) UpdateDestination(key ipvs.ServiceKey, d ipvs.Destination) error {
	k.clk.Step(k.write)
	return k.Interface.UpdateDestination(key, d)
}

// A chunk of a full resync counts what it plans and applies in its
// budget, not only what it reads: when every virtual server needs a write
// that costs ten times its read, a chunk after the first (which learns the
// pace) still ends within about the budget, and the pass repairs all.
func TestChunkBudgetCountsTheWrites(t *testing.T) {
	n := newFakeNode()
	opts, clk := clocked(testOptions())
	p := newTestProxier(t, n, opts)
	const services = 3 * maxChunk
	stepCluster(p, services)
	mustSync(t, p, false)
	// Drift on every virtual server: a weight changed by hand.
	list, err := n.ipvs.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range list {
		if err := n.ipvs.UpdateDestination(svc.Key, ipvs.Destination{Addr: ap("10.244.9.9:8080"), Weight: 7, Forward: ipvs.Masquerade}); err != nil {
			t.Fatal(err)
		}
	}
	k := n.kernel()
	k.IPVS = timedIPVS{Interface: n.ipvs, clk: clk, read: 100 * time.Microsecond, write: time.Millisecond}
	p.kernel = k

	const budget = 10 * time.Millisecond
	var chunks []string
	longest := time.Duration(0)
	for step := 1; ; step++ {
		before, began := -1, clk.Now()
		if p.pass != nil && p.pass.routed {
			before = len(p.pass.keys)
		}
		done, err := p.FullStep(budget)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if before > 0 {
			took := clk.Since(began)
			chunks = append(chunks, fmt.Sprintf("%d keys in %v", before-len(p.pass.keys), took))
			if len(chunks) > 1 {
				longest = max(longest, took)
			}
		}
		if done {
			break
		}
	}
	// One key's read and write past the budget at most.
	if limit := budget + 1100*time.Microsecond; longest > limit {
		t.Errorf("a chunk after the first took %v, more than %v: %s", longest, limit, strings.Join(chunks, ", "))
	}
	if len(chunks) < 2 {
		t.Fatalf("the pass repaired in %d chunks: %s", len(chunks), strings.Join(chunks, ", "))
	}
	if strings.Contains(n.ipvs.Dump(), "-w 7") {
		t.Errorf("a drifted weight is left:\n%s", n.ipvs.Dump())
	}
}
