package inspect

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// The "why" cases: what serves a connection, and why it is or is not
// masqueraded.

func TestExplainClusterIP(t *testing.T) {
	b := newBed(t)
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webA(), webB()))
	ex := b.explain("10.96.0.10:80")
	if ex.VirtualServer == nil || ex.VirtualServer.Kind != KindClusterIP || ex.VirtualServer.Service != "default/web" || ex.VirtualServer.Port != "http" {
		t.Fatalf("virtual server = %+v", ex.VirtualServer)
	}
	if len(ex.Notes) != 0 {
		t.Errorf("notes = %q", ex.Notes)
	}

	out := path(t, ex, FromOutside)
	if out.Verdict != VerdictServed || len(out.Endpoints) != 2 || !out.Endpoints[0].Masquerade || !out.Endpoints[1].Masquerade {
		t.Fatalf("from outside: %+v", out)
	}
	mustContain(t, "outside, why", out.Endpoints[0].Why, "outside clusterCIDR 10.244.0.0/16")
	mustContain(t, "outside, steps", stepsString(out),
		"nat KIPVS-SERVICES | -m set --match-set KIPVS-CLUSTER-IP dst,dst -j KIPVS-CLUSTER",
		"nat KIPVS-CLUSTER | -j KIPVS-MARK-MASQ", "filter KIPVS-FILTER | -m set --match-set KIPVS-CLUSTER-IP dst,dst -j RETURN",
		"IPVS | -t 10.96.0.10:80 rr", "nat KIPVS-POSTROUTING | -j MASQUERADE --random-fully")
	mustContain(t, "outside, choice", out.Choice, "every endpoint")

	pod := path(t, ex, FromPod)
	if pod.Verdict != VerdictServed || pod.Endpoints[0].Masquerade || pod.Endpoints[1].Masquerade {
		t.Fatalf("from a pod: %+v", pod)
	}
	mustContain(t, "pod, why", pod.Endpoints[0].Why, "the source is in clusterCIDR 10.244.0.0/16 (a pod)")
	// web-a runs here: a pod that is web-a itself would be masqueraded.
	mustContain(t, "pod, assumptions", strings.Join(pod.Assumptions, "\n"), "the source is not 10.244.1.2 (KIPVS-LOOP-BACK)")

	node := path(t, ex, FromNode)
	if node.Verdict != VerdictServed || node.Source != "10.96.0.10" || !node.Endpoints[0].Masquerade {
		t.Fatalf("from the node: %+v", node)
	}
}

func TestExplainHairpin(t *testing.T) {
	b := newBed(t)
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webA(), webB()))
	ex := b.explain("10.96.0.10:80", "10.244.1.2")
	if len(ex.Paths) != 1 {
		t.Fatalf("paths = %+v", ex.Paths)
	}
	p := ex.Paths[0]
	if p.From != FromPod || p.Source != "10.244.1.2" || p.Verdict != VerdictServed || len(p.Assumptions) != 0 {
		t.Fatalf("path = %+v", p)
	}
	self, other := p.Endpoints[0], p.Endpoints[1]
	if !self.Masquerade || self.Pod != "default/web-a" || other.Masquerade {
		t.Fatalf("endpoints = %+v", p.Endpoints)
	}
	mustContain(t, "hairpin", self.Why, "hairpin", "KIPVS-LOOP-BACK")
}

func TestExplainMasqueradeAll(t *testing.T) {
	b := newBed(t, func(o *proxier.Options) { o.Rules.MasqueradeAll = true })
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webB()))
	p := path(t, b.explain("10.96.0.10:80"), FromPod)
	if p.Verdict != VerdictServed || !p.Endpoints[0].Masquerade {
		t.Fatalf("from a pod: %+v", p)
	}
	mustContain(t, "why", p.Endpoints[0].Why, "masqueradeAll")
}

func TestExplainWithoutClusterCIDR(t *testing.T) {
	b := newBed(t, func(o *proxier.Options) { o.Rules.ClusterCIDRs = nil })
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webB()))
	ex := b.explain("10.96.0.10:80")
	if len(ex.Paths) != 2 {
		t.Fatalf("paths = %+v, want outside and node only (no pod is known)", ex.Paths)
	}
	node := path(t, ex, FromNode)
	if !node.Endpoints[0].Masquerade {
		t.Fatalf("from the node: %+v", node)
	}
	mustContain(t, "node, why", node.Endpoints[0].Why, "the node sends from a VIP")
	if out := path(t, ex, FromOutside); out.Endpoints[0].Masquerade {
		t.Errorf("without clusterCIDR only the node's own VIP source is masqueraded: %+v", out)
	}
}

