package proxier

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

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

// mixBuild is the node of the northSouth benchmarks: three NodePort
// addresses.
var mixBuild = func() BuildConfig {
	c := v4Build
	c.NodePortAddrs = []netip.Addr{netip.MustParseAddr("192.168.50.11"), netip.MustParseAddr("192.168.60.11"), netip.MustParseAddr("192.168.70.11")}
	c.NodeIPs = c.NodePortAddrs[:1]
	return c
}()

// benchNorthSouth is benchCluster where every fifth Service is a NodePort and
// every twentieth a LoadBalancer (with its NodePort) whose load-balancer
// IP has two source ranges: 20% NodePort, 5% LoadBalancer.
func benchNorthSouth(n int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs, slices := benchCluster(n)
	lbIP := netip.MustParseAddr("198.18.0.0")
	for i, svc := range svcs {
		switch {
		case i%20 == 0:
			lbIP = lbIP.Next()
			loadBalancer(lbIP.String())(svc)
			svc.Spec.Ports[0].NodePort = int32(30000 + i%2768)
			sourceRangesOf("203.0.113.0/24", "192.168.50.0/24")(svc)
		case i%5 == 0:
			nodePortType(int32(30000 + i%2768))(svc)
		}
	}
	return svcs, slices
}

// benchMix is one kind of cluster the benchmarks run on, and its node.
type benchMix struct {
	name    string
	cluster func(int) ([]*v1.Service, []*discovery.EndpointSlice)
	build   BuildConfig
	ports   NodePortConfig
	local   []string
}

// benchMixes: ClusterIP Services only; and 20% NodePort plus 5%
// LoadBalancer Services with source ranges, on a node with three NodePort
// addresses.
var benchMixes = []benchMix{
	{name: "clusterIP", cluster: benchCluster, build: v4Build},
	{name: "northSouth", cluster: benchNorthSouth, build: mixBuild,
		ports: NodePortConfig{CIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}},
		local: []string{"192.168.50.11", "192.168.60.11", "192.168.70.11"}},
}

// BenchmarkFullBuildAndPlan is the cost of computing the whole desired
// state of a cluster and diffing it against an empty kernel: what a
// restart on an empty node costs before the first kernel call. Besides
// the totals it reports them per Service (B/service, allocs/service).
func BenchmarkFullBuildAndPlan(b *testing.B) {
	for _, mix := range benchMixes {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("mix=%s/services=%d", mix.name, n), func(b *testing.B) {
				svcs, slices := mix.cluster(n)
				b.ReportAllocs()
				var ops, runs int
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for b.Loop() {
					runs++
					d := newDesired(v1.IPv4Protocol)
					sc := NewScope()
					for i, svc := range svcs {
						f, _ := BuildService(svc, []*discovery.EndpointSlice{slices[i]}, mix.build)
						d.replace(types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}, f, sc)
					}
					ops = len(Plan(d.state, NewState(), nil))
				}
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(ops), "ops")
				per := float64(runs * n)
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/per, "B/service")
				b.ReportMetric(float64(after.Mallocs-before.Mallocs)/per, "allocs/service")
			})
		}
	}
}

// BenchmarkIncrementalSync is the cost of a sync after one endpoint of one
// Service changed, on a node already in sync: record the change, rebuild
// that Service, plan, and apply to the fake kernel. It must not grow with
// the number of unchanged Services. In the northSouth mix the changed
// Service is a LoadBalancer with source ranges, programmed on its
// ClusterIP, its load-balancer IP and three NodePort addresses.
func BenchmarkIncrementalSync(b *testing.B) {
	for _, mix := range benchMixes {
		for _, n := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("mix=%s/services=%d", mix.name, n), func(b *testing.B) {
				svcs, slices := mix.cluster(n)
				p, node := startMix(b, mix, svcs, slices)
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
}
