package proxier

import (
	"maps"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestBuildService(t *testing.T) {
	const ns = "default"
	threePods := withEndpoints(ep("10.244.1.1"), ep("10.244.1.2"), ep("10.244.1.3"))
	cases := []struct {
		name   string
		svc    *v1.Service
		slices []*discovery.EndpointSlice
		cfg    BuildConfig
		want   string
		skips  map[Reason]int
	}{
		{
			name:   "cluster IP with three ready pods",
			svc:    service(ns, "web"),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web", threePods)},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "no endpoints keeps the virtual server",
			svc:  service(ns, "web"),
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "multi-port TCP, UDP and SCTP by port name across slices",
			svc: service(ns, "dns", withPorts(
				svcPort("dns", v1.ProtocolUDP, 53), svcPort("dns-tcp", v1.ProtocolTCP, 53), svcPort("sig", v1.ProtocolSCTP, 9000))),
			slices: []*discovery.EndpointSlice{
				slice(ns, "dns-a", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 5353), slicePortOf("dns-tcp", v1.ProtocolTCP, 5354)),
					withEndpoints(ep("10.244.1.1"))),
				slice(ns, "dns-b", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 5353), slicePortOf("sig", v1.ProtocolSCTP, 9001)),
					withEndpoints(ep("10.244.2.1"))),
			},
			want: lines(
				"-A -t 10.96.0.10:53 -s rr",
				"-a -t 10.96.0.10:53 -r 10.244.1.1:5354 -m -w 1",
				"-A -u 10.96.0.10:53 -s rr",
				"-a -u 10.96.0.10:53 -r 10.244.1.1:5353 -m -w 1",
				"-a -u 10.96.0.10:53 -r 10.244.2.1:5353 -m -w 1",
				"-A --sctp-service 10.96.0.10:9000 -s rr",
				"-a --sctp-service 10.96.0.10:9000 -r 10.244.2.1:9001 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,sctp:9000",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:53",
				"add KIPVS-CLUSTER-IP 10.96.0.10,udp:53",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "while one is ready, not-ready endpoints are left out and terminating ones drain at weight 0",
			svc:  service(ns, "web"),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web",
				withEndpoints(ep("10.244.1.1"), ep("10.244.1.2", notReady), ep("10.244.1.3", terminating),
					ep("10.244.1.4", terminating, func(e *discovery.Endpoint) { e.Conditions.Serving = ptr.To(false) })))},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 0",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "serving-but-terminating endpoints are used when none is ready",
			svc:  service(ns, "web"),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web",
				withEndpoints(ep("10.244.1.2", notReady), ep("10.244.1.3", terminating), ep("10.244.1.4", terminating)))},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "unset conditions mean ready",
			svc:  service(ns, "web"),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web",
				withEndpoints(ep("10.244.1.1", func(e *discovery.Endpoint) { e.Conditions = discovery.EndpointConditions{} })))},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name:   "local endpoints are hairpin-masqueraded",
			svc:    service(ns, "web"),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1")))},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "ClientIP affinity is a persistent virtual server",
			svc:  service(ns, "web", withAffinity(ptr.To[int32](600))),
			cfg:  BuildConfig{NodeName: testNode, Scheduler: "wlc", Family: v1.IPv4Protocol},
			want: lines(
				"-A -t 10.96.0.10:80 -s wlc -p 600",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "mh hashes the source port too (mh-port), as kube-proxy sets it",
			svc:  service(ns, "web", withAffinity(ptr.To[int32](600))),
			cfg:  BuildConfig{NodeName: testNode, Scheduler: "mh", Family: v1.IPv4Protocol},
			want: lines(
				"-A -t 10.96.0.10:80 -s mh -p 600 -b mh-port",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "nil sessionAffinityConfig takes the apiserver default",
			svc:  service(ns, "web", withAffinity(nil)),
			want: lines(
				"-A -t 10.96.0.10:80 -s rr -p 10800",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
			skips: map[Reason]int{ReasonNilAffinityConfig: 1},
		},
		{name: "headless", svc: service(ns, "web", withClusterIP("None")), want: ""},
		{name: "no cluster IP", svc: service(ns, "web", withClusterIP()), want: ""},
		{
			name: "ExternalName",
			svc:  service(ns, "web", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeExternalName }),
			want: "",
		},
		{
			name: "IPv6-only service on an IPv4 proxier",
			svc:  service(ns, "web", withClusterIP("fd00::10")),
			want: "",
		},
		{
			name: "dual-stack service uses the cluster IP of its family",
			svc:  service(ns, "web", withClusterIP("fd00::10", "10.96.0.11")),
			want: lines(
				"-A -t 10.96.0.11:80 -s rr",
				"addr 10.96.0.11",
				"add KIPVS-CLUSTER-IP 10.96.0.11,tcp:80",
				"add KIPVS-VIP 10.96.0.11",
			),
		},
		{
			name: "IPv6 proxier",
			svc:  service(ns, "web", withClusterIP("fd00::10")),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web", withAddressType(discovery.AddressTypeIPv6),
				withEndpoints(ep("fd00:244::1", onNode(testNode))))},
			cfg: BuildConfig{NodeName: testNode, Scheduler: "rr", Family: v1.IPv6Protocol},
			want: lines(
				"-A -t [fd00::10]:80 -s rr",
				"-a -t [fd00::10]:80 -r [fd00:244::1]:8080 -m -w 1",
				"addr fd00::10",
				"add KIPVS-CLUSTER-IP-6 fd00::10,tcp:80",
				"add KIPVS-LOOP-BACK-6 fd00:244::1,tcp:8080,fd00:244::1",
				"add KIPVS-VIP-6 fd00::10",
			),
		},
		{
			name:   "leading-zero IPv4 is decimal (CVE-2021-29923)",
			svc:    service(ns, "web", withClusterIP("010.096.000.010")),
			slices: []*discovery.EndpointSlice{slice(ns, "web-1", "web", withEndpoints(ep("010.244.001.001")))},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
		},
		{
			name: "bad input is skipped, the valid rest is programmed",
			svc: service(ns, "web", withPorts(svcPort("http", v1.ProtocolTCP, 80), svcPort("zero", v1.ProtocolTCP, 0),
				svcPort("odd", "ICMP", 1))),
			slices: []*discovery.EndpointSlice{
				slice(ns, "web-1", "web", withSlicePorts(
					slicePortOf("http", v1.ProtocolTCP, 8080),
					discovery.EndpointPort{Name: ptr.To("nilport")},
					slicePortOf("zeroport", v1.ProtocolTCP, 0),
				), withEndpoints(ep("10.244.1.1"), ep("not-an-ip"), ep("fd00::1"), ep("10.244.1.2", func(e *discovery.Endpoint) { e.Addresses = nil }))),
				slice(ns, "web-2", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.1.9"))),
				slice(ns, "web-fqdn", "web", withAddressType(discovery.AddressTypeFQDN), withEndpoints(ep("example.com"))),
				slice(ns, "web-v6", "web", withAddressType(discovery.AddressTypeIPv6), withEndpoints(ep("fd00::2"))),
				nil,
			},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.1.9:8080 -m -w 1",
				"addr 10.96.0.10",
				"add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80",
				"add KIPVS-VIP 10.96.0.10",
			),
			skips: map[Reason]int{
				ReasonZeroServicePort:     1,
				ReasonUnknownProtocol:     1,
				ReasonNilSlicePort:        1,
				ReasonZeroSlicePort:       1,
				ReasonBadEndpointAddress:  2,
				ReasonOtherFamilyEndpoint: 1,
				NoteDuplicateEndpoint:     1,
				ReasonFQDNSlice:           1,
				NoteOtherFamilySlice:      1,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.Scheduler == "" {
				cfg = v4Build
			}
			f, skips := BuildService(tc.svc, tc.slices, cfg)
			if got := fragmentDump(f); got != tc.want {
				t.Errorf("dump:\n%s\nwant:\n%s", got, tc.want)
			}
			checkSkips(t, skips, tc.skips)
		})
	}
}

// checkSkips compares the reasons of skips, counted, with want (nil: none).
func checkSkips(t *testing.T, skips []Skip, want map[Reason]int) {
	t.Helper()
	got := map[Reason]int{}
	for _, s := range skips {
		got[s.Reason]++
	}
	if want == nil {
		want = map[Reason]int{}
	}
	if !maps.Equal(got, want) {
		t.Errorf("skips = %v (%v), want %v", got, skips, want)
	}
}

func TestBuildServiceIsDeterministic(t *testing.T) {
	svc := service("ns", "web")
	a := slice("ns", "a", "web", withEndpoints(ep("10.244.1.3"), ep("10.244.1.1")))
	b := slice("ns", "b", "web", withEndpoints(ep("10.244.1.2"), ep("10.244.1.1")))
	f1, _ := BuildService(svc, []*discovery.EndpointSlice{a, b}, v4Build)
	f2, _ := BuildService(svc, []*discovery.EndpointSlice{b, a}, v4Build)
	if !f1.Equal(f2) {
		t.Fatalf("slice order changed the result:\n%s\nvs\n%s", fragmentDump(f1), fragmentDump(f2))
	}
}