func TestExplainNodePortCluster(t *testing.T) {
	b := newBed(t)
	b.put(svc("np", "10.96.0.20", []string{"http/tcp/80/30080"}, nodePort), slice("np", webA(), webB()))
	ex := b.explain("192.168.60.11:30080")
	if ex.VirtualServer == nil || ex.VirtualServer.Kind != KindNodePort || ex.VirtualServer.Port != "http" || ex.VirtualServer.TrafficPolicy != "Cluster" {
		t.Fatalf("virtual server = %+v", ex.VirtualServer)
	}
	out := path(t, ex, FromOutside)
	if out.Verdict != VerdictServed || !out.Endpoints[0].Masquerade {
		t.Fatalf("from outside: %+v", out)
	}
	mustContain(t, "why", out.Endpoints[0].Why, "externalTrafficPolicy Cluster")
}

func TestExplainLocalNodePortWithALocalEndpoint(t *testing.T) {
	b := newBed(t)
	b.put(svc("lok", "10.96.0.90", []string{"http/tcp/80/30083"}, nodePort, localETP), slice("lok", webA(), webB()))
	ex := b.explain("192.168.60.11:30083")
	out := path(t, ex, FromOutside)
	if out.Verdict != VerdictServed || len(out.Endpoints) != 1 || out.Endpoints[0].Pod != "default/web-a" || out.Endpoints[0].Masquerade {
		t.Fatalf("from outside: %+v", out)
	}
	mustContain(t, "why", out.Endpoints[0].Why, "externalTrafficPolicy Local", "KIPVS-EXTERNAL-LOCAL")
	mustContain(t, "choice", out.Choice, "externalTrafficPolicy Local: only the endpoints on this node (node-a)")
	if ex.VirtualServer.ShortCircuitMark == 0 {
		t.Errorf("no short circuit on %+v", ex.VirtualServer)
	}
}

func TestExplainShortCircuit(t *testing.T) {
	b := newBed(t)
	b.put(svc("local", "10.96.0.30", []string{"http/tcp/80/30081"}, nodePort, localETP), slice("local", bLocal()))
	ex := b.explain("192.168.60.11:30081")
	pod := path(t, ex, FromPod)
	if pod.Verdict != VerdictServed || !strings.HasPrefix(pod.VirtualServer, "-f ") || len(pod.Endpoints) != 1 ||
		pod.Endpoints[0].Pod != "default/b-local" || pod.Endpoints[0].Masquerade {
		t.Fatalf("from a pod: %+v", pod)
	}
	mustContain(t, "pod, steps", stepsString(pod), "mangle KIPVS-SHORT-CIRCUIT-PODS | -s 10.244.0.0/16", "selects the short circuit")
	mustContain(t, "pod, choice", pod.Choice, "short circuit")

	node := path(t, ex, FromNode)
	if node.Verdict != VerdictServed || !strings.HasPrefix(node.VirtualServer, "-f ") || !node.Endpoints[0].Masquerade {
		t.Fatalf("from the node: %+v", node)
	}
	mustContain(t, "node, why", node.Endpoints[0].Why, "the node reaching a short circuit")
	mustContain(t, "node, steps", stepsString(node), "mangle KIPVS-SHORT-CIRCUIT | ")

	show := NewShow(b.p.View())
	var fwm *VirtualServer
	for i, vs := range show.VirtualServers {
		if vs.Kind == KindShortCircuit {
			fwm = &show.VirtualServers[i]
		}
	}
	if fwm == nil || fwm.Service != "default/local" || fwm.Port != "http" || len(fwm.ShortCircuitOf) != 1 || fwm.ShortCircuitOf[0] != "192.168.60.11:30081/tcp" {
		t.Errorf("short circuit in show: %+v", fwm)
	}
}

func TestExplainTerminatingFallback(t *testing.T) {
	b := newBed(t)
	b.put(svc("term", "10.96.0.60", []string{"http/tcp/80"}), slice("term", ep("10.244.2.6", otherNode, "old", terminating)))
	p := path(t, b.explain("10.96.0.60:80"), FromPod)
	if p.Verdict != VerdictServed || len(p.Endpoints) != 1 {
		t.Fatalf("from a pod: %+v", p)
	}
	mustContain(t, "choice", p.Choice, "none is ready", "KEP-1669")
}

