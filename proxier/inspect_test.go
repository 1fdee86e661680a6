package proxier

import (
	"errors"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

func withPod(name string) func(*discovery.Endpoint) {
	return func(e *discovery.Endpoint) { e.TargetRef = &v1.ObjectReference{Kind: "Pod", Name: name} }
}

func TestViewCopiesWhatTheProxierKnows(t *testing.T) {
	n := newFakeNode()
	opts, clk := drainOptions()
	p := newTestProxier(t, n, opts)
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(
		ep("10.244.1.1", onNode(testNode), withPod("web-a")), ep("10.244.2.1", withPod("web-b")))))
	mustSync(t, p, false)
	if err := n.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 1, 2); err != nil {
		t.Fatal(err)
	}
	stats := ipvs.Stats{Conns: 3, PacketsIn: 9, PacketsOut: 8, BytesIn: 700, BytesOut: 600}
	if err := n.ipvs.SetStats(webVS, ap("10.244.2.1:8080"), stats); err != nil {
		t.Fatal(err)
	}
	// 10.244.2.1 leaves with a connection open: it drains.
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode), withPod("web-a")))))
	mustSync(t, p, false)
	// Someone else's virtual server.
	if err := n.ipvs.Load("-A -t 192.0.2.1:80 -s wlc\n"); err != nil {
		t.Fatal(err)
	}

	n.resetCalls()
	v := p.View()
	if _, writes := n.calls(); writes != 0 {
		t.Errorf("View wrote to the kernel: %v", n.callLog())
	}
	if !v.Synced || v.NodeName != testNode || v.Family != v1.IPv4Protocol || !v.HasStats || v.KernelErr != "" || !v.At.Equal(clk.Now()) {
		t.Errorf("view = synced %v node %q family %s stats %v err %q at %v", v.Synced, v.NodeName, v.Family, v.HasStats, v.KernelErr, v.At)
	}
	if len(v.Servers) != 1 {
		t.Fatalf("servers = %+v", v.Servers)
	}
	sv := v.Servers[0]
	if sv.Service.Key != webVS || sv.Owner != nameOf(ns, "web") || !sv.InKernel || len(sv.Dests) != 2 {
		t.Fatalf("server = %+v", sv)
	}
	a, b := sv.Dests[0], sv.Dests[1]
	if a.Addr != ap("10.244.1.1:8080") || a.Weight != 1 || !a.InKernel || !a.DrainSince.IsZero() {
		t.Errorf("first real server = %+v", a)
	}
	if b.Weight != 0 || !b.InKernel || !b.DrainSince.Equal(clk.Now()) || b.ActiveConns != 1 || b.InactiveConns != 2 || b.Stats != stats {
		t.Errorf("draining real server = %+v", b)
	}
	if !hasEntry(sv.Entries, SetClusterIP, "10.96.0.10,tcp:80") || !hasEntry(sv.Entries, SetLoopBack, "10.244.1.1,tcp:8080,10.244.1.1") {
		t.Errorf("server entries = %v", sv.Entries)
	}
	if !hasEntry(v.Entries, SetVIP, "10.96.0.10") || len(v.Addrs) != 1 || v.Addrs[0].String() != "10.96.0.10" {
		t.Errorf("entries %v, addrs %v", v.Entries, v.Addrs)
	}
	if len(v.Services) != 1 || v.Services[0].Service.Name != "web" || len(v.Services[0].Endpoints) != 1 {
		t.Fatalf("services = %+v", v.Services)
	}
	e := v.Services[0].Endpoints[0]
	if e.Pod != ns+"/web-a" || e.Node != testNode || !e.Ready || e.Port != "http" || e.Addr != ap("10.244.1.1:8080") {
		t.Errorf("endpoint = %+v", e)
	}
	if len(v.Foreign) != 1 || v.Foreign[0].Key.String() != "-t 192.0.2.1:80" {
		t.Errorf("foreign = %+v", v.Foreign)
	}
	if len(v.Rules.Chains) == 0 || len(v.RuleConfig.ClusterCIDRs) != 1 {
		t.Errorf("rules not copied: %+v", v.RuleConfig)
	}

	// The view is a copy: changing it changes nothing, and the next sync
	// has nothing to do.
	v.Servers[0].Dests[0].Weight = 7
	v.Services[0].Service.Spec.Ports[0].Port = 81
	n.resetCalls()
	mustSync(t, p, false)
	if _, writes := n.calls(); writes != 0 {
		t.Errorf("a sync after View wrote: %v", n.callLog())
	}
	if again := p.View(); again.Servers[0].Dests[0].Weight != 1 || again.Services[0].Service.Spec.Ports[0].Port != 80 {
		t.Errorf("View handed out the proxier's own data")
	}
}

func hasEntry(entries []SetEntry, base, entry string) bool {
	for _, e := range entries {
		if e.Set() == SetName(base, v1.IPv4Protocol) && e.Entry().String() == entry {
			return true
		}
	}
	return false
}

func TestViewOfAServerTheKernelRefused(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	n.ipvs.FailOn(ipvs.MethodAddService, webVS, errors.New("no room"))
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.2.1"))))
	mustSync(t, p, false)
	v := p.View()
	if len(v.Servers) != 1 || v.Servers[0].InKernel || v.Servers[0].Dests[0].InKernel {
		t.Fatalf("servers = %+v, want one not in the kernel", v.Servers)
	}
	if f := v.Services[0].Failure; f == "" {
		t.Errorf("the Service's failure is not in the view")
	}

	n.ipvs.FailOn(ipvs.MethodListServices, ipvs.ServiceKey{}, errors.New("netlink gone"))
	if v := p.View(); v.KernelErr == "" || v.Servers[0].InKernel {
		t.Errorf("a kernel that cannot be read: err %q, inKernel %v", v.KernelErr, v.Servers[0].InKernel)
	}
}

func TestViewBeforeTheFirstSync(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	if v := p.View(); v.Synced || len(v.Servers) != 0 || len(v.Services) != 0 {
		t.Errorf("view before any sync = %+v", v)
	}
}

// TestViewDuringSyncs takes views while syncs run (go test -race).
func TestViewDuringSyncs(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.2.1"), ep("10.244.2."+string(rune('2'+i%7))))))
			p.OnService(service(ns, "web"))
			if err := p.Sync(i%10 == 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 50 {
		v := p.View()
		for _, sv := range v.Servers {
			if sv.Owner.Name != "web" {
				t.Errorf("server of %v", sv.Owner)
			}
		}
	}
	wg.Wait()
}
