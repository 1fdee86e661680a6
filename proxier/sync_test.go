package proxier

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

const ns = "default"

// webAndDNS records two Services with endpoints on p.
func webAndDNS(p *Proxier) {
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1"))))
	p.OnService(service(ns, "dns", withClusterIP("10.96.0.53"), withPorts(svcPort("dns", v1.ProtocolUDP, 53))))
	p.OnSlice(slice(ns, "dns-1", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 53)),
		withEndpoints(ep("10.244.3.1"))))
}

const webAndDNSIPVS = `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1
-A -u 10.96.0.53:53 -s rr
-a -u 10.96.0.53:53 -r 10.244.3.1:53 -m -w 1
link kipvs0 up
10.96.0.10/32
10.96.0.53/32
`

func TestFirstSyncProgramsEverything(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)

	checkDump(t, "ipvs", n.ipvsDump(), webAndDNSIPVS)
	checkDump(t, "iptables", n.ipt.Dump(), `*filter
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:KIPVS-FILTER -
:KIPVS-FORWARD -
-A INPUT -m comment --comment "kube-ipvs VIP filter" -j KIPVS-FILTER
-A FORWARD -m comment --comment "kube-ipvs forwarding" -j KIPVS-FORWARD
-A KIPVS-FILTER -m set --match-set KIPVS-CLUSTER-IP dst,dst -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-LOAD-BALANCER dst,dst -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-EXTERNAL-IP dst,dst -j RETURN
-A KIPVS-FILTER -p icmp -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-VIP dst -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable
-A KIPVS-FORWARD -m comment --comment "kube-ipvs masqueraded traffic" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KIPVS-FORWARD -m comment --comment "kube-ipvs replies and related traffic" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:KIPVS-FIREWALL -
:KIPVS-SHORT-CIRCUIT -
:KIPVS-SHORT-CIRCUIT-PODS -
-A PREROUTING -m comment --comment "kube-ipvs load-balancer source ranges" -j KIPVS-FIREWALL
-A INPUT -m comment --comment "kube-ipvs short-circuit of pods" -j KIPVS-SHORT-CIRCUIT-PODS
-A OUTPUT -m comment --comment "kube-ipvs short-circuit of the node" -j KIPVS-SHORT-CIRCUIT
-A OUTPUT -m comment --comment "kube-ipvs load-balancer source ranges" -j KIPVS-FIREWALL
-A KIPVS-FIREWALL -m set --match-set KIPVS-LB-FIREWALL dst,dst -m set ! --match-set KIPVS-LB-SOURCES dst,dst,src -j DROP
-A KIPVS-SHORT-CIRCUIT -m set --match-set KIPVS-SHORT-CIRCUIT dst,dst -j SET --map-set KIPVS-SHORT-CIRCUIT dst,dst --map-mark
-A KIPVS-SHORT-CIRCUIT-PODS -s 10.244.0.0/16 -m set --match-set KIPVS-SHORT-CIRCUIT dst,dst -j SET --map-set KIPVS-SHORT-CIRCUIT dst,dst --map-mark
COMMIT
*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:KIPVS-CLUSTER -
:KIPVS-EXTERNAL -
:KIPVS-MARK-MASQ -
:KIPVS-POSTROUTING -
:KIPVS-SERVICES -
-A PREROUTING -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES
-A OUTPUT -m comment --comment "kube-ipvs service portals" -j KIPVS-SERVICES
-A POSTROUTING -m comment --comment "kube-ipvs postrouting" -j KIPVS-POSTROUTING
-A KIPVS-CLUSTER -s 10.244.0.0/16 -j ACCEPT
-A KIPVS-CLUSTER -j KIPVS-MARK-MASQ
-A KIPVS-CLUSTER -j ACCEPT
-A KIPVS-EXTERNAL -m set --match-set KIPVS-EXTERNAL-LOCAL dst,dst -j ACCEPT
-A KIPVS-EXTERNAL -j KIPVS-MARK-MASQ
-A KIPVS-EXTERNAL -j ACCEPT
-A KIPVS-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KIPVS-POSTROUTING -m set --match-set KIPVS-LOOP-BACK dst,dst,src -j MASQUERADE
-A KIPVS-POSTROUTING -m addrtype --src-type LOCAL -m mark --mark 0x2000/0xe000 -j MASQUERADE --random-fully
-A KIPVS-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KIPVS-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KIPVS-POSTROUTING -j MASQUERADE --random-fully
-A KIPVS-SERVICES -m set --match-set KIPVS-CLUSTER-IP dst,dst -j KIPVS-CLUSTER
-A KIPVS-SERVICES -m set --match-set KIPVS-NODE-PORT dst,dst -j KIPVS-EXTERNAL
-A KIPVS-SERVICES -m set --match-set KIPVS-LOAD-BALANCER dst,dst -j KIPVS-EXTERNAL
-A KIPVS-SERVICES -m set --match-set KIPVS-EXTERNAL-IP dst,dst -j KIPVS-EXTERNAL
COMMIT
`)
	checkDump(t, "ipsets", n.sets.Dump(), `create KIPVS-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KIPVS-CLUSTER-IP 10.96.0.10,tcp:80
add KIPVS-CLUSTER-IP 10.96.0.53,udp:53
create KIPVS-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
create KIPVS-EXTERNAL-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
create KIPVS-LB-FIREWALL hash:ip,port family inet hashsize 1024 maxelem 65536
create KIPVS-LB-SOURCES hash:ip,port,net family inet hashsize 1024 maxelem 65536
create KIPVS-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
create KIPVS-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1
create KIPVS-NODE-PORT hash:ip,port family inet hashsize 1024 maxelem 65536
create KIPVS-OWNED hash:ip,port family inet hashsize 1024 maxelem 65536
add KIPVS-OWNED 10.96.0.10,tcp:80
add KIPVS-OWNED 10.96.0.53,udp:53
create KIPVS-OWNED-MARK bitmap:port range 8192-16383
create KIPVS-SHORT-CIRCUIT hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo
create KIPVS-VIP hash:ip family inet hashsize 1024 maxelem 65536
add KIPVS-VIP 10.96.0.10
add KIPVS-VIP 10.96.0.53
`)
	checkDump(t, "sysctl", n.sysctl.Dump(), `kernel/osrelease = 6.1.0-57-cloud-amd64
net/bridge/bridge-nf-call-iptables = 1
net/ipv4/ip_forward = 1
net/ipv4/vs/conn_reuse_mode = 1
net/ipv4/vs/conntrack = 1
net/ipv4/vs/expire_nodest_conn = 1
net/ipv4/vs/expire_quiescent_template = 1
`)
}