// The "why not" cases.

func TestExplainNotAServicePortOnAVIP(t *testing.T) {
	b := newBed(t)
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webA()))
	for _, target := range []string{"10.96.0.10:81", "10.96.0.10:80/udp"} {
		ex := b.explain(target)
		if ex.VirtualServer != nil {
			t.Fatalf("%s: virtual server %+v", target, ex.VirtualServer)
		}
		for _, from := range []string{FromOutside, FromPod, FromNode} {
			p := path(t, ex, from)
			if p.Verdict != VerdictRejected {
				t.Errorf("%s from %s: %+v", target, from, p)
			}
			mustContain(t, target+" from "+from, p.Summary, "kubernetes#72236")
		}
		mustContain(t, target+" notes", strings.Join(ex.Notes, "\n"), "10.96.0.10 is a Service address of default/web (80/tcp)",
			"is none of its ports", "bound on kipvs0", "rejected")
	}
}

// With serviceCIDRs the node accepts every address of the CIDR by its
// local route: a ClusterIP is served as before, and an unallocated
// address or another port is rejected (kubernetes#72236), not handed to
// the node's sockets.
func TestExplainServiceCIDR(t *testing.T) {
	cidr := netip.MustParsePrefix("10.96.0.0/16")
	b := newBed(t, func(o *proxier.Options) {
		o.Build.ServiceCIDRs = []netip.Prefix{cidr}
		o.Rules.ServiceCIDRs = []netip.Prefix{cidr}
	})
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webA()))
	if p := path(t, b.explain("10.96.0.10:80"), FromPod); p.Verdict != VerdictServed {
		t.Errorf("the ClusterIP from a pod: %+v", p)
	}
	for _, target := range []string{"10.96.0.10:22", "10.96.7.7:22"} {
		ex := b.explain(target)
		for _, from := range []string{FromOutside, FromPod, FromNode} {
			if p := path(t, ex, from); p.Verdict != VerdictRejected {
				t.Errorf("%s from %s: %+v", target, from, p)
			}
		}
		mustContain(t, target+" notes", strings.Join(ex.Notes, "\n"), "serviceCIDR 10.96.0.0/16", "local route on kipvs0", "rejected")
	}
}

func TestExplainLoadBalancerSourceRanges(t *testing.T) {
	b := newBed(t)
	b.put(svc("lb", "10.96.0.40", []string{"http/tcp/80/30082"}, loadBalancer("203.0.113.10", "10.99.0.0/16")), slice("lb", webA()))
	ex := b.explain("203.0.113.10:80")
	if ex.VirtualServer == nil || ex.VirtualServer.Kind != KindLoadBalancer || len(ex.VirtualServer.SourceRanges) != 1 || ex.VirtualServer.SourceRanges[0] != "10.99.0.0/16" {
		t.Fatalf("virtual server = %+v", ex.VirtualServer)
	}
	out := path(t, ex, FromOutside)
	if out.Verdict != VerdictDropped {
		t.Fatalf("from outside: %+v", out)
	}
	mustContain(t, "outside", out.Summary+stepsString(out), "loadBalancerSourceRanges", "KIPVS-LB-FIREWALL", "KIPVS-LB-SOURCES", "mangle KIPVS-FIREWALL")
	mustContain(t, "outside, assumptions", strings.Join(out.Assumptions, "\n"), "the source is not 10.99.0.0/16 (KIPVS-LB-SOURCES)")
	// The node's address is in no range: the node is dropped too.
	if node := path(t, ex, FromNode); node.Verdict != VerdictDropped {
		t.Errorf("from the node: %+v", node)
	}
	// A client in the range is served.
	in := b.explain("203.0.113.10:80", "10.99.1.1").Paths[0]
	if in.Verdict != VerdictServed || in.From != FromOutside || !in.Endpoints[0].Masquerade {
		t.Errorf("from 10.99.1.1: %+v", in)
	}
}

