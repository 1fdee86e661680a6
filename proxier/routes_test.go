package proxier

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/netif"
)

// routeOptions accepts the Service CIDR 10.96.0.0/24 by its local route:
// web's 10.96.0.10 and dns' 10.96.0.53 are inside it.
func routeOptions(cidrs ...string) Options {
	o := testOptions()
	for _, c := range cidrs {
		p := netip.MustParsePrefix(c)
		o.Build.ServiceCIDRs = append(o.Build.ServiceCIDRs, p)
		o.Rules.ServiceCIDRs = append(o.Rules.ServiceCIDRs, p)
	}
	return o
}

const webAndDNSServers = `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1
-A -u 10.96.0.53:53 -s rr
-a -u 10.96.0.53:53 -r 10.244.3.1:53 -m -w 1
`

func TestServiceCIDRRouteReplacesClusterIPAddresses(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, routeOptions("10.96.0.0/24"))
	webAndDNS(p)
	// A ClusterIP outside the Service CIDRs is still bound.
	p.OnService(service(ns, "other", withClusterIP("10.100.0.7")))
	p.OnSlice(slice(ns, "other-1", "other", withEndpoints(ep("10.244.4.1"))))
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvsDump(), webAndDNSServers+`-A -t 10.100.0.7:80 -s rr
-a -t 10.100.0.7:80 -r 10.244.4.1:8080 -m -w 1
link kipvs0 up
10.96.0.0/32
10.100.0.7/32
local 10.96.0.0/24
`)
	if got := linesWith(n.sets.Dump(), "KIPVS-VIP "); !strings.Contains(got, "10.100.0.7") || strings.Contains(got, "10.96.0.") {
		t.Errorf("KIPVS-VIP holds the Services' bound addresses only:\n%s", got)
	}
	checkDump(t, "KIPVS-FILTER", linesWith(n.ipt.Dump(), "-A KIPVS-FILTER"), `-A KIPVS-FILTER -m set --match-set KIPVS-CLUSTER-IP dst,dst -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-LOAD-BALANCER dst,dst -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-EXTERNAL-IP dst,dst -j RETURN
-A KIPVS-FILTER -p icmp -j RETURN
-A KIPVS-FILTER -m set --match-set KIPVS-VIP dst -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable
-A KIPVS-FILTER -d 10.96.0.0/24 -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable
`)

	// A new Service in the CIDR costs no address operation, and a full
	// sync with nothing changed writes nothing.
	n.resetCalls()
	p.OnService(service(ns, "new", withClusterIP("10.96.0.99")))
	p.OnSlice(slice(ns, "new-1", "new", withEndpoints(ep("10.244.5.1"))))
	mustSync(t, p, false)
	if c := n.addrs.Calls(); c[netif.MethodAddAddr]+c[netif.MethodAddRoute] != 0 {
		t.Errorf("a ClusterIP inside the Service CIDR made address or route calls: %v", c)
	}
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync with nothing changed wrote %d times: %v", w, n.callLog())
	}
}

func TestServiceCIDRRouteFollowsTheConfiguration(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	checkDump(t, "without serviceCIDRs", n.ipvsDump(), webAndDNSIPVS)

	// Restarted with the Service CIDR: its route comes, the addresses go.
	p = newTestProxier(t, n, routeOptions("10.96.0.0/24"))
	webAndDNS(p)
	mustSync(t, p, false)
	checkDump(t, "with serviceCIDRs", n.ipvsDump(), webAndDNSServers+"link kipvs0 up\n10.96.0.0/32\nlocal 10.96.0.0/24\n")

	// Restarted without it: the addresses are bound again before the route
	// goes, so no ClusterIP stops being accepted.
	k := n.kernel()
	order := &orderedAddrs{Addrs: n.addrs}
	k.Addrs = order
	p = New(zap.NewNop(), k, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	checkDump(t, "without serviceCIDRs again", n.ipvsDump(), webAndDNSIPVS)
	bind, del := slices.Index(order.calls, netif.MethodAddAddr), slices.Index(order.calls, netif.MethodDelRoute)
	if bind < 0 || del < bind {
		t.Errorf("the route was deleted before the ClusterIPs were bound: %v", order.calls)
	}
}

// orderedAddrs records the order of address and route writes.
type orderedAddrs struct {
	netif.Addrs
	calls []string
}

func (o *orderedAddrs) AddAddr(a netip.Addr) error {
	o.calls = append(o.calls, netif.MethodAddAddr)
	return o.Addrs.AddAddr(a)
}

func (o *orderedAddrs) DelRoute(p netip.Prefix) error {
	o.calls = append(o.calls, netif.MethodDelRoute)
	return o.Addrs.DelRoute(p)
}

func TestServiceCIDRRouteIsRepairedAndCleanedUp(t *testing.T) {
	n := newFakeNode()
	opts := routeOptions("10.96.0.0/24")
	p := newTestProxier(t, n, opts)
	webAndDNS(p)
	mustSync(t, p, false)
	if err := n.addrs.DelRoute(netip.MustParsePrefix("10.96.0.0/24")); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p, true)
	checkDump(t, "repaired", n.ipvsDump(), webAndDNSServers+"link kipvs0 up\n10.96.0.0/32\nlocal 10.96.0.0/24\n")

	plan, err := CleanupPlan(n.kernel(), BuildRules(opts.Rules), v1.IPv4Protocol)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(plan, "ip link del kipvs0 (with its 1 addresses and 1 local routes)") {
		t.Errorf("the cleanup plan does not name the route:\n%s", strings.Join(plan, "\n"))
	}
	if err := Cleanup(n.kernel(), BuildRules(opts.Rules), v1.IPv4Protocol); err != nil {
		t.Fatal(err)
	}
	if d := n.addrs.Dump(); d != "" {
		t.Errorf("cleanup left %q", d)
	}
}

func TestServiceCIDRMasqueradesTheNodeWithoutClusterCIDR(t *testing.T) {
	cfg := RuleConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/108")}}
	got := BuildRules(cfg).Chains["nat"][1]
	want := [][]string{
		{"-m", "set", "--match-set", "KIPVS-VIP", "src", "-j", "KIPVS-MARK-MASQ"},
		{"-s", "10.96.0.0/16", "-j", "KIPVS-MARK-MASQ"},
		{"-j", "ACCEPT"},
	}
	if got.Name != ChainCluster || !slices.EqualFunc(got.Rules, want, slices.Equal) {
		t.Errorf("%s = %q, want %q", got.Name, got.Rules, want)
	}
}

// The kernel deletes a link's IPv4 routes with its last IPv4 address; the
// anchor (the CIDR's network address) keeps the route when the last
// Service address bound on kipvs0 goes, in an incremental sync.
func TestServiceCIDRRouteOutlivesTheLastBoundAddress(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, routeOptions("10.96.0.0/24"))
	p.OnService(service(ns, "other", withClusterIP("10.100.0.7")))
	p.OnSlice(slice(ns, "other-1", "other", withEndpoints(ep("10.244.4.1"))))
	mustSync(t, p, false)
	p.OnServiceDelete(service(ns, "other", withClusterIP("10.100.0.7")))
	mustSync(t, p, false)
	checkDump(t, "after the last Service address went", n.addrs.Dump(), "link kipvs0 up\n10.96.0.0/32\nlocal 10.96.0.0/24\n")
}
