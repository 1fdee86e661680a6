//go:build vmguest

package guest

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The bed tests prove the two-node bed (bed.go) that the NodePort,
// LoadBalancer and externalTrafficPolicy tests stand on: its wiring, two
// agents serving one ClusterIP with a pod on each node, and SCTP.

var (
	sctpVIP  = netip.MustParseAddr("10.96.0.20")
	sctpPort = Port{Name: "sctp", Protocol: v1.ProtocolSCTP, Port: 80, Target: BackendPort}
)

func podAddr(p *BedPod) netip.AddrPort { return netip.AddrPortFrom(p.IP(), BackendPort) }

// podsOnBothNodes is a bed with pod a-pod1 on node-a and b-pod1 on node-b,
// each running a backend on BackendPort that start starts (StartBackend or
// StartBackendSCTP), and a client pod b-client on node-b.
func podsOnBothNodes(t *testing.T, start func(testing.TB, string, string, ...uint16) *Proc) (bed *Bed, a1, b1, client *BedPod) {
	t.Helper()
	bed = NewBed(t)
	a1, b1, client = bed.A.AddPod(t, "a-pod1"), bed.B.AddPod(t, "b-pod1"), bed.B.AddPod(t, "b-client")
	for _, p := range []*BedPod{a1, b1} {
		start(t, p.Name, p.Name, BackendPort)
	}
	return bed, a1, b1, client
}

func TestBedWiring(t *testing.T) {
	bed := NewBed(t)
	a1, b1 := bed.A.AddPod(t, "a-pod1"), bed.B.AddPod(t, "b-pod1")
	pods := []*BedPod{a1, b1}
	for _, p := range pods {
		StartBackend(t, p.Name, p.Name, BackendPort)
	}
	for _, n := range bed.Nodes() {
		StartBackend(t, n.NS, n.Name, BackendPort)
	}

	t.Run("the outside client reaches the nodes", func(t *testing.T) {
		for _, n := range bed.Nodes() {
			r, err := AskTCP(bed.External, netip.AddrPortFrom(n.IP, BackendPort))
			if err != nil || r.Name != n.Name || r.Source.Addr() != bed.ExternalIP {
				t.Errorf("external to %s: %+v, %v; want %s seeing %s", n, r, err, n.Name, bed.ExternalIP)
			}
		}
	})
	t.Run("the outside client reaches no pod", func(t *testing.T) {
		for _, p := range pods {
			if r, err := AskTCP(bed.External, podAddr(p)); !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("external to pod %s at %s: %+v, %v; want network unreachable", p.Name, p.IP(), r, err)
			}
		}
	})
	t.Run("a pod reaches the other node's pod and the other node directly", func(t *testing.T) {
		for _, c := range []struct {
			from *BedPod
			to   netip.AddrPort
			want string
		}{
			{a1, podAddr(b1), b1.Name}, {b1, podAddr(a1), a1.Name},
			{a1, netip.AddrPortFrom(bed.B.IP, BackendPort), bed.B.Name},
		} {
			r, err := AskTCP(c.from.Name, c.to)
			if err != nil || r.Name != c.want || r.Source.Addr() != c.from.IP() {
				t.Errorf("%s to %s: %+v, %v; want %s seeing %s", c.from.Name, c.to, r, err, c.want, c.from.IP())
			}
		}
	})
	t.Run("no namespace of the bed has a default route", func(t *testing.T) {
		for _, ns := range []string{bed.A.NS, bed.B.NS, bed.External, bed.Underlay} {
			if out := Run(t, ns, "ip", "route", "show", "default"); strings.TrimSpace(out) != "" {
				t.Errorf("%s has a default route: %s", ns, out)
			}
		}
		routes := strings.Split(strings.TrimSpace(Run(t, bed.External, "ip", "-4", "route")), "\n")
		if len(routes) != 1 || !strings.HasPrefix(routes[0], UnderlayPrefix.String()+" dev eth0 ") {
			t.Errorf("external's routes: %q; want only the underlay's %s", routes, UnderlayPrefix)
		}
	})
	t.Run("a relay carries a node's connections to the VM's namespace", func(t *testing.T) {
		// What ForwardAPI does for the apiserver, with a backend in the
		// VM's initial namespace, which no bed namespace can reach.
		StartBackend(t, Node, "vm", 18080)
		target := netip.MustParseAddrPort("127.0.0.1:18080")
		relay := Forward(t, bed.A.NS, target)
		if !relay.Addr().IsLoopback() {
			t.Errorf("the relay listens on %s, want a loopback address", relay)
		}
		for range 2 {
			r, err := AskTCP(bed.A.NS, relay)
			if err != nil || r.Name != "vm" || r.Source.Addr() != target.Addr() {
				t.Errorf("through the relay at %s in %s: %+v, %v; want vm seeing 127.0.0.1", relay, bed.A.NS, r, err)
			}
		}
		if _, err := AskTCP(bed.B.NS, relay); err == nil {
			t.Errorf("%s reached the relay of %s at %s", bed.B.NS, bed.A.NS, relay)
		}
	})
}

