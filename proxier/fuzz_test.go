package proxier

import (
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// FuzzBuildService feeds BuildService objects with arbitrary addresses,
// ports, protocols, address types and conditions. It must never panic,
// must be deterministic, and must only ever program well-formed state:
// virtual servers on the Service's family with non-zero ports, real
// servers of the same family with non-zero ports.
func FuzzBuildService(f *testing.F) {
	f.Add("10.96.0.10", "TCP", int32(80), "http", "IPv4", "10.244.1.1", "http", "TCP", int32(8080), uint8(0b111), "fd00::1", true)
	f.Add("None", "UDP", int32(53), "", "FQDN", "example.com", "", "", int32(0), uint8(0), "", false)
	f.Add("010.096.0.1", "SCTP", int32(65535), "a", "IPv6", "::ffff:10.0.0.1", "a", "SCTP", int32(70000), uint8(0b010), "1.2.3.4", true)
	// The same address in both slices, terminating in one (a reused pod
	// IP), with the mh scheduler (bit 4).
	f.Add("10.96.0.10", "TCP", int32(80), "http", "IPv4", "10.244.1.1", "http", "TCP", int32(8080), uint8(0b10110), "10.244.1.1", false)
	// A dual-stack Service's other-family slice.
	f.Add("10.96.0.10", "UDP", int32(53), "dns", "IPv6", "fd00::5", "dns", "UDP", int32(5353), uint8(0b0011), "10.244.1.2", false)
	f.Fuzz(func(t *testing.T, clusterIP, proto string, port int32, portName, addrType, addr, epPortName, epProto string, epPort int32, conds uint8, addr2 string, nilPort bool) {
		svc := service("ns", "svc", withClusterIP(clusterIP), withPorts(
			svcPort(portName, v1.Protocol(proto), port), svcPort(portName+"2", v1.ProtocolUDP, port)),
			withAffinity(ptr.To(int32(conds))))
		sp := discovery.EndpointPort{Name: ptr.To(epPortName), Protocol: ptr.To(v1.Protocol(epProto)), Port: ptr.To(epPort)}
		if nilPort {
			sp.Port = nil
		}
		e := ep(addr)
		e.Conditions = discovery.EndpointConditions{
			Ready: ptr.To(conds&1 != 0), Serving: ptr.To(conds&2 != 0), Terminating: ptr.To(conds&4 != 0),
		}
		if conds&8 != 0 {
			e.Conditions.Ready = nil
		}
		slices := []*discovery.EndpointSlice{
			slice("ns", "a", "svc", withAddressType(discovery.AddressType(addrType)), withSlicePorts(sp),
				withEndpoints(e, ep(addr2))),
			slice("ns", "b", "svc", withSlicePorts(sp), withEndpoints(ep(addr), ep(addr2, onNode(testNode)))),
		}
		scheduler := "rr"
		if conds&16 != 0 {
			scheduler = "mh"
		}
		for _, family := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			cfg := BuildConfig{NodeName: testNode, Scheduler: scheduler, Family: family}
			frag, _ := BuildService(svc, slices, cfg)
			again, _ := BuildService(svc, []*discovery.EndpointSlice{slices[1], slices[0]}, cfg)
			if !frag.Equal(again) {
				t.Fatalf("not deterministic:\n%s\nvs\n%s", fragmentDump(frag), fragmentDump(again))
			}
			checkFragment(t, frag, family)
		}
	})
}