func TestSyncWithNothingChangedDoesNothing(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	n.resetCalls()

	mustSync(t, p, false)
	if r, w := n.calls(); r != 0 || w != 0 {
		t.Errorf("idle incremental sync: %d reads, %d writes (%v), want none", r, w, n.callLog())
	}
	// A full resync reads the kernel back but finds nothing to write.
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("full resync of an in-sync kernel wrote %d times: %v", w, n.callLog())
	}
	// An update that changes nothing the kernel holds costs nothing either.
	n.resetCalls()
	p.OnService(service(ns, "web", func(s *v1.Service) { s.Labels = map[string]string{"team": "a"} }))
	mustSync(t, p, false)
	if r, w := n.calls(); r != 0 || w != 0 {
		t.Errorf("no-op update: %d reads, %d writes (%v), want none", r, w, n.callLog())
	}
}

func TestIncrementalSyncTouchesOnlyTheChangedService(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	n.resetCalls()

	// web loses 10.244.2.1 and gains 10.244.2.2.
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.2"))))
	mustSync(t, p, false)

	want := map[string]int{ipvs.MethodAddDestination: 1, ipvs.MethodDeleteDestination: 1}
	if got := n.callLog(); !maps.Equal(got, want) {
		t.Errorf("kernel calls = %v, want %v", got, want)
	}
	checkDump(t, "ipvs", n.ipvsDump(), strings.Replace(webAndDNSIPVS, "10.244.2.1:8080", "10.244.2.2:8080", 1))
}

func TestPlanAddsBeforeItRemoves(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))))
	mustSync(t, p, false)

	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.2"))))
	p.OnService(service(ns, "old", withClusterIP("10.96.0.99")))
	sc := p.absorb(p.takeChanges(), false, NewScope())
	var got []string
	for _, o := range Plan(p.want.state, p.applied, sc) {
		got = append(got, o.String())
	}
	want := []string{
		"ipset add KIPVS-CLUSTER-IP 10.96.0.99,tcp:80",
		"ipset add KIPVS-OWNED 10.96.0.99,tcp:80", // the ownership record, before the virtual server
		"ipset add KIPVS-VIP 10.96.0.99",
		"ip addr add 10.96.0.99/32",
		"ipvsadm -A -t 10.96.0.99:80 -s rr",
		"ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
		"ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.1:8080",
	}
	checkDump(t, "plan", strings.Join(got, "\n"), strings.Join(want, "\n"))
}

