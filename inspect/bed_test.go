package inspect

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// The tests run the real proxier on the fakes of every kernel part, so
// Show and Explain read what the proxier really computed: its Services,
// desired state, rules and set members.

const (
	thisNode  = "node-a"
	otherNode = "node-b"
)

var (
	nodeIP      = netip.MustParseAddr("192.168.60.11")
	clusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	start       = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
)

// bed is a proxier for node-a on a fake kernel.
type bed struct {
	t     *testing.T
	ipvs  *ipvs.Fake
	clock *testingclock.FakeClock
	p     *proxier.Proxier
}

// newBed makes a proxier for node-a (InternalIP 192.168.60.11, NodePorts on
// it, clusterCIDR 10.244.0.0/16, drains of 15 minutes); mut changes its
// options.
func newBed(t *testing.T, mut ...func(*proxier.Options)) *bed {
	t.Helper()
	ipt, sets := iptables.NewFakeKernel()
	b := &bed{t: t, ipvs: ipvs.NewFake(), clock: testingclock.NewFakeClock(start)}
	k := proxier.Kernel{
		IPVS: b.ipvs, Addrs: netif.NewFakeAddrs(netif.DefaultLink), IPTables: ipt, Sets: sets,
		Conntrack: conntrack.NewFake(), Local: netif.NewFakeAddrSource(nodeIP, netip.MustParseAddr("127.0.0.1")),
	}
	opts := proxier.Options{
		Build:        proxier.BuildConfig{NodeName: thisNode, Scheduler: "rr", Family: v1.IPv4Protocol},
		Rules:        proxier.RuleConfig{Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{clusterCIDR}, MasqueradeBit: 14},
		NodePorts:    proxier.NodePortConfig{Primary: true},
		DrainTimeout: 15 * time.Minute,
		Clock:        b.clock,
	}
	for _, m := range mut {
		m(&opts)
	}
	b.p = proxier.New(zap.NewNop(), k, opts)
	b.p.OnNode(&v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: thisNode},
		Status:     v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: nodeIP.String()}}},
	})
	return b
}

// put records objects (*v1.Service, *discovery.EndpointSlice) and syncs.
func (b *bed) put(objs ...any) {
	b.t.Helper()
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.Service:
			b.p.OnService(o)
		case *discovery.EndpointSlice:
			b.p.OnSlice(o)
		default:
			b.t.Fatalf("put %T", o)
		}
	}
	if err := b.p.Sync(true); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) explain(target string, from ...string) Explanation {
	b.t.Helper()
	dst, proto, err := ParseTarget(target)
	if err != nil {
		b.t.Fatal(err)
	}
	var src netip.Addr
	if len(from) > 0 {
		src = netip.MustParseAddr(from[0])
	}
	return Explain(b.p.View(), dst, proto, src)
}

// svc is a Service in namespace default; ports are "name/proto/port" or
// "name/proto/port/nodePort".
func svc(name, clusterIP string, ports []string, mut ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			SessionAffinity: v1.ServiceAffinityNone},
	}
	for _, p := range ports {
		f := strings.Split(p, "/")
		sp := v1.ServicePort{Name: f[0], Protocol: v1.Protocol(strings.ToUpper(f[1])), Port: atoi(f[2])}
		if len(f) > 3 {
			sp.NodePort = atoi(f[3])
		}
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func atoi(s string) int32 {
	n := int32(0)
	for _, c := range s {
		n = n*10 + int32(c-'0')
	}
	return n
}

func nodePort(s *v1.Service) { s.Spec.Type = v1.ServiceTypeNodePort }

func localETP(s *v1.Service) {
	s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
}

func loadBalancer(ip string, ranges ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerSourceRanges = ranges
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: ip}}
	}
}

func externalIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

// slice is the EndpointSlice of service with port http/TCP 8080 and eps.
func slice(service string, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: service + "-1",
			Labels: map[string]string{discovery.LabelServiceName: service}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(8080))}},
		Endpoints:   eps,
	}
}

// ep is a ready endpoint of pod on node.
func ep(addr, node, pod string, mut ...func(*discovery.Endpoint)) discovery.Endpoint {
	e := discovery.Endpoint{
		Addresses:  []string{addr},
		Conditions: discovery.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To(node),
		TargetRef:  &v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: pod},
	}
	for _, m := range mut {
		m(&e)
	}
	return e
}

func terminating(e *discovery.Endpoint) {
	e.Conditions = discovery.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
}

// The pods of the tests.
var (
	webA   = func() discovery.Endpoint { return ep("10.244.1.2", thisNode, "web-a") }
	webB   = func() discovery.Endpoint { return ep("10.244.2.2", otherNode, "web-b") }
	bLocal = func() discovery.Endpoint { return ep("10.244.2.3", otherNode, "b-local") }
)

// path returns the path of the kind of client from.
func path(t *testing.T, ex Explanation, from string) Path {
	t.Helper()
	for _, p := range ex.Paths {
		if p.From == from {
			return p
		}
	}
	t.Fatalf("no path from %s in %+v", from, ex.Paths)
	return Path{}
}

// mustContain fails unless every want is in got.
func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q not in:\n%s", what, w, got)
		}
	}
}

func stepsString(p Path) string {
	var b strings.Builder
	for _, s := range p.Steps {
		b.WriteString(s.Where + " | " + s.Rule + " | " + s.Does + "\n")
	}
	return b.String()
}