func TestExplainLocalNodePortWithoutLocalEndpoint(t *testing.T) {
	b := newBed(t)
	b.put(svc("local", "10.96.0.30", []string{"http/tcp/80/30081"}, nodePort, localETP), slice("local", bLocal()))
	out := path(t, b.explain("192.168.60.11:30081"), FromOutside)
	if out.Verdict != VerdictRefused || out.VirtualServer != "-t 192.168.60.11:30081" {
		t.Fatalf("from outside: %+v", out)
	}
	mustContain(t, "choice", out.Choice, "externalTrafficPolicy Local", "has none here", "default/b-local on node-b")
}

func TestExplainInternalTrafficPolicyLocalWithoutLocalEndpoint(t *testing.T) {
	b := newBed(t)
	b.put(svc("itp", "10.96.0.80", []string{"http/tcp/80"}, func(s *v1.Service) {
		s.Spec.InternalTrafficPolicy = ptrTo(v1.ServiceInternalTrafficPolicyLocal)
	}), slice("itp", webB()))
	p := path(t, b.explain("10.96.0.80:80"), FromPod)
	if p.Verdict != VerdictRefused {
		t.Fatalf("from a pod: %+v", p)
	}
	mustContain(t, "choice", p.Choice, "internalTrafficPolicy Local", "default/web-b on node-b")
}

func ptrTo[T any](v T) *T { return &v }

func TestExplainServiceWithoutEndpoints(t *testing.T) {
	b := newBed(t)
	b.put(svc("empty", "10.96.0.70", []string{"http/tcp/80"}))
	p := path(t, b.explain("10.96.0.70:80"), FromPod)
	if p.Verdict != VerdictRefused {
		t.Fatalf("from a pod: %+v", p)
	}
	mustContain(t, "choice", p.Choice, "default/empty has no endpoint for this port")
}

func TestExplainExternalIPs(t *testing.T) {
	b := newBed(t, func(o *proxier.Options) {
		o.Build.ExternalIPCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	})
	b.put(svc("ext", "10.96.0.50", []string{"http/tcp/80"}, externalIPs("198.51.100.5", "192.0.2.9")), slice("ext", webB()))
	ok := b.explain("198.51.100.5:80")
	if ok.VirtualServer == nil || ok.VirtualServer.Kind != KindExternalIP || path(t, ok, FromOutside).Verdict != VerdictServed {
		t.Fatalf("allowed external IP: %+v", ok)
	}
	no := b.explain("192.0.2.9:80")
	if no.VirtualServer != nil || path(t, no, FromOutside).Verdict != VerdictNotLocal {
		t.Fatalf("disallowed external IP: %+v", no)
	}
	mustContain(t, "notes", strings.Join(no.Notes, "\n"), "default/ext: externalIP 192.0.2.9 is not programmed",
		"externalIPs.allowedCIDRs: 198.51.100.0/24", "CVE-2020-8554")
}

func TestExplainNotANodePortAddress(t *testing.T) {
	b := newBed(t)
	b.put(svc("np", "10.96.0.20", []string{"http/tcp/80/30080"}, nodePort), slice("np", webB()))
	ex := b.explain("127.0.0.1:30080")
	if ex.VirtualServer != nil || path(t, ex, FromNode).Verdict != VerdictHost {
		t.Fatalf("loopback NodePort: %+v", ex)
	}
	mustContain(t, "notes", strings.Join(ex.Notes, "\n"),
		"30080/tcp is the NodePort of default/np (port http), but 127.0.0.1 is not one of this node's NodePort addresses (192.168.60.11; nodePortAddresses)",
		"never served on loopback")
}

func TestExplainNoServiceAtAll(t *testing.T) {
	b := newBed(t)
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}))
	ex := b.explain("10.1.2.3:80")
	for _, p := range ex.Paths {
		if p.Verdict != VerdictNotLocal {
			t.Errorf("from %s: %+v", p.From, p)
		}
	}
	mustContain(t, "notes", strings.Join(ex.Notes, "\n"), "no Service has 10.1.2.3:80/tcp; it is not an address of this node")
	host := b.explain("192.168.60.11:22")
	if p := path(t, host, FromOutside); p.Verdict != VerdictHost {
		t.Errorf("a host port: %+v", p)
	}
	mustContain(t, "host notes", strings.Join(host.Notes, "\n"), "it is an address of this node")
}