func TestDeletingAServiceRemovesItsVirtualServerAndVIP(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)

	p.OnServiceDelete(service(ns, "dns"))
	p.OnSliceDelete(slice(ns, "dns-1", "dns"))
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvsDump(), `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1
link kipvs0 up
10.96.0.10/32
`)
	if strings.Contains(n.sets.Dump(), "10.96.0.53") {
		t.Errorf("ipsets still hold the deleted Service:\n%s", n.sets.Dump())
	}
	// A VIP with one port left stays bound until that port goes too.
	p.OnService(service(ns, "web", withPorts()))
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvsDump(), "link kipvs0 up\n")
}

func TestForeignVirtualServersSurviveSyncsAndRestarts(t *testing.T) {
	n := newFakeNode()
	const foreign = "-A -t 192.168.50.1:443 -s wlc\n-a -t 192.168.50.1:443 -r 192.168.50.2:443 -g -w 3\n"
	if err := n.ipvs.Load(foreign); err != nil {
		t.Fatal(err)
	}
	if err := n.ipt.Load("*nat\n:PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n:CNI-MASQ -\n-A POSTROUTING -j CNI-MASQ\n-A CNI-MASQ -j MASQUERADE\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, true)
	mustSync(t, p, true)

	// A restart: a new proxier on the same kernel, fed the same objects.
	n.resetCalls()
	p2 := New(p.log, n.kernel(), testOptions())
	webAndDNS(p2)
	mustSync(t, p2, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("restart wrote %d times (%v); it should adopt what is there", w, n.callLog())
	}
	if got := n.ipvs.Dump(); !strings.Contains(got, foreign) {
		t.Errorf("foreign virtual server lost:\n%s", got)
	}
	if got := n.ipt.Dump(); !strings.Contains(got, "-A POSTROUTING -j CNI-MASQ\n") || !strings.Contains(got, "-A CNI-MASQ -j MASQUERADE\n") {
		t.Errorf("foreign rules lost:\n%s", got)
	}
	// Even with every Service gone, the foreign one stays.
	p2.OnServiceDelete(service(ns, "web"))
	p2.OnServiceDelete(service(ns, "dns"))
	mustSync(t, p2, true)
	checkDump(t, "ipvs", n.ipvs.Dump(), foreign)
}

func TestFullResyncRepairsDrift(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)

	// Someone deletes a real server, a VIP's virtual server, and a rule.
	if err := n.ipvs.DeleteDestination(key("10.96.0.10", ipvs.TCP, 80), ap("10.244.2.1:8080")); err != nil {
		t.Fatal(err)
	}
	if err := n.ipvs.DeleteService(key("10.96.0.53", ipvs.UDP, 53)); err != nil {
		t.Fatal(err)
	}
	if err := n.ipt.DeleteRule("nat", ChainPostrouting, []string{"-j", "MASQUERADE", "--random-fully"}); err != nil {
		t.Fatal(err)
	}
	// And leaves a record and an address of a virtual server nobody
	// wants: only the pass's end, not a chunk, looks at those.
	stray := ownedEntry(testOptions().Build.Family, key("10.96.0.99", ipvs.TCP, 80))
	if err := n.sets.AddEntry(stray.Set(), stray.Entry()); err != nil {
		t.Fatal(err)
	}
	if err := n.addrs.AddAddr(netip.MustParseAddr("10.96.0.99")); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p, false) // nothing changed as far as the API goes
	if n.ipvsDump() == webAndDNSIPVS {
		t.Fatal("drift was repaired without a full sync: the test is not testing anything")
	}
	mustSync(t, p, true)
	checkDump(t, "ipvs", n.ipvsDump(), webAndDNSIPVS)
	if !strings.Contains(n.ipt.Dump(), "-A KIPVS-POSTROUTING -j MASQUERADE --random-fully\n") {
		t.Errorf("rule not restored:\n%s", n.ipt.Dump())
	}
	if strings.Contains(n.sets.Dump(), "10.96.0.99") || strings.Contains(n.addrs.Dump(), "10.96.0.99") {
		t.Errorf("the stray record or address is left:\n%s\n%s", n.sets.Dump(), n.addrs.Dump())
	}
}

