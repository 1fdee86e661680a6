package proxier

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-ipvs/kube-ipvs/healthcheck"
)

// fakeLocal is the node's address list.
type fakeLocal struct {
	mu    sync.Mutex
	addrs []netip.Addr
	err   error
	reads int
}

func (f *fakeLocal) LocalAddrs(ipv6 bool) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.err != nil {
		return nil, f.err
	}
	var out []netip.Addr
	for _, a := range f.addrs {
		if a.Is6() == ipv6 {
			out = append(out, a)
		}
	}
	return out, nil
}

func (f *fakeLocal) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = nil
	for _, a := range addrs {
		f.addrs = append(f.addrs, netip.MustParseAddr(a))
	}
}

// fakeHealth records what the health server was last told.
type fakeHealth struct {
	calls    int
	addrs    []netip.Addr
	services []healthcheck.Service
	err      error
}

func (f *fakeHealth) Sync(addrs []netip.Addr, services []healthcheck.Service) error {
	f.calls++
	f.addrs, f.services = addrs, services
	return f.err
}

func (f *fakeHealth) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "on %v:", f.addrs)
	for _, s := range f.services {
		fmt.Fprintf(&b, " %s:%d=%d", s.Name, s.Port, s.LocalEndpoints)
	}
	return b.String()
}

func nodeObject(ips ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeHostName, Address: testNode})
	return n
}