func TestExplainForeignVirtualServer(t *testing.T) {
	b := newBed(t)
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}))
	if err := b.ipvs.Load("-A -t 192.168.60.11:9999 -s wlc\n"); err != nil {
		t.Fatal(err)
	}
	ex := b.explain("192.168.60.11:9999")
	if p := path(t, ex, FromOutside); p.Verdict != VerdictForeign || p.VirtualServer != "-t 192.168.60.11:9999" {
		t.Errorf("from outside: %+v", p)
	}
	mustContain(t, "notes", strings.Join(ex.Notes, "\n"), "a virtual server kube-ipvs did not make")
	if s := NewShow(b.p.View()); len(s.Foreign) != 1 || s.Foreign[0].Key != "-t 192.168.60.11:9999" {
		t.Errorf("show foreign = %+v", s.Foreign)
	}
}

func TestExplainWantedButNotInTheKernel(t *testing.T) {
	b := newBed(t)
	bad := ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.99"), Proto: ipvs.TCP, Port: 80}
	b.ipvs.FailOn(ipvs.MethodAddService, bad, errors.New("no memory"))
	b.put(svc("broken", "10.96.0.99", []string{"http/tcp/80"}), slice("broken", webB()))
	ex := b.explain("10.96.0.99:80")
	if ex.VirtualServer == nil || ex.VirtualServer.InKernel {
		t.Fatalf("virtual server = %+v", ex.VirtualServer)
	}
	if p := path(t, ex, FromPod); p.Verdict == VerdictServed {
		t.Errorf("served by a virtual server the kernel lacks: %+v", p)
	}
	mustContain(t, "notes", strings.Join(ex.Notes, "\n"), "kube-ipvs wants -t 10.96.0.99:80 for default/broken, but the kernel does not hold it",
		"retried", "no memory")
}

func TestExplainBeforeTheFirstSync(t *testing.T) {
	b := newBed(t)
	b.p.OnService(svc("web", "10.96.0.10", []string{"http/tcp/80"}))
	ex := Explain(b.p.View(), netip.MustParseAddrPort("10.96.0.10:80"), ipvs.TCP, netip.Addr{})
	mustContain(t, "notes", strings.Join(ex.Notes, "\n"), "has not synced")
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in, addr string
		proto    ipvs.Protocol
		bad      bool
	}{
		{in: "10.96.0.10:80", addr: "10.96.0.10:80", proto: ipvs.TCP},
		{in: "10.96.0.10:53/udp", addr: "10.96.0.10:53", proto: ipvs.UDP},
		{in: "[fd00::a]:9/SCTP", addr: "[fd00::a]:9", proto: ipvs.SCTP},
		{in: "[::ffff:10.0.0.1]:80", addr: "10.0.0.1:80", proto: ipvs.TCP},
		{in: "10.96.0.10", bad: true},
		{in: "10.96.0.10:80/icmp", bad: true},
	} {
		a, p, err := ParseTarget(tc.in)
		if tc.bad != (err != nil) || (!tc.bad && (a.String() != tc.addr || p != tc.proto)) {
			t.Errorf("ParseTarget(%q) = %v, %v, %v", tc.in, a, p, err)
		}
	}
}

// ingress.denySourceCIDRs drops a client in it before any Service rule;
// one outside it, and pods reaching the ClusterIP, are served. With
// egress.masquerade the endpoints on the pod network keep the source.
func TestExplainIngressDenyAndEgressMasquerade(t *testing.T) {
	b := newBed(t, func(o *proxier.Options) {
		o.Rules.IngressDenySourceCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		o.Rules.EgressMasquerade = true
		o.Rules.NonMasqueradeCIDRs = []netip.Prefix{clusterCIDR}
	})
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80/30080"}, nodePort), slice("web", webA()))
	denied := b.explain("192.168.60.11:30080", "198.51.100.7").Paths[0]
	if denied.Verdict != VerdictDropped {
		t.Fatalf("from a denied source: %+v", denied)
	}
	mustContain(t, "denied", denied.Summary+stepsString(denied), "ingress.denySourceCIDRs", "mangle KIPVS-INGRESS-DENY")
	other := b.explain("192.168.60.11:30080", "203.0.113.7").Paths[0]
	if other.Verdict != VerdictServed || !other.Endpoints[0].Masquerade {
		t.Errorf("from another source: %+v", other)
	}
	pod := b.explain("10.96.0.10:80", "10.244.1.9").Paths[0]
	if pod.Verdict != VerdictServed || pod.Endpoints[0].Masquerade {
		t.Errorf("a pod reaching the ClusterIP: %+v", pod)
	}
}