func TestFailedOperationIsRetriedAndNeverLosesLiveServers(t *testing.T) {
	n := newFakeNode()
	opts, clk := clocked(testOptions())
	p := newTestProxier(t, n, opts)
	webAndDNS(p)
	mustSync(t, p, false)

	boom := errors.New("netlink: interrupted")
	n.ipvs.FailOn(ipvs.MethodAddDestination, key("10.96.0.10", ipvs.TCP, 80), boom)
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1"), ep("10.244.2.2"))))
	mustSync(t, p, false) // the node as a whole is synced; web is retried
	if f := p.Failures()[nameOf(ns, "web")]; !errors.Is(f.Err, boom) || f.Attempts != 1 {
		t.Fatalf("failures = %v, want web failing once with %v", p.Failures(), boom)
	}
	if at := p.RetryAt(); !at.Equal(clk.Now().Add(time.Second)) {
		t.Errorf("RetryAt = %v, want 1s from now", at)
	}
	n.ipvs.FailOn(ipvs.MethodAddDestination, key("10.96.0.10", ipvs.TCP, 80), nil)
	// Not due yet: an incremental sync leaves web alone.
	mustSync(t, p, false)
	if strings.Contains(n.ipvs.Dump(), "10.244.2.2") {
		t.Fatal("retried before its backoff")
	}
	clk.Step(time.Second)
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvsDump(), strings.Replace(webAndDNSIPVS,
		"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1\n",
		"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.2.2:8080 -m -w 1\n", 1))
	if len(p.Failures()) != 0 || !p.RetryAt().IsZero() {
		t.Errorf("after the retry: failures %v, RetryAt %v", p.Failures(), p.RetryAt())
	}
}

func TestUnreadableKernelFailsTheSyncAndTheNextOneIsFull(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	n.ipvs.FailOn(ipvs.MethodListServices, ipvs.ServiceKey{}, errors.New("boom"))
	if err := p.Sync(true); err == nil {
		t.Fatal("sync succeeded although the kernel could not be read")
	}
	n.ipvs.FailOn(ipvs.MethodListServices, ipvs.ServiceKey{}, nil)
	n.resetCalls()
	mustSync(t, p, false) // even when asked for an incremental sync
	if n.ipvs.Calls()[ipvs.MethodListServices] != 1 {
		t.Errorf("sync after a failure did not read the kernel back: %v", n.callLog())
	}
}

func TestDryRunNeverWrites(t *testing.T) {
	n := newFakeNode()
	opts := testOptions()
	opts.DryRun = true
	p := New(testLogger(t), n.kernel(), opts)
	webAndDNS(p)
	mustSync(t, p, true)
	p.OnServiceDelete(service(ns, "web"))
	mustSync(t, p, false)
	if _, w := n.calls(); w != 0 {
		t.Errorf("dry-run wrote %d times: %v", w, n.callLog())
	}
	if d := n.ipvsDump() + n.sets.Dump(); d != "" {
		t.Errorf("dry-run left state:\n%s", d)
	}
}