// newNorthSouthProxier is a proxier on a fake node holding the local
// addresses given, serving NodePorts on the Node's primary addresses, with
// a fake health server.
func newNorthSouthProxier(t testing.TB, addrs ...string) (*fakeNode, *Proxier, *fakeLocal, *fakeHealth) {
	t.Helper()
	n := newFakeNode()
	local := &fakeLocal{}
	local.set(addrs...)
	health := &fakeHealth{}
	opts := testOptions()
	opts.NodePorts = NodePortConfig{Primary: true}
	opts.Health = health
	k := n.kernel()
	k.Local = local
	if err := Setup(zap.NewNop(), k, n.sysctl, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	return n, New(zap.NewNop(), k, opts), local, health
}

func TestNodeWideInputsAreFollowedWithoutARestart(t *testing.T) {
	n, p, local, health := newNorthSouthProxier(t, "192.168.50.11", "127.0.0.1", "203.0.113.7")
	web := service("default", "web", nodePortType(30080))
	lb := service("default", "lb", loadBalancer("203.0.113.7"), externalLocal(32000), withClusterIP("10.96.0.20"),
		func(s *v1.Service) { s.Spec.Ports[0].NodePort = 30081 })
	p.OnService(web)
	p.OnService(lb)
	p.OnSlice(slice("default", "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)))))
	p.OnSlice(slice("default", "lb-1", "lb", withEndpoints(ep("10.244.1.2", onNode(testNode)), ep("10.244.2.2"))))
	mustSync(t, p, false)

	dump := n.ipvsDump()
	if strings.Contains(dump, ":30080") {
		t.Fatalf("NodePort programmed before the Node's addresses are known:\n%s", dump)
	}
	if strings.Contains(dump, "203.0.113.7/32") {
		t.Errorf("the load-balancer IP is a node address, yet bound on kipvs0:\n%s", dump)
	}
	if !strings.Contains(dump, "-A -t 203.0.113.7:80") {
		t.Errorf("no virtual server on the load-balancer IP:\n%s", dump)
	}
	if len(health.services) != 0 {
		t.Errorf("health ports opened with no address to listen on: %s", health)
	}

	// The Node arrives: NodePorts appear on its InternalIP, and the health
	// port with them.
	p.OnNode(nodeObject("192.168.50.11"))
	mustSync(t, p, false)
	dump = n.ipvsDump()
	for _, want := range []string{
		"-A -t 192.168.50.11:30080 -s rr\n-a -t 192.168.50.11:30080 -r 10.244.1.1:8080 -m -w 1",
		"-A -t 192.168.50.11:30081 -s rr\n-a -t 192.168.50.11:30081 -r 10.244.1.2:8080 -m -w 1\n-A",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("missing %q in:\n%s", want, dump)
		}
	}
	if got, want := health.String(), "on [192.168.50.11]: default/lb:32000=1"; got != want {
		t.Errorf("health = %s, want %s", got, want)
	}

	// The Node's address changes: the NodePorts move, nothing is left on
	// the old address.
	p.OnNode(nodeObject("192.168.50.12"))
	mustSync(t, p, false)
	dump = n.ipvsDump()
	if strings.Contains(dump, "192.168.50.11:") || !strings.Contains(dump, "-A -t 192.168.50.12:30080") {
		t.Errorf("NodePorts did not move to the new address:\n%s", dump)
	}
	if !slices.Equal(health.addrs, []netip.Addr{netip.MustParseAddr("192.168.50.12")}) {
		t.Errorf("health server not moved: %s", health)
	}

	// A Node update that changes nothing node-wide rebuilds nothing.
	n.resetCalls()
	calls := health.calls
	p.OnNode(nodeObject("192.168.50.12"))
	mustSync(t, p, false)
	if r, w := n.calls(); r+w != 0 || health.calls != calls {
		t.Errorf("a Node update without new addresses cost %d reads, %d writes, %d health syncs", r, w, health.calls-calls)
	}

	// The load-balancer IP leaves the node's interfaces: it is bound on
	// kipvs0 from the next sync that reads the addresses.
	local.set("192.168.50.12", "127.0.0.1")
	p.OnLocalAddrsChanged()
	mustSync(t, p, false)
	if dump = n.ipvsDump(); !strings.Contains(dump, "203.0.113.7/32") {
		t.Errorf("the load-balancer IP is no longer local, yet not bound:\n%s", dump)
	}

	// A failed address read keeps the last good list.
	local.err = errors.New("netlink: boom")
	mustSync(t, p, true)
	if dump2 := n.ipvsDump(); dump2 != dump {
		t.Errorf("a failed address read changed the kernel:\n%s\nwas:\n%s", dump2, dump)
	}
	local.err = nil

	// The last endpoint on this node goes: the health port says 0.
	p.OnSlice(slice("default", "lb-1", "lb", withEndpoints(ep("10.244.2.2"))))
	mustSync(t, p, false)
	if got, want := health.String(), "on [192.168.50.12]: default/lb:32000=0"; got != want {
		t.Errorf("health = %s, want %s", got, want)
	}

	// A health port that cannot be opened is tried again at the next sync.
	health.err = errors.New("port held")
	p.OnSlice(slice("default", "lb-1", "lb", withEndpoints(ep("10.244.1.3", onNode(testNode)))))
	mustSync(t, p, false)
	calls = health.calls
	health.err = nil
	mustSync(t, p, false)
	if health.calls != calls+1 {
		t.Errorf("a failed health sync was not retried (%d calls, want %d)", health.calls, calls+1)
	}
	mustSync(t, p, false)
	if health.calls != calls+1 {
		t.Errorf("health synced again with nothing changed")
	}

	// ClusterIP again: no NodePort, no health port, nothing of the LB left.
	p.OnService(service("default", "lb", withClusterIP("10.96.0.20")))
	mustSync(t, p, false)
	dump = n.ipvsDump()
	if strings.Contains(dump, ":30081") || strings.Contains(dump, "203.0.113.7") {
		t.Errorf("LoadBalancer leftovers after the type changed to ClusterIP:\n%s", dump)
	}
	if len(health.services) != 0 {
		t.Errorf("health port still served: %s", health)
	}
	if sets := n.sets.Dump(); strings.Contains(sets, "30081") || strings.Contains(sets, "203.0.113.7") {
		t.Errorf("LoadBalancer set members left:\n%s", sets)
	}
}

func TestAServiceChangingTypeEndsWithItsLastType(t *testing.T) {
	n, p, _, health := newNorthSouthProxier(t, "192.168.50.11")
	p.OnNode(nodeObject("192.168.50.11"))
	p.OnSlice(slice("default", "web-1", "web", withEndpoints(ep("10.244.1.1", onNode(testNode)))))
	clusterIP := service("default", "web")
	p.OnService(clusterIP)
	mustSync(t, p, false)
	wantIPVS, wantSets := n.ipvsDump(), n.sets.Dump()

	steps := []struct {
		name string
		svc  *v1.Service
		has  []string
	}{
		{"NodePort", service("default", "web", nodePortType(30080)), []string{"192.168.50.11:30080"}},
		{"LoadBalancer", service("default", "web", loadBalancer("203.0.113.7"), externalLocal(32000), sourceRangesOf("198.51.100.0/24")),
			[]string{"192.168.50.11:30080", "203.0.113.7:80", "203.0.113.7/32"}},
		{"ClusterIP", clusterIP, nil},
	}
	for _, st := range steps {
		p.OnService(st.svc)
		mustSync(t, p, false)
		dump := n.ipvsDump()
		for _, h := range st.has {
			if !strings.Contains(dump, h) {
				t.Errorf("%s: no %s in:\n%s", st.name, h, dump)
			}
		}
	}
	if got := n.ipvsDump(); got != wantIPVS {
		t.Errorf("back to ClusterIP, IPVS:\n%s\nwant:\n%s", got, wantIPVS)
	}
	if got := n.sets.Dump(); got != wantSets {
		t.Errorf("back to ClusterIP, ipsets:\n%s\nwant:\n%s", got, wantSets)
	}
	if len(health.services) != 0 {
		t.Errorf("back to ClusterIP, health ports: %s", health)
	}
	// And a full sync agrees: nothing is left to repair.
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync after the type changes wrote %d times", w)
	}
}

func TestAnExternalIPOnAnotherServicesClusterIPIsAConflict(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	// "a/owner" has 10.96.0.10:80 as its ClusterIP; "b/claimer" names it as
	// an external IP. The first by namespace/name owns it, whatever the
	// order of events.
	claimer := service("b", "claimer", withClusterIP("10.96.0.20"), externalIPs("10.96.0.10"))
	owner := service("a", "owner")
	p.OnService(claimer)
	p.OnSlice(slice("b", "claimer-1", "claimer", withEndpoints(ep("10.244.2.2"))))
	mustSync(t, p, false)
	if dump := n.ipvsDump(); !strings.Contains(dump, "-a -t 10.96.0.10:80 -r 10.244.2.2:8080") {
		t.Fatalf("the external IP alone is not programmed:\n%s", dump)
	}
	p.OnService(owner)
	p.OnSlice(slice("a", "owner-1", "owner", withEndpoints(ep("10.244.1.1"))))
	mustSync(t, p, false)
	dump := n.ipvsDump()
	if !strings.Contains(dump, "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\n-A") {
		t.Errorf("the ClusterIP's owner does not own 10.96.0.10:80:\n%s", dump)
	}
	if p.Skipped()[ReasonConflictingVIPAndPort] == 0 {
		t.Errorf("the conflict is not counted: %v", p.Skipped())
	}
	if sets := n.sets.Dump(); strings.Contains(sets, "KIPVS-EXTERNAL-IP 10.96.0.10") {
		t.Errorf("the loser's set member is programmed:\n%s", sets)
	}
	p.OnServiceDelete(owner)
	mustSync(t, p, false)
	if sets := n.sets.Dump(); !strings.Contains(sets, "add KIPVS-EXTERNAL-IP 10.96.0.10,tcp:80") {
		t.Errorf("the claimer did not take over:\n%s", sets)
	}
}
