package proxier

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// startMix sets a fake node up for a benchmark mix and returns a proxier
// on it that has recorded every Service and slice, before its first sync.
func startMix(t testing.TB, mix benchMix, svcs []*v1.Service, slices []*discovery.EndpointSlice) (*Proxier, *fakeNode) {
	t.Helper()
	node := newFakeNode()
	local := &fakeLocal{}
	local.set(mix.local...)
	opts := testOptions()
	opts.NodePorts = mix.ports
	k := node.kernel()
	k.Local = local
	if err := Setup(zap.NewNop(), k, node.sysctl, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	p := New(zap.NewNop(), k, opts)
	for i := range svcs {
		p.OnService(svcs[i])
		p.OnSlice(slices[i])
	}
	return p, node
}

// sameSlice reports whether a and b are one slice (same array, same
// length), not merely equal.
func sameSlice(a, b []ipvs.Destination) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// checkShared fails unless every virtual server of the applied state
// holds the desired state's Dests slice itself.
func checkShared(t *testing.T, p *Proxier) {
	t.Helper()
	if len(p.applied.Servers) != len(p.want.state.Servers) {
		t.Fatalf("applied holds %d virtual servers, desired %d", len(p.applied.Servers), len(p.want.state.Servers))
	}
	for k, have := range p.applied.Servers {
		want := p.want.state.Servers[k]
		if len(want.Dests) > 0 && !sameSlice(have.Dests, want.Dests) {
			t.Errorf("%s: the applied state holds its own copy of the real servers", k)
		}
	}
}

func TestAppliedStateSharesRealServersWithDesired(t *testing.T) {
	// After a sync, a virtual server whose real servers are as desired
	// is held once: the mirror of the kernel reuses the desired slice.
	for _, mix := range benchMixes {
		t.Run(mix.name, func(t *testing.T) {
			svcs, slices := mix.cluster(40)
			p, node := startMix(t, mix, svcs, slices)
			mustSync(t, p, true)
			checkShared(t, p)

			// One endpoint moves: the changed virtual servers get the new
			// desired slice, merged or not.
			moved := slices[20].DeepCopy()
			moved.Endpoints[0].Addresses = []string{"10.250.0.1"}
			p.OnSlice(moved)
			mustSync(t, p, false)
			checkShared(t, p)

			// A full resync reads the kernel back: what it read has
			// connection counts of its own and is kept as read, unshared
			// only where it differs.
			mustSync(t, p, true)
			if got, want := p.applied.Dump(), p.want.state.Dump(); got != want {
				t.Errorf("applied:\n%s\nwant:\n%s", got, want)
			}
			if node.ipvs.Dump() == "" {
				t.Error("nothing programmed")
			}
		})
	}
}

func TestApplyAllKeepsWhatItReadWhenNotEqual(t *testing.T) {
	// Sharing is only ever of equal values: real servers read from the
	// kernel with connection counts are not replaced by the desired ones.
	k := ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: ipvs.TCP, Port: 80}
	a := ipvs.Destination{Addr: netip.MustParseAddrPort("10.244.1.1:8080"), Weight: 1}
	b := ipvs.Destination{Addr: netip.MustParseAddrPort("10.244.1.2:8080"), Weight: 1}
	read := a
	read.ActiveConns = 3
	applied, want := NewState(), NewState()
	applied.Servers[k] = VirtualServer{Service: ipvs.Service{Key: k, Scheduler: "rr"}, Dests: []ipvs.Destination{read}}
	want.Servers[k] = VirtualServer{Service: ipvs.Service{Key: k, Scheduler: "rr"}, Dests: []ipvs.Destination{a, b}}
	applied.applyAll([]Op{{Kind: OpAddDest, Service: ipvs.Service{Key: k}, Dest: b}}, want)
	got := applied.Servers[k].Dests
	if len(got) != 2 || got[0] != read || got[1] != b {
		t.Fatalf("merged %v", got)
	}
	if sameSlice(got, want.Servers[k].Dests) {
		t.Error("shared a slice that is not equal")
	}

	// Once equal, the desired slice is taken, and a later change gets a
	// new slice: the shared one is never written.
	applied.Servers[k] = VirtualServer{Service: ipvs.Service{Key: k, Scheduler: "rr"}, Dests: []ipvs.Destination{a}}
	applied.applyAll([]Op{{Kind: OpAddDest, Service: ipvs.Service{Key: k}, Dest: b}}, want)
	if !sameSlice(applied.Servers[k].Dests, want.Servers[k].Dests) {
		t.Error("an equal result was not shared")
	}
	applied.applyAll([]Op{{Kind: OpDelDest, Service: ipvs.Service{Key: k}, Dest: a}}, want)
	if w := want.Servers[k].Dests; len(w) != 2 || w[0] != a || w[1] != b {
		t.Errorf("the desired slice was modified: %v", w)
	}
	if got := applied.Servers[k].Dests; len(got) != 1 || got[0] != b {
		t.Errorf("after the delete: %v", got)
	}
}

// BenchmarkFullSync is a cold start on the fake kernel: record every
// Service and slice, then a full sync onto an empty node. Besides the
// allocations of that, it reports retained-B: the heap the proxier keeps
// afterwards (its indexes of the API objects, fragments, desired and
// applied state), the API objects themselves and the fake kernel's own
// copy excluded: what the proxier adds to an agent's RSS between syncs.
func BenchmarkFullSync(b *testing.B) {
	for _, mix := range benchMixes {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("mix=%s/services=%d", mix.name, n), func(b *testing.B) {
				svcs, slices := mix.cluster(n)
				b.ReportAllocs()
				for b.Loop() {
					p, _ := startMix(b, mix, svcs, slices)
					mustSync(b, p, true)
				}
				p, node := startMix(b, mix, svcs, slices)
				mustSync(b, p, true)
				var with, without runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&with)
				runtime.KeepAlive(p)
				runtime.GC()
				runtime.ReadMemStats(&without)
				runtime.KeepAlive(node)
				runtime.KeepAlive(svcs) // the informers' objects are not the proxier's
				runtime.KeepAlive(slices)
				b.ReportMetric(float64(int64(with.HeapAlloc)-int64(without.HeapAlloc)), "retained-B")
			})
		}
	}
}
