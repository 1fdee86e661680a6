package proxier

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// Builders for the north-south half of a Service.

func nodePortType(ports ...int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeNodePort
		for i := range s.Spec.Ports {
			if i < len(ports) {
				s.Spec.Ports[i].NodePort = ports[i]
			}
		}
	}
}

// loadBalancer makes the Service a LoadBalancer with NodePort 30080 on its
// first port and the given ingress IPs in its status.
func loadBalancer(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		nodePortType(30080)(s)
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
	}
}

func externalLocal(hcnp int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = hcnp
	}
}

func externalIPs(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

func sourceRangesOf(cidrs ...string) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}

// nsBuild is v4Build on a node with two NodePort addresses, whose primary
// address is 192.168.50.11, and which holds 192.168.50.99 on an interface.
var nsBuild = func() BuildConfig {
	c := v4Build
	c.NodePortAddrs = []netip.Addr{netip.MustParseAddr("192.168.50.11"), netip.MustParseAddr("192.168.60.11")}
	c.NodeIPs = []netip.Addr{netip.MustParseAddr("192.168.50.11")}
	c.LocalAddrs = map[netip.Addr]bool{
		netip.MustParseAddr("192.168.50.11"): true, netip.MustParseAddr("192.168.60.11"): true,
		netip.MustParseAddr("192.168.50.99"): true, netip.MustParseAddr("127.0.0.1"): true,
	}
	return c
}()

