package proxier

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// kubeProxyIPVS is what a stopped kube-proxy left in IPVS for web and dns
// (which kube-ipvs serves), a Service kube-ipvs does not serve, its
// NodePort 30080, and keepalived's virtual server.
const kubeProxyIPVS = `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1
-A -u 10.96.0.53:53 -s wrr
-a -u 10.96.0.53:53 -r 10.244.3.1:53 -m -w 1
-A -t 10.96.100.50:80 -s rr
-a -t 10.96.100.50:80 -r 10.244.9.9:8080 -m -w 1
-A -t 192.168.1.10:30080 -s rr
-a -t 192.168.1.10:30080 -r 10.244.9.9:8080 -m -w 1
-A -t 172.16.0.1:443 -s wlc
-a -t 172.16.0.1:443 -r 192.168.1.20:443 -g -w 1
`

func TestTakeOverFromKubeProxyKeepsItsVirtualServers(t *testing.T) {
	n := newFakeNode()
	loadKubeProxyRules(t, n)
	if err := n.ipvs.Load(kubeProxyIPVS); err != nil {
		t.Fatal(err)
	}
	web := key("10.96.0.10", ipvs.TCP, 80)
	if err := n.ipvs.SetConns(web, ap("10.244.1.1:8080"), 3, 7); err != nil {
		t.Fatal(err)
	}
	kp := netif.NewFakeAddrs(KubeProxyLink)
	kp.SeedLink("dummy", false, netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.53"), netip.MustParseAddr("10.96.100.50"))
	opts := testOptions()
	opts.TakeOver = &TakeOver{Link: kp}
	p := newTestProxier(t, n, opts)
	webAndDNS(p)
	n.resetCalls()
	mustSync(t, p, true)

	calls := n.ipvs.Calls()
	if calls[ipvs.MethodAddService] != 0 || calls[ipvs.MethodAddDestination] != 0 {
		t.Errorf("kube-proxy's virtual servers were recreated: %v", calls)
	}
	if calls[ipvs.MethodDeleteService] != 2 || calls[ipvs.MethodUpdateService] != 1 {
		t.Errorf("calls %v, want dns's scheduler edited in place and kube-proxy's two unserved virtual servers deleted", calls)
	}
	dests, err := n.ipvs.ListDestinations(web)
	if err != nil || len(dests) != 2 || dests[0].ActiveConns != 3 || dests[0].InactiveConns != 7 {
		t.Errorf("web's real servers %+v (%v); want the two, the first still counting 3 active and 7 inactive connections", dests, err)
	}
	dump := n.ipvs.Dump()
	for _, want := range []string{"-A -t 10.96.0.10:80 -s rr", "-A -u 10.96.0.53:53 -s rr", "-A -t 172.16.0.1:443 -s wlc\n-a -t 172.16.0.1:443 -r 192.168.1.20:443 -g -w 1"} {
		if !strings.Contains(dump, want) {
			t.Errorf("ipvs lacks %q:\n%s", want, dump)
		}
	}
	for _, gone := range []string{"10.96.100.50", "30080"} {
		if strings.Contains(dump, gone) {
			t.Errorf("kube-proxy's %s is left:\n%s", gone, dump)
		}
	}
	if left := kubeProxyLines(n.ipt.Dump() + n.sets.Dump()); len(left) > 0 {
		t.Errorf("kube-proxy's rules and sets left:\n%s", strings.Join(left, "\n"))
	}
	if d := kp.Dump(); d != "" {
		t.Errorf("kube-ipvs0 is left:\n%s", d)
	}
	if d := n.addrs.Dump(); !strings.Contains(d, "10.96.0.10/32") || !strings.Contains(d, "10.96.0.53/32") {
		t.Errorf("the VIPs are not on kipvs0:\n%s", d)
	}
	if sets := n.sets.Dump(); !strings.Contains(sets, "add KIPVS-OWNED 10.96.0.10,tcp:80") {
		t.Errorf("web's adopted virtual server is not recorded as kube-ipvs':\n%s", sets)
	}

	// Done: later syncs neither read kube-ipvs0 nor touch anything.
	kp.ResetCalls()
	n.resetCalls()
	mustSync(t, p, true)
	if _, writes := n.calls(); writes != 0 || len(kp.Calls()) != 0 {
		t.Errorf("after the take-over a full sync wrote %v, read kube-ipvs0 %v", n.callLog(), kp.Calls())
	}
}

// A Service that cannot be programmed keeps kube-proxy's rules in place,
// and the take-over finishes at the first full sync after it recovers.
func TestTakeOverWaitsForEveryService(t *testing.T) {
	n := newFakeNode()
	loadKubeProxyRules(t, n)
	kp := netif.NewFakeAddrs(KubeProxyLink)
	kp.SeedLink("dummy", false, netip.MustParseAddr("10.96.0.10"))
	opts := testOptions()
	opts.TakeOver = &TakeOver{Link: kp}
	p := newTestProxier(t, n, opts)
	webAndDNS(p)
	n.ipvs.FailOn(ipvs.MethodAddService, key("10.96.0.53", ipvs.UDP, 53), errors.New("refused"))
	mustSync(t, p, true)
	if kubeProxyLines(n.ipt.Dump()) == nil || kp.Dump() == "" {
		t.Fatalf("kube-proxy's state was removed while dns could not be programmed")
	}
	n.ipvs.FailOn(ipvs.MethodAddService, key("10.96.0.53", ipvs.UDP, 53), nil)
	mustSync(t, p, true)
	if left := kubeProxyLines(n.ipt.Dump() + n.sets.Dump()); len(left) > 0 || kp.Dump() != "" {
		t.Errorf("after recovery kube-proxy's state is left:\n%s\n%s", strings.Join(left, "\n"), kp.Dump())
	}
}