func TestBedClusterIPAcrossNodes(t *testing.T) {
	bed, a1, b1, client := podsOnBothNodes(t, StartBackend)
	objs := bed.NewObjects(t)
	objs.Put("web", ServiceObject("web", webVIP, httpPort))
	objs.Put("web-1", BedSlice("web-1", "web", []Port{httpPort}, a1, b1))
	vs := netip.AddrPortFrom(webVIP, uint16(httpPort.Port))
	for _, n := range bed.Nodes() {
		n.StartAgent(t, objs)
	}
	for _, n := range bed.Nodes() {
		out := n.WaitIPVS(t, VSLine("TCP", vs, "rr"), RSLine(podAddr(a1)), RSLine(podAddr(b1)))
		t.Logf("ipvsadm -Ln on %s:\n%s", n.Name, out)
	}

	got := CountTCP(client.Name, vs, 20)
	if got.ByName[a1.Name] == 0 || got.ByName[b1.Name] == 0 || got.Failed != 0 {
		t.Errorf("%s to %s: %v; want both pods and no failure", client.Name, vs, got)
	}
	for _, r := range got.Replies {
		if r.Source.Addr() != client.IP() {
			t.Errorf("%s saw the client as %s, want %s (a pod is not masqueraded)", r.Name, r.Source, client.IP())
			break
		}
	}
}

func TestBedSCTPBackend(t *testing.T) {
	bed, a1, b1, client := podsOnBothNodes(t, StartBackendSCTP)

	t.Run("direct association", func(t *testing.T) {
		c, err := DialSCTP(client.Name, podAddr(a1))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for range 3 {
			r, err := c.Ask()
			if err != nil || r.Name != a1.Name || r.Source.Addr() != client.IP() {
				t.Fatalf("SCTP %s to %s: %+v, %v; want %s seeing %s", client.Name, podAddr(a1), r, err, a1.Name, client.IP())
			}
		}
		if _, err := AskSCTP(client.Name, netip.AddrPortFrom(a1.IP(), BackendPort+1)); err == nil {
			t.Error("an SCTP association to a port nobody listens on was answered")
		}
	})
	t.Run("through a ClusterIP", func(t *testing.T) {
		objs := bed.NewObjects(t)
		objs.Put("echo", ServiceObject("echo", sctpVIP, sctpPort))
		objs.Put("echo-1", BedSlice("echo-1", "echo", []Port{sctpPort}, a1, b1))
		bed.B.StartAgent(t, objs)
		vs := netip.AddrPortFrom(sctpVIP, uint16(sctpPort.Port))
		t.Logf("ipvsadm -Ln on %s:\n%s", bed.B.Name,
			bed.B.WaitIPVS(t, VSLine("SCTP", vs, "rr"), RSLine(podAddr(a1)), RSLine(podAddr(b1))))
		seen := map[string]int{}
		for range 6 {
			r, err := AskSCTP(client.Name, vs)
			if err != nil {
				t.Fatalf("SCTP %s to %s: %v", client.Name, vs, err)
			}
			seen[r.Name]++
		}
		if seen[a1.Name] == 0 || seen[b1.Name] == 0 {
			t.Errorf("SCTP answers through %s: %v; want both pods", vs, seen)
		}
	})
}

// TestE2EBedAgentsThroughTheAPI runs the bed's agents against the host's
// apiserver (the e2e suite): each reaches it through its node's relay
// (ForwardAPI), with its own Node made through the API.
func TestE2EBedAgentsThroughTheAPI(t *testing.T) {
	api := NeedAPI(t)
	bed, a1, b1, client := podsOnBothNodes(t, StartBackend)
	for _, n := range bed.Nodes() {
		api.CreateNode(t, n)
	}
	svc := api.CreateService(t, "bed-web", httpPort)
	slice := BedSlice("bed-web-1", svc.Name, []Port{httpPort}, a1, b1)
	slices := api.Client.DiscoveryV1().EndpointSlices(Namespace)
	if _, err := slices.Create(apiCtx(t), slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice %s: %v", slice.Name, err)
	}
	t.Cleanup(func() {
		if err := slices.Delete(apiCtx(t), slice.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting EndpointSlice %s: %v", slice.Name, err)
		}
	})

	vs := netip.AddrPortFrom(ClusterIP(svc), uint16(httpPort.Port))
	var agents []*Proc
	for _, n := range bed.Nodes() {
		agents = append(agents, n.StartAPIAgent(t))
	}
	for _, n := range bed.Nodes() {
		t.Logf("ipvsadm -Ln on %s:\n%s", n.Name, n.WaitIPVS(t, VSLine("TCP", vs, "rr"), RSLine(podAddr(a1)), RSLine(podAddr(b1))))
	}
	if got := CountTCP(client.Name, vs, 10); got.ByName[a1.Name] == 0 || got.ByName[b1.Name] == 0 || got.Failed != 0 {
		t.Errorf("%s to %s: %v; want both pods and no failure", client.Name, vs, got)
	}
	for _, a := range agents {
		checkAgent(t, a)
	}
}
