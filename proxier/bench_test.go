package proxier

import (
	"fmt"
	"net/netip"
	"testing"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// benchCluster returns n Services, each with one slice of ten endpoints.
func benchCluster(n int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	slices := make([]*discovery.EndpointSlice, 0, n)
	vip := netip.MustParseAddr("10.96.0.0")
	pod := netip.MustParseAddr("10.244.0.0")
	for i := range n {
		vip = vip.Next()
		name := fmt.Sprintf("svc-%05d", i)
		svcs = append(svcs, service(ns, name, withClusterIP(vip.String())))
		var eps []discovery.Endpoint
		for range 10 {
			pod = pod.Next()
			eps = append(eps, ep(pod.String()))
		}
		slices = append(slices, slice(ns, name+"-1", name, withEndpoints(eps...)))
	}
	return svcs, slices
}

// BenchmarkFullBuildAndPlan is the cost of computing the whole desired
// state of a cluster and diffing it against an empty kernel: what a
// restart on an empty node costs before the first kernel call.
func BenchmarkFullBuildAndPlan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			svcs, slices := benchCluster(n)
			b.ReportAllocs()
			var ops int
			for b.Loop() {
				d := newDesired(v1.IPv4Protocol)
				sc := NewScope()
				for i, svc := range svcs {
					f, _ := BuildService(svc, []*discovery.EndpointSlice{slices[i]}, v4Build)
					d.replace(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, f, sc)
				}
				ops = len(Plan(d.state, NewState(), nil))
			}
			b.ReportMetric(float64(ops), "ops")
		})
	}
}

// BenchmarkIncrementalSync is the cost of a sync after one endpoint of one
// Service changed, on a node already in sync: record the change, rebuild
// that Service, plan, and apply to the fake kernel. It must not grow with
// the number of unchanged Services.
func BenchmarkIncrementalSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			svcs, slices := benchCluster(n)
			node := newFakeNode()
			p := newTestProxier(b, node, testOptions())
			p.log = zap.NewNop()
			for i := range svcs {
				p.OnService(svcs[i])
				p.OnSlice(slices[i])
			}
			mustSync(b, p, true)
			target := slices[n/2]
			moved := target.DeepCopy()
			moved.Endpoints[0].Addresses = []string{"10.250.0.1"}
			versions := []*discovery.EndpointSlice{moved, target}
			node.resetCalls()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p.OnSlice(versions[i%2])
				mustSync(b, p, false)
				i++
			}
			_, writes := node.calls()
			b.ReportMetric(float64(writes)/float64(i), "kernel-writes/op")
		})
	}
}
