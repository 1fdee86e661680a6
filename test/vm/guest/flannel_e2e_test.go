//go:build vmguest

package guest

import (
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// kube-ipvs beside the real Flannel (flannel.go), in the e2e suite:
// flanneld with its kube subnet manager and the vxlan backend on both
// nodes of the two-node bed, which has no routes of its own between the
// nodes' pods, and kube-ipvs on both nodes against the same apiserver.
// Pods keep the bed's addresses, inside their Node's spec.podCIDR, as
// Flannel's CNI plugin would give them.

// flannelResync is flanneld's --iptables-resync (its default, 5 s): how
// often it checks that its rules are all there and rebuilds them if not.
const flannelResync = 5 * time.Second

// TestE2EFlannelPodToPodOverVXLAN: without flanneld a node has no route to
// the other node's pods; with it, each routes the other's pod CIDR through
// flannel.1 (VXLAN, VNI 1, from its underlay address), the Nodes carry
// flanneld's lease annotations, and pods on the two nodes reach each other
// unmasqueraded while both flannel.1 devices count the packets.
func TestE2EFlannelPodToPodOverVXLAN(t *testing.T) {
	api := NeedAPI(t)
	bed := NewFlannelBed(t, api)
	a1, b1 := bed.A.AddPod(t, "a-pod1"), bed.B.AddPod(t, "b-pod1")
	for _, p := range []*BedPod{a1, b1} {
		StartBackend(t, p.Name, p.Name, BackendPort)
	}
	if out, err := Exec(bed.A.NS, "ip", "route", "get", b1.IP().String()); err == nil {
		t.Fatalf("%s routes %s before flanneld runs: %s", bed.A.Name, b1.IP(), out)
	}
	if r, err := AskTCP(a1.Name, podAddr(b1)); err == nil {
		t.Fatalf("%s reached %s before flanneld runs: %+v", a1.Name, b1.Name, r)
	}

	fl := StartFlannel(t, api, bed)
	routes := fl.WaitRoutes(t)
	for _, n := range bed.Nodes() {
		link := Run(t, n.NS, "ip", "-d", "link", "show", FlannelDevice)
		want := regexp.MustCompile(`vxlan id 1 local ` + regexp.QuoteMeta(n.IP.String()) + ` dev eth0 .*dstport 8472`)
		if !want.MatchString(link) {
			t.Errorf("%s on %s is not flanneld's VXLAN device from %s:\n%s", FlannelDevice, n.Name, n.IP, link)
		}
		node, err := api.Client.CoreV1().Nodes().Get(apiCtx(t), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ann := node.Annotations
		if ann[FlannelAnnotations+"public-ip"] != n.IP.String() || ann[FlannelAnnotations+"backend-type"] != "vxlan" {
			t.Errorf("Node %s's flannel annotations: %v; want public-ip %s, backend-type vxlan", n.Name, ann, n.IP)
		}
		t.Logf("%s: route %q, %s address %s, backend-data %s", n.Name, routes[n], FlannelDevice,
			FlannelAddr(t, n), ann[FlannelAnnotations+"backend-data"])
	}
	agents := startFlannelAgents(t, bed)

	for _, c := range [][2]*BedPod{{a1, b1}, {b1, a1}} {
		from, to := c[0], c[1]
		before := flannelCounters(t, bed)
		tally := mustServe(t, from.Name, podAddr(to), 10, to)
		for _, r := range tally.Replies {
			if r.Source.Addr() != from.IP() {
				t.Errorf("%s saw %s as %s; want %s: pod to pod is not masqueraded", to.Name, from.Name, r.Source, from.IP())
				break
			}
		}
		mustCountOverlay(t, bed, before, bed.Nodes(), len(tally.Replies))
		t.Logf("%s to %s over %s: %s", from.Name, to.Name, FlannelDevice, tally)
	}
	for _, a := range agents {
		checkAgent(t, a)
	}
	fl.Check(t)
}

// TestE2EFlannelClusterIPToTheOtherNode: a pod on node-a reaches a
// ClusterIP whose only endpoint is a pod on node-b: node-a's kube-ipvs
// sends it to the pod through flannel.1, and the pod sees the client's own
// address.
func TestE2EFlannelClusterIPToTheOtherNode(t *testing.T) {
	api := NeedAPI(t)
	bed := NewFlannelBed(t, api)
	b1, client := bed.B.AddPod(t, "b-pod1"), bed.A.AddPod(t, "a-client")
	StartBackend(t, b1.Name, b1.Name, BackendPort)
	fl := StartFlannel(t, api, bed)
	svc := api.CreateService(t, "fl-web", httpPort)
	createFlannelSlice(t, api, BedSlice("fl-web-1", svc.Name, []Port{httpPort}, b1))
	agents := startFlannelAgents(t, bed)
	vs := netip.AddrPortFrom(ClusterIP(svc), uint16(httpPort.Port))
	t.Logf("ipvsadm -Ln on %s:\n%s", bed.A.Name, bed.A.WaitIPVS(t, VSLine("TCP", vs, "rr"), RSLine(podAddr(b1))))

	before := flannelCounters(t, bed)
	tally := mustServe(t, client.Name, vs, 10, b1)
	for _, r := range tally.Replies {
		if r.Source.Addr() != client.IP() {
			t.Errorf("%s saw the client as %s, want %s (a pod is not masqueraded)", r.Name, r.Source, client.IP())
			break
		}
	}
	mustCountOverlay(t, bed, before, bed.Nodes(), len(tally.Replies))
	t.Logf("%s to %s (only endpoint %s on %s): %s", client.Name, vs, b1.Name, bed.B.Name, tally)
	for _, a := range agents {
		checkAgent(t, a)
	}
	fl.Check(t)
}

// TestE2EFlannelNodePortFromOutside: the outside client reaches a
// NodePort (allocated by the apiserver) on node-a whose only endpoint is
// on node-b: masqueraded to node-a's flannel.1 address on its way into
// the overlay (externalTrafficPolicy Cluster), counted by both flannel.1
// devices; node-b's NodePort serves its local endpoint too.
func TestE2EFlannelNodePortFromOutside(t *testing.T) {
	api := NeedAPI(t)
	bed := NewFlannelBed(t, api)
	b1 := bed.B.AddPod(t, "b-pod1")
	StartBackend(t, b1.Name, b1.Name, BackendPort)
	fl := StartFlannel(t, api, bed)
	svc := createFlannelNodePort(t, api, "fl-np")
	nodePort := uint16(svc.Spec.Ports[0].NodePort)
	createFlannelSlice(t, api, BedSlice("fl-np-1", svc.Name, []Port{httpPort}, b1))
	agents := startFlannelAgents(t, bed)
	for _, n := range bed.Nodes() {
		n.WaitIPVS(t, VSLine("TCP", ap(n.IP, nodePort), "rr"), RSLine(podAddr(b1)))
	}

	np := ap(bed.A.IP, nodePort)
	masq := FlannelAddr(t, bed.A)
	before := flannelCounters(t, bed)
	tally := mustServe(t, bed.External, np, 10, b1)
	for _, r := range tally.Replies {
		if r.Source.Addr() != masq {
			t.Errorf("%s saw the outside client as %s; want %s, node-a's %s address", r.Name, r.Source, masq, FlannelDevice)
			break
		}
	}
	mustCountOverlay(t, bed, before, bed.Nodes(), len(tally.Replies))
	t.Logf("%s to %s (only endpoint %s on %s): %s", bed.External, np, b1.Name, bed.B.Name, tally)
	mustServe(t, bed.External, ap(bed.B.IP, nodePort), 5, b1)
	for _, a := range agents {
		checkAgent(t, a)
	}
	fl.Check(t)
}

// TestE2EFlannelRestartsLeaveEachOthersRules: with both running, a
// flanneld restart on both nodes leaves kube-ipvs' lines of iptables-save
// and ip6tables-save (those naming KIPVS-) byte for byte as they were, and
// kube-ipvs finds nothing of its own to repair afterwards (no "rules
// changed"); a kube-ipvs restart on both nodes leaves flanneld's lines
// (FLANNEL-*, "flanneld …") byte for byte as they were, and flanneld finds
// nothing missing in its next resync (and, as the control, does rebuild a
// rule deleted by hand). A ClusterIP from a pod on node-a and node-a's
// NodePort from outside, both served by the pod on node-b, answer before
// and after each restart.
func TestE2EFlannelRestartsLeaveEachOthersRules(t *testing.T) {
	api := NeedAPI(t)
	bed := NewFlannelBed(t, api)
	b1, client := bed.B.AddPod(t, "b-pod1"), bed.A.AddPod(t, "a-client")
	StartBackend(t, b1.Name, b1.Name, BackendPort)
	fl := StartFlannel(t, api, bed)
	svc := createFlannelNodePort(t, api, "fl-both")
	createFlannelSlice(t, api, BedSlice("fl-both-1", svc.Name, []Port{httpPort}, b1))
	agents := map[*BedNode]*Proc{}
	for _, n := range bed.Nodes() {
		agents[n] = n.StartAPIAgent(t)
	}
	cluster := netip.AddrPortFrom(ClusterIP(svc), uint16(httpPort.Port))
	nodePort := ap(bed.A.IP, uint16(svc.Spec.Ports[0].NodePort))
	bed.A.WaitIPVS(t, VSLine("TCP", cluster, "rr"), VSLine("TCP", nodePort, "rr"), RSLine(podAddr(b1)))
	for _, n := range bed.Nodes() {
		waitAgentSyncs(t, n, 2)
	}
	traffic := func(when string) {
		t.Helper()
		a := mustServe(t, client.Name, cluster, 5, b1)
		b := mustServe(t, bed.External, nodePort, 5, b1)
		t.Logf("%s: %s to %s: %s; %s to %s: %s", when, client.Name, cluster, a, bed.External, nodePort, b)
	}
	traffic("before the restarts")

	kipvs, flannel := ownLines(t, bed, KIPVSLine), ownLines(t, bed, FlannelLine)
	for _, n := range bed.Nodes() {
		if !strings.Contains(kipvs[n], "-j KIPVS-") || !strings.Contains(flannel[n], "-j FLANNEL-POSTRTG") ||
			!strings.Contains(flannel[n], "-j FLANNEL-FWD") {
			t.Fatalf("%s lacks kube-ipvs' or flanneld's rules:\nkube-ipvs:\n%s\nflanneld:\n%s", n.Name, kipvs[n], flannel[n])
		}
		t.Logf("%s: kube-ipvs' lines:\n%sflanneld's lines:\n%s", n.Name, kipvs[n], flannel[n])
	}

	// flanneld restarts on both nodes, kube-ipvs running.
	repaired := map[*BedNode]int{}
	for _, n := range bed.Nodes() {
		// Its first sync wrote every chain and jump, and said so.
		if repaired[n] = strings.Count(agents[n].Output(), "rules changed"); repaired[n] == 0 {
			t.Fatalf("kube-ipvs on %s never logged \"rules changed\", not even for its first sync: the check below would prove nothing", n.Name)
		}
	}
	for _, n := range bed.Nodes() {
		fl.Restart(t, n)
	}
	// The new flanneld deletes and appends its rules again: wait until they
	// are all back, wherever it put them.
	waitFor(t, FlannelWait, "flanneld's rules back on both nodes", func() bool {
		now := ownLines(t, bed, FlannelLine)
		return sameLines(now[bed.A], flannel[bed.A]) && sameLines(now[bed.B], flannel[bed.B])
	})
	mustBeSame(t, bed, "kube-ipvs' lines across the flanneld restarts", kipvs, ownLines(t, bed, KIPVSLine))
	for _, n := range bed.Nodes() {
		waitAgentSyncs(t, n, 2)
		if got := strings.Count(agents[n].Output(), "rules changed"); got != repaired[n] {
			t.Errorf("kube-ipvs on %s repaired its rules after the flanneld restart:\n%s", n.Name, tail(agents[n].Output(), 30))
		}
	}
	mustBeSame(t, bed, "kube-ipvs' lines after its next syncs", kipvs, ownLines(t, bed, KIPVSLine))
	traffic("after the flanneld restarts")

	// kube-ipvs restarts on both nodes, flanneld running.
	flannel = ownLines(t, bed, FlannelLine) // as the restarted flanneld wrote them
	rebuilt := map[*BedNode]int{}
	for _, n := range bed.Nodes() {
		rebuilt[n] = strings.Count(fl.Proc(n).Output(), "rules are missing")
	}
	for _, n := range bed.Nodes() {
		agents[n].Stop()
		t.Logf("kube-ipvs on %s (pid %d) stopped", n.Name, agents[n].PID())
		agents[n] = n.StartAPIAgent(t)
	}
	for _, n := range bed.Nodes() {
		waitAgentSyncs(t, n, 2)
	}
	mustBeSame(t, bed, "flanneld's lines across the kube-ipvs restarts", flannel, ownLines(t, bed, FlannelLine))
	// One more resync of flanneld's, which would have rebuilt a rule that
	// went missing (and said so).
	time.Sleep(flannelResync + time.Second)
	for _, n := range bed.Nodes() {
		if got := strings.Count(fl.Proc(n).Output(), "rules are missing"); got != rebuilt[n] {
			t.Errorf("flanneld on %s rebuilt its rules after the kube-ipvs restart:\n%s", n.Name, tail(fl.Proc(n).Output(), 30))
		}
	}
	mustBeSame(t, bed, "flanneld's lines after its next resync", flannel, ownLines(t, bed, FlannelLine))
	if now := ownLines(t, bed, KIPVSLine); now[bed.A] != kipvs[bed.A] || now[bed.B] != kipvs[bed.B] {
		t.Logf("kube-ipvs' own lines after its restart differ from before (not a failure):\n%s\n%s", now[bed.A], now[bed.B])
	}
	traffic("after the kube-ipvs restarts")

	// The control for the check above: a rule of flanneld's deleted by hand
	// comes back within a resync, and flanneld says so.
	Run(t, bed.A.NS, "iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "1")
	waitFor(t, FlannelWait, "flanneld rebuilding the rule deleted by hand", func() bool {
		return strings.Count(fl.Proc(bed.A).Output(), "rules are missing") > rebuilt[bed.A] &&
			sameLines(ownLines(t, bed, FlannelLine)[bed.A], flannel[bed.A])
	})
	for _, a := range agents {
		checkAgent(t, a)
	}
	fl.Check(t)
}

// startFlannelAgents runs kube-ipvs against the apiserver on both nodes
// (BedNode.StartAPIAgent) and waits for each one's first sync.
func startFlannelAgents(t *testing.T, bed *Bed) []*Proc {
	t.Helper()
	var agents []*Proc
	for _, n := range bed.Nodes() {
		agents = append(agents, n.StartAPIAgent(t))
	}
	for _, n := range bed.Nodes() {
		waitAgentSyncs(t, n, 1)
	}
	return agents
}

// createFlannelSlice creates slice through the API, as the EndpointSlice
// controller would, and deletes it at cleanup.
func createFlannelSlice(t *testing.T, api *API, slice *discovery.EndpointSlice) {
	t.Helper()
	eps := api.Client.DiscoveryV1().EndpointSlices(Namespace)
	if _, err := eps.Create(apiCtx(t), slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice %s: %v", slice.Name, err)
	}
	t.Cleanup(func() {
		if err := eps.Delete(apiCtx(t), slice.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting EndpointSlice %s: %v", slice.Name, err)
		}
	})
}

// createFlannelNodePort creates a NodePort Service for httpPort,
// externalTrafficPolicy Cluster, without a selector (its slice is made by
// hand); the apiserver allocates its ClusterIP and NodePort. It is
// deleted at cleanup.
func createFlannelNodePort(t *testing.T, api *API, name string) *v1.Service {
	t.Helper()
	svcs := api.Client.CoreV1().Services(Namespace)
	created, err := svcs.Create(apiCtx(t), &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeNodePort, ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster,
			Ports: []v1.ServicePort{{Name: httpPort.Name, Protocol: v1.ProtocolTCP, Port: httpPort.Port, TargetPort: intstr.FromInt32(httpPort.Target)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := svcs.Delete(apiCtx(t), name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting Service %s: %v", name, err)
		}
	})
	if created.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("the apiserver allocated no NodePort to %s", name)
	}
	return created
}

// flannelCounters are both nodes' flannel.1 packet counters, [rx, tx].
func flannelCounters(t *testing.T, bed *Bed) map[*BedNode][2]uint64 {
	t.Helper()
	c := map[*BedNode][2]uint64{}
	for _, n := range bed.Nodes() {
		rx, tx := FlannelStats(t, n)
		c[n] = [2]uint64{rx, tx}
	}
	return c
}

// mustCountOverlay fails unless flannel.1 received and sent at least
// atLeast packets more on each of nodes than before: the requests (and
// their replies) went through the VXLAN overlay.
func mustCountOverlay(t *testing.T, bed *Bed, before map[*BedNode][2]uint64, nodes []*BedNode, atLeast int) {
	t.Helper()
	after := flannelCounters(t, bed)
	for _, n := range nodes {
		rx, tx := after[n][0]-before[n][0], after[n][1]-before[n][1]
		if rx < uint64(atLeast) || tx < uint64(atLeast) {
			t.Errorf("%s on %s counted rx +%d, tx +%d packets; want at least %d each: the traffic did not go through VXLAN",
				FlannelDevice, n.Name, rx, tx, atLeast)
			continue
		}
		t.Logf("%s on %s: rx +%d, tx +%d packets", FlannelDevice, n.Name, rx, tx)
	}
}

// ownLines is IPTablesLines of iptables-save and ip6tables-save on each
// node, reduced by keep.
func ownLines(t *testing.T, bed *Bed, keep func(string) bool) map[*BedNode]string {
	t.Helper()
	lines := map[*BedNode]string{}
	for _, n := range bed.Nodes() {
		lines[n] = IPTablesLines(t, n.NS, "iptables-save", keep)
		if v6 := IPTablesLines(t, n.NS, "ip6tables-save", keep); v6 != "" {
			lines[n] += "ip6tables-save\n" + v6
		}
	}
	return lines
}

// mustBeSame fails unless got holds, for each node, exactly the bytes of want.
func mustBeSame(t *testing.T, bed *Bed, what string, want, got map[*BedNode]string) {
	t.Helper()
	for _, n := range bed.Nodes() {
		if got[n] != want[n] {
			t.Errorf("%s on %s changed:\nbefore:\n%safter:\n%s", what, n.Name, want[n], got[n])
		}
	}
}

// sameLines reports whether a and b hold the same lines, in any order.
func sameLines(a, b string) bool {
	return slices.Equal(sortedLines(a), sortedLines(b)) // contract_test.go's
}

// lastSyncSeries is kube-ipvs' gauge of its last successful IPv4 sync.
const lastSyncSeries = `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}`

// waitAgentSyncs waits until the agent in n's namespace has completed k
// more successful syncs: its lastSyncSeries took k new values (a new
// agent has none until its first sync).
func waitAgentSyncs(t *testing.T, n *BedNode, k int) {
	t.Helper()
	last, _ := agentLastSync(n.NS)
	deadline := time.Now().Add(2 * BedWait)
	for seen := 0; seen < k; {
		if time.Now().After(deadline) {
			t.Fatalf("kube-ipvs on %s: %d of %d more syncs within %v (last at %v)", n.Name, seen, k, 2*BedWait, last)
		}
		time.Sleep(200 * time.Millisecond)
		if v, ok := agentLastSync(n.NS); ok && v > 0 && v != last {
			last, seen = v, seen+1
		}
	}
}

// agentLastSync reads lastSyncSeries from the agent's /metrics in ns;
// false while the agent does not answer or has not synced.
func agentLastSync(ns string) (float64, bool) {
	conn, err := DialTCP(ns, MetricsAddr)
	if err != nil {
		return 0, false
	}
	defer conn.Close()
	if err := conn.c.SetDeadline(time.Now().Add(RequestTimeout)); err != nil {
		return 0, false
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+MetricsAddr.String()+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	req.Close = true
	if err := req.Write(conn.c); err != nil {
		return 0, false
	}
	resp, err := http.ReadResponse(conn.r, req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	return MetricValue(string(body), lastSyncSeries)
}
