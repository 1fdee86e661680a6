package proxier

import (
	"errors"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

func TestOwnershipRecordComesBeforeAndGoesAfterItsVirtualServer(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	p.OnServiceDelete(service(ns, "dns"))
	var got []string
	for _, o := range Plan(p.want.state, p.applied, p.absorb(p.takeChanges(), false, NewScope())) {
		got = append(got, o.String())
	}
	want := []string{
		"ipvsadm -D -u 10.96.0.53:53",
		"ip addr del 10.96.0.53/32",
		"ipset del KIPVS-CLUSTER-IP 10.96.0.53,udp:53",
		"ipset del KIPVS-OWNED 10.96.0.53,udp:53", // after the virtual server is gone
		"ipset del KIPVS-VIP 10.96.0.53",
	}
	checkDump(t, "plan", strings.Join(got, "\n"), strings.Join(want, "\n"))
}

// handMade are virtual servers an operator or another tool made: on a node
// address, on another port of a ClusterIP kube-ipvs binds, and on an
// address kube-ipvs knows nothing about.
const handMade = `-A -t 192.168.1.10:30080 -s wlc
-a -t 192.168.1.10:30080 -r 10.244.1.1:8080 -m -w 2
-A -t 10.96.0.10:443 -s sh -b sh-port
-a -t 10.96.0.10:443 -r 10.244.5.5:443 -g -w 1
-A -u 172.16.0.1:53 -s rr
`

func TestHandMadeVirtualServersSurviveSyncsRestartsAndCleanup(t *testing.T) {
	n := newFakeNode()
	if err := n.ipvs.Load(handMade); err != nil {
		t.Fatal(err)
	}
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	for _, full := range []bool{true, false, true} {
		mustSync(t, p, full)
	}
	p2 := New(p.log, n.kernel(), testOptions())
	webAndDNS(p2)
	mustSync(t, p2, true)
	p2.OnServiceDelete(service(ns, "web"))
	mustSync(t, p2, false)
	mustSync(t, p2, true)
	if err := Cleanup(n.kernel(), BuildRules(testOptions().Rules), testOptions().Build.Family); err != nil {
		t.Fatal(err)
	}
	sorted, _, _ := ipvs.Parse(handMade)
	want := ipvs.Format(sorted, mustParseDests(t, handMade))
	checkDump(t, "ipvs after syncs, a restart and cleanup", n.ipvs.Dump(), want)
	if d := n.sets.Dump() + n.addrs.Dump(); d != "" {
		t.Errorf("cleanup left:\n%s", d)
	}
}

func mustParseDests(t *testing.T, text string) map[ipvs.ServiceKey][]ipvs.Destination {
	t.Helper()
	_, dests, err := ipvs.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return dests
}

func TestRestartAfterTheDummyInterfaceWentLeavesExactlyTheDesiredRealServers(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.2.1"), ep("10.244.3.1"))))
	mustSync(t, p, false)

	// The agent stops; `ip link del kipvs0` takes every VIP; the Service
	// changes meanwhile; the agent starts again.
	if err := n.addrs.DeleteLink(); err != nil {
		t.Fatal(err)
	}
	p2 := newTestProxier(t, n, testOptions())
	p2.OnService(service(ns, "web"))
	p2.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.4.1"))))
	mustSync(t, p2, false)
	checkDump(t, "ipvs", n.ipvsDump(), `-A -t 10.96.0.10:80 -s rr
-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1
-a -t 10.96.0.10:80 -r 10.244.4.1:8080 -m -w 1
link kipvs0 up
10.96.0.10/32
`)
	n.resetCalls()
	mustSync(t, p2, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("the next full sync still repaired something: %v", n.callLog())
	}
}

func TestCrashBetweenRecordAndVirtualServerLeaksNothing(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	mustSync(t, p, true) // creates the sets
	// Records written, virtual servers never created (the agent died in
	// between): one a Service still wants, one nobody wants any more.
	for _, k := range []ipvs.ServiceKey{key("10.96.0.10", ipvs.TCP, 80), key("10.96.0.99", ipvs.TCP, 80)} {
		e := ownedEntry(testOptions().Build.Family, k)
		if err := n.sets.AddEntry(e.Set(), e.Entry()); err != nil {
			t.Fatal(err)
		}
	}
	p2 := New(p.log, n.kernel(), testOptions())
	p2.OnService(service(ns, "web"))
	mustSync(t, p2, true)
	checkDump(t, "ipvs", n.ipvs.Dump(), "-A -t 10.96.0.10:80 -s rr\n")
	if got := n.sets.Dump(); strings.Contains(got, "10.96.0.99") || !strings.Contains(got, "add KIPVS-OWNED 10.96.0.10,tcp:80") {
		t.Errorf("records after the full sync:\n%s", got)
	}
}

func TestLostRecordIsRecoveredForVirtualServersOnKipvs0(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	// `ipset flush`: every member of every set is gone.
	for _, name := range []string{SetOwned, SetClusterIP, SetVIP, SetLoopBack} {
		entries, err := n.sets.ListEntries(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := n.sets.DelEntry(name, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	n.resetCalls()
	mustSync(t, p, true)
	if c := n.ipvs.Calls(); c[ipvs.MethodAddService]+c[ipvs.MethodDeleteService]+c[ipvs.MethodAddDestination] != 0 {
		t.Errorf("virtual servers were recreated instead of adopted: %v", c)
	}
	checkDump(t, "ipvs", n.ipvsDump(), webAndDNSIPVS)
	if !strings.Contains(n.sets.Dump(), "add KIPVS-OWNED 10.96.0.10,tcp:80\nadd KIPVS-OWNED 10.96.0.53,udp:53\n") {
		t.Errorf("record not restored:\n%s", n.sets.Dump())
	}
}

func TestCleanupKeepsTheRecordWhenAVirtualServerCannotBeDeleted(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	n.ipvs.FailOn(ipvs.MethodDeleteService, key("10.96.0.53", ipvs.UDP, 53), errors.New("busy"))
	r := BuildRules(testOptions().Rules)
	if err := Cleanup(n.kernel(), r, testOptions().Build.Family); err == nil {
		t.Fatal("cleanup reported no error")
	}
	if _, err := n.sets.ListEntries(SetOwned); err != nil {
		t.Fatalf("the record went although a virtual server is left: %v", err)
	}
	n.ipvs.FailOn(ipvs.MethodDeleteService, key("10.96.0.53", ipvs.UDP, 53), nil)
	if err := Cleanup(n.kernel(), r, testOptions().Build.Family); err != nil {
		t.Fatal(err)
	}
	if d := n.ipvs.Dump() + n.sets.Dump(); d != "" {
		t.Errorf("the second cleanup left:\n%s", d)
	}
	if _, err := n.sets.ListEntries(SetOwned); !errors.Is(err, iptables.ErrNotFound) {
		t.Errorf("record set still there: %v", err)
	}
}

func TestCleanupWithoutIPVSRemovesTheRest(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	k := n.kernel()
	k.IPVS = nil // ip_vs is not loaded: no virtual server can exist
	if err := Cleanup(k, p.rules, p.opts.Build.Family); err != nil {
		t.Fatal(err)
	}
	if sets := n.sets.Dump(); strings.Contains(sets, "KIPVS-") {
		t.Errorf("sets left:\n%s", sets)
	}
	if ipt := n.ipt.Dump(); strings.Contains(ipt, "KIPVS-") {
		t.Errorf("rules left:\n%s", ipt)
	}
	if addrs := n.addrs.Dump(); strings.Contains(addrs, "kipvs0") {
		t.Errorf("link left:\n%s", addrs)
	}
}