func checkFragment(t *testing.T, f *Fragment, family v1.IPFamily) {
	t.Helper()
	entries := slices.Clone(f.Entries)
	shortCircuits, marked := 0, map[uint32]bool{}
	for _, p := range f.Servers {
		k := p.Service.Key
		switch {
		case k.IsMark():
			// Build numbers its short circuits 1, 2, …
			if k != ipvs.MarkKey(k.Mark, family == v1.IPv6Protocol) {
				t.Fatalf("bad firewall-mark virtual server %+v for %s", k, family)
			}
			shortCircuits++
		case familyOf(k.Addr) != family || k.Port == 0 || !k.Addr.IsValid():
			t.Fatalf("bad virtual server %s for %s", k, family)
		}
		if (p.Service.Scheduler == "mh") != (p.Service.Flags == ipvs.SchedFlag2) {
			t.Fatalf("virtual server %s: scheduler %s with flags %v", k, p.Service.Scheduler, p.Service.Flags)
		}
		for i, d := range p.Dests {
			if familyOf(d.Addr.Addr()) != family || d.Addr.Port() == 0 || d.Weight < 0 || d.Weight > weight {
				t.Fatalf("bad real server %s of %s", d.Addr, k)
			}
			if i > 0 && p.Dests[i-1].Addr.Compare(d.Addr) >= 0 {
				t.Fatalf("real servers of %s not sorted or not unique: %v", k, p.Dests)
			}
		}
		entries = append(entries, p.Entries...)
	}
	for _, e := range entries {
		if !e.Entry().Addr.IsValid() || familyOf(e.Entry().Addr) != family {
			t.Fatalf("bad set entry %s", e)
		}
		if (e.Set() == setName(SetShortCircuit, family)) != (e.Entry().Mark != 0) {
			t.Fatalf("set entry %s: a mark belongs to SHORT-CIRCUIT members, and they all have one", e)
		}
		marked[e.Entry().Mark] = e.Entry().Mark != 0
	}
	for m := range shortCircuits {
		if !marked[uint32(m+1)] {
			t.Fatalf("short circuit %d has no SHORT-CIRCUIT member: %v", m+1, marked)
		}
	}
	if len(marked) > 0 && len(marked)-1 > shortCircuits {
		t.Fatalf("SHORT-CIRCUIT members name %d marks for %d short circuits", len(marked)-1, shortCircuits)
	}
	if len(f.Servers) > 0 && len(f.Addrs) == 0 {
		t.Fatalf("no address for %d virtual servers", len(f.Servers))
	}
	for _, a := range f.Addrs {
		if !a.IsValid() || familyOf(a) != family || a.IsLoopback() {
			t.Fatalf("bad address to bind %s", a)
		}
	}
	if h := f.Health; h != nil && (h.Port == 0 || h.LocalEndpoints < 0) {
		t.Fatalf("bad health-check port %+v", *h)
	}
}

// FuzzBuildNorthSouth feeds BuildService the north-south fields of a
// Service (type, external and load-balancer IPs, ipMode, source ranges,
// node and health-check node ports, traffic policies) with arbitrary
// values. It must never panic, must be deterministic, must program only
// well-formed state, and never a NodePort outside the NodePort addresses.
func FuzzBuildNorthSouth(f *testing.F) {
	f.Add("NodePort", "198.51.100.9", "203.0.113.7", "VIP", "10.0.0.0/8", int32(30080), int32(0), "Cluster", "Cluster")
	f.Add("LoadBalancer", "not-an-ip", "", "Proxy", "bogus", int32(70000), int32(0), "Local", "Local")
	f.Add("LoadBalancer", "2001:db8::9", "2001:db8::7", "", "2001:db8::/64", int32(-1), int32(32000), "Local", "Cluster")
	f.Add("ClusterIP", "192.168.50.11", "999.1.1.1", "VIP", "0.0.0.0/0", int32(30080), int32(65536), "Local", "")
	f.Add("LoadBalancer", "010.001.002.003", "127.0.0.1", "VIP", "::ffff:10.0.0.0/104", int32(30081), int32(32001), "Local", "Local")
	f.Fuzz(func(t *testing.T, typ, extIP, lbIP, ipMode, srcRange string, nodePort, hcnp int32, etp, itp string) {
		svc := service("ns", "svc", externalIPs(extIP), sourceRangesOf(srcRange), func(s *v1.Service) {
			s.Spec.Type = v1.ServiceType(typ)
			s.Spec.Ports[0].NodePort = nodePort
			s.Spec.HealthCheckNodePort = hcnp
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicy(etp)
			s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicy(itp))
			ing := v1.LoadBalancerIngress{IP: lbIP}
			if ipMode != "" {
				ing.IPMode = ptr.To(v1.LoadBalancerIPMode(ipMode))
			}
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{ing, {Hostname: "lb.example.com"}}
		})
		eps := []*discovery.EndpointSlice{slice("ns", "a", "svc", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1")))}
		for _, family := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			cfg := nsBuild
			cfg.Family = family
			frag, _ := BuildService(svc, eps, cfg)
			again, _ := BuildService(svc.DeepCopy(), eps, cfg)
			if !frag.Equal(again) {
				t.Fatalf("not deterministic:\n%s\nvs\n%s", fragmentDump(frag), fragmentDump(again))
			}
			checkFragment(t, frag, family)
			for _, p := range frag.Servers {
				for _, e := range p.Entries {
					if e.Set() == setName(SetNodePort, family) && !slices.Contains(cfg.NodePortAddrs, e.Entry().Addr) {
						t.Fatalf("NodePort member %s off the NodePort addresses", e)
					}
				}
			}
		}
	})
}