func TestBuildNorthSouth(t *testing.T) {
	const ns = "default"
	// One pod on this node (node-a), one on node-b.
	pods := []*discovery.EndpointSlice{slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1")))}
	remoteOnly := []*discovery.EndpointSlice{slice(ns, "web-1", "web", withEndpoints(ep("10.244.2.1")))}
	clusterIPPart := []string{
		"-A -t 10.96.0.10:80 -s rr",
		"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
		"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
	}
	cases := []struct {
		name   string
		svc    *v1.Service
		slices []*discovery.EndpointSlice
		cfg    *BuildConfig
		want   []string
		skips  map[Reason]int
		health *Health
	}{
		{
			name:   "NodePort: a virtual server on each NodePort address, masqueraded",
			svc:    service(ns, "web", nodePortType(30080)),
			slices: pods,
			want: slices.Concat(clusterIPPart, []string{
				"-A -t 192.168.50.11:30080 -s rr",
				"-a -t 192.168.50.11:30080 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 192.168.50.11:30080 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 192.168.60.11:30080 -s rr",
				"-a -t 192.168.60.11:30080 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 192.168.60.11:30080 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-NODE-PORT 192.168.50.11,tcp:30080",
				"add KIPVS-NODE-PORT 192.168.60.11,tcp:30080",
				"add KIPVS-VIP 10.96.0.10",
			}),
		},
		{
			name:   "NodePort with externalTrafficPolicy Local: local endpoints only, source kept",
			svc:    service(ns, "web", nodePortType(30080), externalLocal(0)),
			slices: pods,
			want: slices.Concat(clusterIPPart, []string{
				"-A -t 192.168.50.11:30080 -s rr",
				"-a -t 192.168.50.11:30080 -r 10.244.1.1:8080 -m -w 1",
				"-A -t 192.168.60.11:30080 -s rr",
				"-a -t 192.168.60.11:30080 -r 10.244.1.1:8080 -m -w 1",
				// Pods and the node itself reach every endpoint (short circuit 1).
				"-A -f 1 -s rr",
				"-a -f 1 -r 10.244.1.1:8080 -m -w 1",
				"-a -f 1 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-LOCAL 192.168.50.11,tcp:30080",
				"add KIPVS-EXTERNAL-LOCAL 192.168.60.11,tcp:30080",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-NODE-PORT 192.168.50.11,tcp:30080",
				"add KIPVS-NODE-PORT 192.168.60.11,tcp:30080",
				"add KIPVS-SHORT-CIRCUIT 192.168.50.11,tcp:30080 skbmark 0x1",
				"add KIPVS-SHORT-CIRCUIT 192.168.60.11,tcp:30080 skbmark 0x1",
				"add KIPVS-VIP 10.96.0.10",
			}),
		},
		{
			name:   "Local with no local endpoint: the NodePort refuses, the ClusterIP still serves",
			svc:    service(ns, "web", nodePortType(30080), externalLocal(0)),
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 192.168.50.11:30080 -s rr",
				"-A -t 192.168.60.11:30080 -s rr",
				// A pod here still reaches the NodePort: the short circuit has every endpoint.
				"-A -f 1 -s rr",
				"-a -f 1 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-LOCAL 192.168.50.11,tcp:30080",
				"add KIPVS-EXTERNAL-LOCAL 192.168.60.11,tcp:30080",
				"add KIPVS-NODE-PORT 192.168.50.11,tcp:30080",
				"add KIPVS-NODE-PORT 192.168.60.11,tcp:30080",
				"add KIPVS-SHORT-CIRCUIT 192.168.50.11,tcp:30080 skbmark 0x1",
				"add KIPVS-SHORT-CIRCUIT 192.168.60.11,tcp:30080 skbmark 0x1",
				"add KIPVS-VIP 10.96.0.10",
			},
		},
		{
			name: "Local: a terminating local endpoint serves when no local one is ready, never a remote one",
			svc:  service(ns, "web", nodePortType(30080), externalLocal(0)),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web", withEndpoints(
				ep("10.244.1.1", onNode(testNode), terminating), ep("10.244.2.1")))},
			cfg: &BuildConfig{NodeName: testNode, Scheduler: "rr", Family: v1.IPv4Protocol,
				NodePortAddrs: []netip.Addr{netip.MustParseAddr("192.168.50.11")}},
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 0",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 192.168.50.11:30080 -s rr",
				"-a -t 192.168.50.11:30080 -r 10.244.1.1:8080 -m -w 1",
				"-A -f 1 -s rr",
				"-a -f 1 -r 10.244.1.1:8080 -m -w 0",
				"-a -f 1 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-LOCAL 192.168.50.11,tcp:30080",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-NODE-PORT 192.168.50.11,tcp:30080",
				"add KIPVS-SHORT-CIRCUIT 192.168.50.11,tcp:30080 skbmark 0x1",
				"add KIPVS-VIP 10.96.0.10",
			},
		},
		{
			name: "internalTrafficPolicy Local: the ClusterIP has the local endpoints only",
			svc: service(ns, "web", func(s *v1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal)
			}),
			slices: pods,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-VIP 10.96.0.10",
			},
		},
		{
			name: "LoadBalancer: ingress IPs bound like VIPs, ipMode Proxy and hostnames left out, source ranges",
			svc: service(ns, "web", loadBalancer("203.0.113.7"), sourceRangesOf("198.51.100.0/24", "192.168.50.0/24", "2001:db8::/64", "bogus"),
				withAffinity(ptr.To[int32](60)),
				func(s *v1.Service) {
					s.Spec.Ports[0].NodePort = 0 // allocateLoadBalancerNodePorts: false
					s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress,
						v1.LoadBalancerIngress{IP: "203.0.113.8", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
						v1.LoadBalancerIngress{Hostname: "lb.example.com"})
				}),
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr -p 60",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 203.0.113.7:80 -s rr -p 60",
				"-a -t 203.0.113.7:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"addr 203.0.113.7",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-LB-FIREWALL 203.0.113.7,tcp:80",
				"add KIPVS-LB-SOURCES 203.0.113.7,tcp:80,192.168.50.0/24",
				"add KIPVS-LB-SOURCES 203.0.113.7,tcp:80,198.51.100.0/24",
				// The node's address is in a range: it may reach the LB IP, from the LB IP.
				"add KIPVS-LB-SOURCES 203.0.113.7,tcp:80,203.0.113.7/32",
				"add KIPVS-LOAD-BALANCER 203.0.113.7,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
				"add KIPVS-VIP 203.0.113.7",
			},
			skips: map[Reason]int{ReasonBadSourceRange: 1, ReasonLoadBalancerHostname: 1, NoteProxyIPMode: 1},
		},
		{
			name:   "LoadBalancer whose ranges do not hold the node: the node may not reach it; ranges of no use still restrict",
			svc:    service(ns, "web", loadBalancer("203.0.113.7"), sourceRangesOf("2001:db8::/64"), func(s *v1.Service) { s.Spec.Ports[0].NodePort = 0 }),
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 203.0.113.7:80 -s rr",
				"-a -t 203.0.113.7:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"addr 203.0.113.7",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-LB-FIREWALL 203.0.113.7,tcp:80",
				"add KIPVS-LOAD-BALANCER 203.0.113.7,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
				"add KIPVS-VIP 203.0.113.7",
			},
		},
		{
			name:   "LoadBalancer Local: a health-check node port counting the ready local endpoints",
			svc:    service(ns, "web", loadBalancer("203.0.113.7"), externalLocal(32000), func(s *v1.Service) { s.Spec.Ports[0].NodePort = 0 }),
			slices: pods,
			want: slices.Concat(clusterIPPart, []string{
				"-A -t 203.0.113.7:80 -s rr",
				"-a -t 203.0.113.7:80 -r 10.244.1.1:8080 -m -w 1",
				"-A -f 1 -s rr",
				"-a -f 1 -r 10.244.1.1:8080 -m -w 1",
				"-a -f 1 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"addr 203.0.113.7",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-LOCAL 203.0.113.7,tcp:80",
				"add KIPVS-LOAD-BALANCER 203.0.113.7,tcp:80",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-SHORT-CIRCUIT 203.0.113.7,tcp:80 skbmark 0x1",
				"add KIPVS-VIP 10.96.0.10",
				"add KIPVS-VIP 203.0.113.7",
			}),
			health: &Health{Port: 32000, LocalEndpoints: 1},
		},
		{
			name:   "externalIPs: one a node address (not bound), one not; bad ones skipped",
			svc:    service(ns, "web", externalIPs("192.168.50.99", "198.51.100.9", "not-an-ip", "2001:db8::9", "198.51.100.9")),
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 192.168.50.99:80 -s rr",
				"-a -t 192.168.50.99:80 -r 10.244.2.1:8080 -m -w 1",
				"-A -t 198.51.100.9:80 -s rr",
				"-a -t 198.51.100.9:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"addr 198.51.100.9",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-IP 192.168.50.99,tcp:80",
				"add KIPVS-EXTERNAL-IP 198.51.100.9,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
				"add KIPVS-VIP 198.51.100.9",
			},
			skips: map[Reason]int{ReasonBadExternalIP: 1, ReasonOtherFamilyExternalIP: 1},
		},
		{
			name: "a dual-stack Service's other-family addresses are normal",
			svc: service(ns, "web", externalIPs("2001:db8::9"), loadBalancer("2001:db8::7"), func(s *v1.Service) {
				s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
				s.Spec.Ports[0].NodePort = 0
			}),
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			},
			skips: map[Reason]int{NoteOtherFamilyAddress: 2},
		},
		{
			name: "allowed CIDRs: addresses outside are not programmed, the rest of the Service is",
			svc:  service(ns, "web", externalIPs("198.51.100.9", "203.0.113.50"), loadBalancer("203.0.113.7", "192.0.2.7"), func(s *v1.Service) { s.Spec.Ports[0].NodePort = 0 }),
			cfg: func() *BuildConfig {
				c := nsBuild
				c.ExternalIPCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
				c.LoadBalancerCIDRs = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
				return &c
			}(),
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-A -t 198.51.100.9:80 -s rr",
				"-A -t 203.0.113.7:80 -s rr",
				"addr 10.96.0.10",
				"addr 198.51.100.9",
				"addr 203.0.113.7",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-EXTERNAL-IP 198.51.100.9,tcp:80",
				"add KIPVS-LOAD-BALANCER 203.0.113.7,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
				"add KIPVS-VIP 198.51.100.9",
				"add KIPVS-VIP 203.0.113.7",
			},
			skips: map[Reason]int{ReasonDisallowedExternalIP: 1, ReasonDisallowedLBIP: 1},
		},
		{
			name: "bad north-south input: each skipped, the rest programmed",
			svc: service(ns, "web", loadBalancer("999.1.1.1"), externalLocal(0), withPorts(
				v1.ServicePort{Name: "a", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 70000},
				v1.ServicePort{Name: "b", Protocol: v1.ProtocolSCTP, Port: 9000, NodePort: 30900})),
			cfg: &BuildConfig{NodeName: testNode, Scheduler: "rr", Family: v1.IPv4Protocol,
				NodePortAddrs: []netip.Addr{netip.MustParseAddr("192.168.50.11")}},
			want: []string{
				"-A -u 10.96.0.10:53 -s rr",
				"-A --sctp-service 10.96.0.10:9000 -s rr",
				"-A --sctp-service 192.168.50.11:30900 -s rr",
				"-A -f 1 -s rr",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,sctp:9000",
				"add KIPVS-CLUSTER-IP 10.96.0.10,udp:53",
				"add KIPVS-EXTERNAL-LOCAL 192.168.50.11,sctp:30900",
				"add KIPVS-NODE-PORT 192.168.50.11,sctp:30900",
				"add KIPVS-SHORT-CIRCUIT 192.168.50.11,sctp:30900 skbmark 0x1",
				"add KIPVS-VIP 10.96.0.10",
			},
			skips: map[Reason]int{ReasonBadNodePort: 1, ReasonBadLoadBalancerIP: 1, ReasonBadHealthCheckNodePort: 1},
		},
		{
			name:   "NodePorts with no NodePort address: noted, ClusterIP kept",
			svc:    service(ns, "web", nodePortType(30080)),
			cfg:    &v4Build,
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			},
			skips: map[Reason]int{NoteNoNodePortAddress: 1},
		},
		{
			name: "a ClusterIP Service keeps no NodePort, LB IP or health port it was once given",
			svc: service(ns, "web", loadBalancer("203.0.113.7"), externalLocal(32000), func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeClusterIP
				s.Spec.ExternalTrafficPolicy = ""
			}),
			slices: remoteOnly,
			want: []string{
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := nsBuild
			if tc.cfg != nil {
				cfg = *tc.cfg
			}
			f, skips := BuildService(tc.svc, tc.slices, cfg)
			if got, want := fragmentDump(f), lines(tc.want...); got != want {
				t.Errorf("dump:\n%s\nwant:\n%s", got, want)
			}
			checkSkips(t, skips, tc.skips)
			if (f.Health == nil) != (tc.health == nil) || f.Health != nil && *f.Health != *tc.health {
				t.Errorf("health = %+v, want %+v", f.Health, tc.health)
			}
		})
	}
}

func TestNodePortAddrs(t *testing.T) {
	a := netip.MustParseAddr
	local := []netip.Addr{a("127.0.0.1"), a("10.0.0.5"), a("192.168.50.11"), a("192.168.60.11"), a("fd00::5")}
	cases := []struct {
		name    string
		primary bool
		cidrs   []netip.Prefix
		nodeIPs []netip.Addr
		want    []netip.Addr
	}{
		{name: "primary: the Node's InternalIPs", primary: true, nodeIPs: []netip.Addr{a("192.168.50.11"), a("fd00::5")},
			want: []netip.Addr{a("192.168.50.11")}},
		{name: "primary without a Node: none", primary: true},
		{name: "CIDRs pick local addresses", cidrs: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
			want: []netip.Addr{a("192.168.50.11"), a("192.168.60.11")}},
		{name: "never loopback, even when asked", cidrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
			want: []netip.Addr{a("10.0.0.5"), a("192.168.50.11"), a("192.168.60.11")}},
		{name: "primary never loopback either", primary: true, nodeIPs: []netip.Addr{a("127.0.0.1")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := NodePortAddrs(tc.primary, tc.cidrs, tc.nodeIPs, local, v1.IPv4Protocol)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
