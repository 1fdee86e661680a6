package proxier

import (
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// localLB is a LoadBalancer Service with externalTrafficPolicy Local on
// ClusterIP vip, NodePort np and the given ingress IPs.
func localLB(name, vip string, np int32, ips ...string) *v1.Service {
	return service("default", name, loadBalancer(ips...), externalLocal(32000+np-30000), withClusterIP(vip),
		func(s *v1.Service) { s.Spec.Ports[0].NodePort = np })
}

func wantLines(t *testing.T, what, dump string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		neg := strings.HasPrefix(l, "!")
		if strings.Contains(dump, strings.TrimPrefix(l, "!")) == neg {
			t.Errorf("%s: %q %s in:\n%s", what, strings.TrimPrefix(l, "!"), map[bool]string{true: "present", false: "missing"}[neg], dump)
		}
	}
}

func TestShortCircuitMarks(t *testing.T) {
	n, p, _, _ := newNorthSouthProxier(t, "192.168.50.11")
	p.OnNode(nodeObject("192.168.50.11"))
	p.OnService(localLB("a", "10.96.0.21", 30081, "203.0.113.21"))
	p.OnSlice(slice("default", "a-1", "a", withEndpoints(ep("10.244.1.2", onNode(testNode)), ep("10.244.2.2"))))
	p.OnService(localLB("b", "10.96.0.22", 30082, "203.0.113.22"))
	p.OnSlice(slice("default", "b-1", "b", withEndpoints(ep("10.244.2.3"))))
	mustSync(t, p, true)

	// Each Local port gets a firewall-mark virtual server with every
	// endpoint; its external addresses map to that mark.
	wantLines(t, "ipvs", n.ipvsDump(),
		"-A -t 203.0.113.21:80 -s rr\n-a -t 203.0.113.21:80 -r 10.244.1.2:8080 -m -w 1\n-A",
		"-A -t 203.0.113.22:80 -s rr\n-A",
		"-A -f 8192 -s rr\n-a -f 8192 -r 10.244.1.2:8080 -m -w 1\n-a -f 8192 -r 10.244.2.2:8080 -m -w 1\n",
		"-A -f 8193 -s rr\n-a -f 8193 -r 10.244.2.3:8080 -m -w 1\n",
	)
	wantLines(t, "sets", n.sets.Dump(),
		"add KIPVS-SHORT-CIRCUIT 192.168.50.11,tcp:30081 skbmark 0x2000\n",
		"add KIPVS-SHORT-CIRCUIT 203.0.113.21,tcp:80 skbmark 0x2000\n",
		"add KIPVS-SHORT-CIRCUIT 192.168.50.11,tcp:30082 skbmark 0x2001\n",
		"add KIPVS-SHORT-CIRCUIT 203.0.113.22,tcp:80 skbmark 0x2001\n",
		"add KIPVS-OWNED-MARK 8192\n", "add KIPVS-OWNED-MARK 8193\n",
	)
	n.resetCalls()
	mustSync(t, p, false)
	if _, w := n.calls(); w != 0 {
		t.Errorf("second sync wrote %d times: %v", w, n.callLog())
	}

	// a goes: its mark is free, and the next Service takes it.
	p.OnServiceDelete(localLB("a", "10.96.0.21", 30081))
	mustSync(t, p, false)
	wantLines(t, "ipvs", n.ipvsDump(), "!-A -f 8192", "-A -f 8193")
	wantLines(t, "sets", n.sets.Dump(), "!skbmark 0x2000", "!add KIPVS-OWNED-MARK 8192\n")
	p.OnService(localLB("c", "10.96.0.23", 30083, "203.0.113.23"))
	mustSync(t, p, false)
	wantLines(t, "ipvs", n.ipvsDump(), "-A -f 8192 -s rr\n-A -f 8193")
	wantLines(t, "sets", n.sets.Dump(), "add KIPVS-SHORT-CIRCUIT 203.0.113.23,tcp:80 skbmark 0x2000\n")

	// A load-balancer IP moves from b to c in one sync: its member takes
	// c's mark in place (deleting b's would delete the key).
	p.OnService(localLB("b", "10.96.0.22", 30082))
	p.OnService(localLB("c", "10.96.0.23", 30083, "203.0.113.23", "203.0.113.22"))
	mustSync(t, p, false)
	sets := n.sets.Dump()
	wantLines(t, "sets", sets, "add KIPVS-SHORT-CIRCUIT 203.0.113.22,tcp:80 skbmark 0x2000\n")
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync after the move wrote %d times (the mirror drifted): %v", w, n.callLog())
	}

	// A restarted kube-ipvs gets every mark back from the kernel and writes
	// nothing. Without them, b and c would take 8192 and 8193 in whatever
	// order they were rebuilt.
	before := n.ipvsDump() + n.sets.Dump()
	k := p.kernel
	q := New(zap.NewNop(), k, p.opts)
	q.OnNode(nodeObject("192.168.50.11"))
	q.OnService(localLB("b", "10.96.0.22", 30082))
	q.OnSlice(slice("default", "b-1", "b", withEndpoints(ep("10.244.2.3"))))
	q.OnService(localLB("c", "10.96.0.23", 30083, "203.0.113.23", "203.0.113.22"))
	n.resetCalls()
	mustSync(t, q, true)
	if after := n.ipvsDump() + n.sets.Dump(); after != before {
		t.Errorf("a restart changed the kernel:\n%s\nwant:\n%s", after, before)
	}
}