func TestBadInputIsCounted(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	p.OnService(service(ns, "web", withAffinity(nil)))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))))
	orphan := slice(ns, "orphan", "x")
	delete(orphan.Labels, discovery.LabelServiceName)
	p.OnSlice(orphan)
	// The same endpoint in two slices is normal (the EndpointSlice
	// controller moving it); twice in one slice is not.
	p.OnSlice(slice(ns, "web-2", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.1.2"), ep("10.244.1.2"))))
	p.OnSlice(slice(ns, "web-v6", "web", withAddressType(discovery.AddressTypeIPv6), withEndpoints(ep("fd00::1"))))
	mustSync(t, p, false)
	want := map[Reason]int{ReasonNilAffinityConfig: 1, ReasonSliceWithoutService: 1, ReasonDuplicateInSlice: 1}
	if got := p.Skipped(); !maps.Equal(got, want) {
		t.Errorf("skipped = %v, want %v", got, want)
	}
	if !strings.Contains(n.ipvs.Dump(), "-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1") {
		t.Errorf("valid part not programmed:\n%s", n.ipvs.Dump())
	}
}

func TestSliceMovingBetweenServices(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	p.OnService(service(ns, "api", withClusterIP("10.96.0.20")))
	mustSync(t, p, false)
	// The slice's label now names api: web loses its endpoints, api gains them.
	p.OnSlice(slice(ns, "web-1", "api", withEndpoints(ep("10.244.9.9"))))
	mustSync(t, p, false)
	got := n.ipvs.Dump()
	if !strings.Contains(got, "-A -t 10.96.0.10:80 -s rr\n-A -t 10.96.0.20:80") ||
		!strings.Contains(got, "-a -t 10.96.0.20:80 -r 10.244.9.9:8080 -m -w 1") {
		t.Errorf("slice did not move:\n%s", got)
	}
}

func TestConflictingServicesAreResolvedByName(t *testing.T) {
	// Two Services claim 10.96.0.10:80 (the apiserver prevents it; a
	// proxier must still not flap between them). "a" wins by name whatever
	// the order of events; when it goes, "b" takes over in the same sync.
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		t.Run(strings.Join(order, " then "), func(t *testing.T) {
			n := newFakeNode()
			p := newTestProxier(t, n, testOptions())
			svcs := map[string]*v1.Service{"a": service(ns, "a"), "b": service(ns, "b", withAffinity(nil))}
			for _, name := range order {
				p.OnService(svcs[name])
			}
			local := map[string]string{"a": "10.244.1.1", "b": "10.244.7.7"}
			for _, name := range order {
				p.OnSlice(slice(ns, name+"-1", name, withEndpoints(ep(local[name], onNode(testNode)))))
			}
			mustSync(t, p, false)
			checkDump(t, "ipvs", n.ipvsDump(), "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\nlink kipvs0 up\n10.96.0.10/32\n")
			if p.Skipped()[ReasonConflictingVIPAndPort] != 1 {
				t.Errorf("conflict not counted once: %v", p.Skipped())
			}
			// The loser programs no set member of its own (its local
			// endpoint's hairpin entry), only the owner's are there.
			if got := n.sets.Dump(); strings.Contains(got, "10.244.7.7") || !strings.Contains(got, "add KIPVS-LOOP-BACK 10.244.1.1,tcp:8080,10.244.1.1") {
				t.Errorf("sets with b losing:\n%s", got)
			}
			p.OnServiceDelete(svcs["a"])
			mustSync(t, p, false)
			if got := n.sets.Dump(); !strings.Contains(got, "add KIPVS-LOOP-BACK 10.244.7.7,tcp:8080,10.244.7.7") || strings.Contains(got, "10.244.1.1") {
				t.Errorf("sets once b owns the virtual server:\n%s", got)
			}
			checkDump(t, "ipvs", n.ipvsDump(), "-A -t 10.96.0.10:80 -s rr -p 10800\n-a -t 10.96.0.10:80 -r 10.244.7.7:8080 -m -w 1\nlink kipvs0 up\n10.96.0.10/32\n")
			p.OnServiceDelete(svcs["b"])
			mustSync(t, p, false)
			checkDump(t, "ipvs", n.ipvsDump(), "link kipvs0 up\n")
		})
	}
}

func TestFullResyncRecreatesADeletedDummyInterface(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	if err := n.addrs.DeleteLink(); err != nil { // `ip link del kipvs0`: every VIP goes with it
		t.Fatal(err)
	}
	mustSync(t, p, true)
	checkDump(t, "ipvs", n.ipvsDump(), webAndDNSIPVS)
}

func TestClusterChainWithoutClusterCIDR(t *testing.T) {
	cases := []struct {
		name string
		cfg  RuleConfig
		want [][]string
	}{
		{
			name: "cluster CIDR: traffic from outside it is masqueraded",
			cfg:  testOptions().Rules,
			want: [][]string{
				{"-s", "10.244.0.0/16", "-j", "ACCEPT"},
				{"-j", "KIPVS-MARK-MASQ"},
				{"-j", "ACCEPT"},
			},
		},
		{
			name: "no cluster CIDR: what the node sends from a VIP is masqueraded",
			cfg:  RuleConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14},
			want: [][]string{
				{"-m", "set", "--match-set", "KIPVS-VIP", "src", "-j", "KIPVS-MARK-MASQ"},
				{"-j", "ACCEPT"},
			},
		},
		{
			name: "masqueradeAll ignores the cluster CIDR",
			cfg: RuleConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14, MasqueradeAll: true,
				ClusterCIDRs: testOptions().Rules.ClusterCIDRs},
			want: [][]string{
				{"-j", "KIPVS-MARK-MASQ"},
				{"-j", "ACCEPT"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := BuildRules(tc.cfg).Chains["nat"][1]
			if got.Name != ChainCluster || !slices.EqualFunc(got.Rules, tc.want, slices.Equal) {
				t.Errorf("%s = %q, want %q", got.Name, got.Rules, tc.want)
			}
		})
	}
}