func TestShortCircuitOnlyForLocalPortsReachableHere(t *testing.T) {
	cfg := nsBuild
	pods := slice("default", "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1")))
	for _, c := range []struct {
		name string
		svc  *v1.Service
		cfg  BuildConfig
		want int
	}{
		{"Cluster policy: none", service("default", "web", loadBalancer("203.0.113.9")), cfg, 0},
		{"Local LoadBalancer: one", service("default", "web", loadBalancer("203.0.113.9"), externalLocal(32000)), cfg, 1},
		{"Local NodePort without NodePort addresses nor ingress: none", service("default", "web", nodePortType(30080), externalLocal(0)),
			func() BuildConfig { c := cfg; c.NodePortAddrs = nil; return c }(), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, _ := BuildService(c.svc, []*discovery.EndpointSlice{pods}, c.cfg)
			got := 0
			for _, p := range f.Servers {
				if p.Service.Key.IsMark() {
					got++
					if len(p.Dests) != 2 {
						t.Errorf("short circuit %s has %d real servers, want both endpoints", p.Service.Key, len(p.Dests))
					}
				}
			}
			if got != c.want {
				t.Errorf("%d short-circuit virtual servers, want %d:\n%s", got, c.want, fragmentDump(f))
			}
		})
	}
}

func TestMarksSkipTheMasqueradeBitAndRunOut(t *testing.T) {
	m := newMarks(0) // bit 0: only even marks are handed out
	frag := func() *Fragment {
		return &Fragment{Servers: []ServerPart{{VirtualServer: VirtualServer{Service: ipvs.Service{Key: ipvs.MarkKey(1, false)}}}}}
	}
	name := func(i int) types.NamespacedName {
		return types.NamespacedName{Namespace: "ns", Name: string(rune('a'+i%26)) + strings.Repeat("x", i/26)}
	}
	var got []uint32
	for i := range 3 {
		f := frag()
		if skips := m.assign(name(i), f); len(skips) != 0 {
			t.Fatalf("skips: %v", skips)
		}
		got = append(got, f.Servers[0].Service.Key.Mark)
	}
	if got[0] != 0x2000 || got[1] != 0x2002 || got[2] != 0x2004 {
		t.Errorf("marks %#x, want 0x2000 0x2002 0x2004", got)
	}
	for i := 3; i < int(MarkLast-MarkFirst+1)/2; i++ {
		m.assign(name(i), frag())
	}
	f := frag()
	skips := m.assign(name(99999), f)
	if len(skips) != 1 || skips[0].Reason != ReasonNoMarkLeft || len(f.Servers) != 0 {
		t.Errorf("past the last mark: skips %v, servers %v; want ReasonNoMarkLeft and the short circuit dropped", skips, f.Servers)
	}
	m.assign(name(1), nil) // frees 0x2002
	f = frag()
	if m.assign(name(99999), f); len(f.Servers) != 1 || f.Servers[0].Service.Key.Mark != 0x2002 {
		t.Errorf("after a mark was freed: %v, want it taken", f.Servers)
	}
}

func TestAShortCircuitsUDPEndpointLeavingDeletesItsFlows(t *testing.T) {
	n, p, _, _ := newNorthSouthProxier(t, "192.168.50.11")
	p.OnNode(nodeObject("192.168.50.11"))
	dns := func(s *v1.Service) { s.Spec.Ports = []v1.ServicePort{svcPort("dns", v1.ProtocolUDP, 53)} }
	p.OnService(service("default", "dns", loadBalancer("203.0.113.53"), externalLocal(32053), withClusterIP("10.96.0.53"), dns,
		func(s *v1.Service) { s.Spec.Ports[0].NodePort = 30053 }))
	udp := withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 5353))
	p.OnSlice(slice("default", "dns-1", "dns", udp, withEndpoints(ep("10.244.1.5", onNode(testNode)), ep("10.244.2.5"))))
	mustSync(t, p, true)
	wantLines(t, "ipvs", n.ipvsDump(), "-a -f 8192 -r 10.244.2.5:5353 -m -w 1\n")

	// The remote endpoint goes: it was only in the short circuit, whose
	// flows were made to the NodePort and the load-balancer IP.
	p.OnSlice(slice("default", "dns-1", "dns", udp, withEndpoints(ep("10.244.1.5", onNode(testNode)))))
	mustSync(t, p, false)
	gone := ap("10.244.2.5:5353")
	want := []conntrack.Flow{
		{Service: ap("192.168.50.11:30053"), Endpoint: gone},
		{Service: ap("203.0.113.53:53"), Endpoint: gone},
	}
	got := n.ct.Deleted()
	for _, f := range want {
		if !slices.Contains(got, f) {
			t.Errorf("conntrack flows deleted %v; want %v among them", got, f)
		}
	}
	for _, f := range got {
		if f.Endpoint != gone {
			t.Errorf("flow %v deleted; only %s left", f, gone)
		}
	}
}

func TestAForeignFirewallMarkVirtualServerIsLeftAlone(t *testing.T) {
	n, p, _, _ := newNorthSouthProxier(t, "192.168.50.11")
	// keepalived's, on the first mark kube-ipvs would take.
	foreign := ipvs.Service{Key: ipvs.MarkKey(MarkFirst, false), Scheduler: "wlc"}
	if err := n.ipvs.AddService(foreign); err != nil {
		t.Fatal(err)
	}
	if err := n.ipvs.AddDestination(foreign.Key, ipvs.Destination{Addr: ap("192.0.2.9:80"), Weight: 3}); err != nil {
		t.Fatal(err)
	}
	keepalived := "-A -f 8192 -s wlc\n-a -f 8192 -r 192.0.2.9:80 -m -w 3\n"
	p.OnNode(nodeObject("192.168.50.11"))
	p.OnService(localLB("a", "10.96.0.21", 30081, "203.0.113.21"))
	p.OnSlice(slice("default", "a-1", "a", withEndpoints(ep("10.244.2.2"))))
	// The first sync is full: it reads the kernel and plans with 8193, so
	// no packet is ever marked for keepalived's virtual server.
	spy := &addSpy{Sets: n.sets}
	p.kernel.Sets = spy
	mustSync(t, p, false)
	for _, e := range spy.added {
		if e.Mark == MarkFirst {
			t.Errorf("a member marked for the foreign virtual server was added: %s", e)
		}
	}
	wantLines(t, "ipvs", n.ipvsDump(), keepalived, "-A -f 8193 -s rr\n-a -f 8193 -r 10.244.2.2:8080 -m -w 1\n")
	wantLines(t, "sets", n.sets.Dump(), "add KIPVS-SHORT-CIRCUIT 203.0.113.21,tcp:80 skbmark 0x2001\n", "!add KIPVS-OWNED-MARK 8192\n")

	// One made after the kernel was read: the add fails, the Service gets
	// another mark at the next sync.
	late := ipvs.Service{Key: ipvs.MarkKey(MarkFirst+2, false), Scheduler: "wlc"}
	if err := n.ipvs.AddService(late); err != nil {
		t.Fatal(err)
	}
	p.OnService(localLB("b", "10.96.0.22", 30082, "203.0.113.22"))
	mustSync(t, p, false)
	mustSync(t, p, false)
	wantLines(t, "ipvs", n.ipvsDump(), "-A -f 8194 -s wlc\n-A -f 8195 -s rr\n")
	wantLines(t, "sets", n.sets.Dump(), "add KIPVS-SHORT-CIRCUIT 203.0.113.22,tcp:80 skbmark 0x2003\n")
	keepalived += "-A -f 8194 -s wlc\n"
	if err := Cleanup(p.kernel, p.rules, v1.IPv4Protocol); err != nil {
		t.Fatal(err)
	}
	if got := n.ipvs.Dump(); got != keepalived {
		t.Errorf("after cleanup:\n%s\nwant keepalived's alone:\n%s", got, keepalived)
	}
}

// addSpy records the members added through it.
type addSpy struct {
	iptables.Sets
	added []iptables.Entry
}

func (s *addSpy) AddEntry(name string, e iptables.Entry) error {
	s.added = append(s.added, e)
	return s.Sets.AddEntry(name, e)
}
