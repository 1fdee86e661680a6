//go:build vmguest

package guest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// North-south Services on the two-node bed (bed.go): NodePorts, load
// balancers, external IPs and the traffic policies, with an outside client
// on the underlay that knows only the nodes' addresses.

// northSouthService is ServiceObject of type t with a NodePort per port.
func northSouthService(name string, vip netip.Addr, t v1.ServiceType, nodePorts []int32, ports ...Port) *v1.Service {
	s := ServiceObject(name, vip, ports...)
	s.Spec.Type = t
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = nodePorts[i]
	}
	if t != v1.ServiceTypeClusterIP {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	}
	return s
}

func withIngress(s *v1.Service, ips ...string) *v1.Service {
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip, IPMode: ptr(v1.LoadBalancerIPModeVIP)})
	}
	return s
}

func ap(addr netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(addr, port) }

// mustServe asks addr n times over TCP from ns and fails unless every
// request was answered and the answers came from exactly the pods wanted.
func mustServe(t *testing.T, ns string, addr netip.AddrPort, n int, want ...*BedPod) Tally {
	t.Helper()
	tally := CountTCP(ns, addr, n)
	if tally.Failed > 0 || len(tally.ByName) != len(want) {
		t.Fatalf("%s from %s: %s; want answers from %d pods", addr, ns, tally, len(want))
	}
	for _, p := range want {
		if tally.ByName[p.Name] == 0 {
			t.Fatalf("%s from %s: %s; %s never answered", addr, ns, tally, p.Name)
		}
	}
	return tally
}

// mustNotServe checks that a TCP request from ns to addr gets no answer.
func mustNotServe(t *testing.T, ns string, addr netip.AddrPort, why string) {
	t.Helper()
	if r, err := AskTCP(ns, addr); err == nil {
		t.Fatalf("%s from %s answered by %s (seen from %s); want no answer: %s", addr, ns, r.Name, r.Source, why)
	}
}

func TestNodePortOnTwoNodes(t *testing.T) {
	bed := NewBed(t)
	aWeb, bWeb := bed.A.AddPod(t, "a-web1"), bed.B.AddPod(t, "b-web1")
	for _, p := range []*BedPod{aWeb, bWeb} {
		StartBackend(t, p.Name, p.Name, 8080)
	}
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}, {Name: "dns", Protocol: v1.ProtocolUDP, Port: 80, Target: 8080}}
	objs := bed.NewObjects(t)
	objs.Put("web", northSouthService("web", netip.MustParseAddr("10.96.5.10"), v1.ServiceTypeNodePort, []int32{30080, 30080}, ports...))
	objs.Put("web-1", BedSlice("web-1", "web", ports, aWeb, bWeb))
	// The same pods behind a NodePort with ClientIP session affinity.
	sticky := northSouthService("sticky", netip.MustParseAddr("10.96.5.20"), v1.ServiceTypeNodePort, []int32{30081}, ports[0])
	sticky.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	sticky.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}}
	objs.Put("sticky", sticky)
	objs.Put("sticky-1", BedSlice("sticky-1", "sticky", ports[:1], aWeb, bWeb))
	for _, n := range bed.Nodes() {
		n.StartAgent(t, objs)
	}
	for _, n := range bed.Nodes() {
		sp := ap(n.IP, 30081)
		n.WaitIPVS(t, VSLine("TCP", sp, "rr")+` persistent 600`)
		if tally := CountTCP(bed.External, sp, 10); tally.Failed > 0 || len(tally.ByName) != 1 {
			t.Errorf("%s with ClientIP affinity from one client: %s; want one pod, every time", sp, tally)
		}
	}
	for _, n := range bed.Nodes() {
		np := ap(n.IP, 30080)
		n.WaitIPVS(t, VSLine("TCP", np, "rr"), VSLine("UDP", np, "rr"), RSLine(ap(aWeb.IP(), 8080)), RSLine(ap(bWeb.IP(), 8080)))
		tally := mustServe(t, bed.External, np, 20, aWeb, bWeb)
		for _, r := range tally.Replies {
			if r.Source.Addr() == bed.ExternalIP {
				t.Errorf("%s: a backend saw the client's own address; externalTrafficPolicy Cluster must masquerade", np)
			}
		}
		udp := CountUDP(bed.External, np, 10)
		if udp.Failed > 0 || len(udp.ByName) != 2 {
			t.Errorf("UDP %s from outside: %s; want both pods", np, udp)
		}
		// Never on loopback (no route_localnet; CVE-2020-8558).
		mustNotServe(t, n.NS, ap(netip.MustParseAddr("127.0.0.1"), 30080), "NodePorts are never served on 127.0.0.1")
		if out := Run(t, n.NS, "sysctl", "-n", "net.ipv4.conf.all.route_localnet"); strings.TrimSpace(out) != "0" {
			t.Errorf("%s: route_localnet = %s", n.Name, out)
		}
	}
	// No virtual server on 127.0.0.1, and the NodePort's own address is not bound on kipvs0.
	if out := bed.A.IPVS(t); strings.Contains(out, "127.0.0.1:") {
		t.Errorf("a virtual server on loopback:\n%s", out)
	}
	if out := Run(t, bed.A.NS, "ip", "-o", "addr", "show", "dev", "kipvs0"); strings.Contains(out, bed.A.IP.String()) {
		t.Errorf("the node address is bound on kipvs0: %s", out)
	}
	t.Logf("node-a ipvsadm -Ln:\n%s", bed.A.IPVS(t))
}

func TestNodePortAddressesFollowTheNode(t *testing.T) {
	bed := NewBed(t)
	aWeb := bed.A.AddPod(t, "a-web2")
	StartBackend(t, aWeb.Name, aWeb.Name, 8080)
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	objs := bed.NewObjects(t)
	objs.Put("web", northSouthService("web", netip.MustParseAddr("10.96.5.11"), v1.ServiceTypeNodePort, []int32{30082}, ports...))
	objs.Put("web-1", BedSlice("web-1", "web", ports, aWeb))
	bed.A.StartAgent(t, objs, "--nodeport-addresses", UnderlayPrefix.String())
	bed.A.WaitIPVS(t, VSLine("TCP", ap(bed.A.IP, 30082), "rr"))

	// A second address in the configured range appears on eth0: it gets
	// the NodePort without a restart, and loses it when it goes.
	extra := netip.MustParseAddr("192.168.60.21")
	Run(t, bed.A.NS, "ip", "addr", "add", extra.String()+"/24", "dev", "eth0")
	start := time.Now()
	bed.A.WaitIPVS(t, VSLine("TCP", ap(extra, 30082), "rr"), RSLine(ap(aWeb.IP(), 8080)))
	t.Logf("NodePort on the new address after %v", time.Since(start).Round(time.Millisecond))
	mustServe(t, bed.External, ap(extra, 30082), 3, aWeb)
	Run(t, bed.A.NS, "ip", "addr", "del", extra.String()+"/24", "dev", "eth0")
	bed.A.WaitIPVS(t, "!"+VSLine("TCP", ap(extra, 30082), "rr"), VSLine("TCP", ap(bed.A.IP, 30082), "rr"))
}

// healthCheck is GET http://addr/ from namespace ns: the status, the
// decoded body and the headers. The connection is opened in ns and the
// request written on it by hand: net/http's Transport would dial from
// another goroutine, outside the namespace.
func healthCheck(t *testing.T, ns string, addr netip.AddrPort) (int, map[string]any, http.Header) {
	t.Helper()
	return httpGet(t, ns, addr, "/")
}

// httpGet is GET http://addr/path from namespace ns, as healthCheck, with
// the JSON body decoded.
func httpGet(t *testing.T, ns string, addr netip.AddrPort, path string) (int, map[string]any, http.Header) {
	t.Helper()
	code, raw, header := HTTPGet(t, ns, addr, path)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("health check %s: body %q: %v", addr, raw, err)
	}
	return code, body, header
}

func TestExternalTrafficPolicyLocal(t *testing.T) {
	bed := NewBed(t)
	aWeb := bed.A.AddPod(t, "a-web3")
	bClient := bed.B.AddPod(t, "b-cli3")
	StartBackend(t, aWeb.Name, aWeb.Name, 8080)
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	lbIP := netip.MustParseAddr("203.0.113.10")
	vip := netip.MustParseAddr("10.96.5.12")
	svc := withIngress(northSouthService("lb", vip, v1.ServiceTypeLoadBalancer, []int32{30083}, ports...), lbIP.String())
	svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = 32100
	objs := bed.NewObjects(t)
	objs.Put("lb", svc)
	objs.Put("lb-1", BedSlice("lb-1", "lb", ports, aWeb))
	for _, n := range bed.Nodes() {
		n.StartAgent(t, objs)
	}
	bed.A.WaitIPVS(t, VSLine("TCP", ap(bed.A.IP, 30083), "rr"), RSLine(ap(aWeb.IP(), 8080)))
	// node-b has the virtual servers, without a real server: it refuses.
	bed.B.WaitIPVS(t, VSLine("TCP", ap(bed.B.IP, 30083), "rr"), VSLine("TCP", ap(lbIP, 80), "rr"))
	if out := bed.B.IPVS(t); strings.Contains(out, ":30083 rr\n  -> ") {
		t.Errorf("node-b has a real server for a Local NodePort without a local endpoint:\n%s", out)
	}

	// The health-check node port, as kube-proxy answers it.
	code, body, hdr := healthCheck(t, bed.External, ap(bed.A.IP, 32100))
	if code != http.StatusOK || body["localEndpoints"] != float64(1) || body["serviceProxyHealthy"] != true ||
		fmt.Sprint(body["service"]) != "map[name:lb namespace:default]" {
		t.Errorf("node-a health check: %d %v", code, body)
	}
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("node-a health check headers: %v", hdr)
	}
	if code, body, _ := healthCheck(t, bed.External, ap(bed.B.IP, 32100)); code != http.StatusServiceUnavailable || body["localEndpoints"] != float64(0) {
		t.Errorf("node-b health check: %d %v", code, body)
	}

	// node-a serves with the client's address kept; node-b drops.
	tally := mustServe(t, bed.External, ap(bed.A.IP, 30083), 5, aWeb)
	for _, r := range tally.Replies {
		if r.Source.Addr() != bed.ExternalIP {
			t.Errorf("the backend saw %s, want the client's own address %s", r.Source, bed.ExternalIP)
		}
	}
	mustNotServe(t, bed.External, ap(bed.B.IP, 30083), "node-b has no local endpoint of a Local Service")
	// Nothing on node-b answers from a host process either: start one on the NodePort.
	StartBackend(t, bed.B.NS, "host-b", 30083)
	mustNotServe(t, bed.External, ap(bed.B.IP, 30083), "IPVS owns the NodePort; a host process must not answer")

	// The load-balancer IP, routed to node-a by the "load balancer": the source is kept too.
	RouteVia(t, bed.External, netip.PrefixFrom(lbIP, 32), bed.A.IP)
	tally = mustServe(t, bed.External, ap(lbIP, 80), 5, aWeb)
	if src := tally.Replies[0].Source.Addr(); src != bed.ExternalIP {
		t.Errorf("through the load-balancer IP the backend saw %s, want %s", src, bed.ExternalIP)
	}
	// The ClusterIP of the same Service still reaches every endpoint, from node-b's pod.
	mustServe(t, bClient.Name, ap(vip, 80), 3, aWeb)
}

func TestLoadBalancerSourceRanges(t *testing.T) {
	bed := NewBed(t)
	aWeb := bed.A.AddPod(t, "a-web4")
	aClient := bed.A.AddPod(t, "a-cli4")
	StartBackend(t, aWeb.Name, aWeb.Name, 8080)
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	lbIP := netip.MustParseAddr("203.0.113.20")
	openIP := netip.MustParseAddr("203.0.113.21")
	svc := func(ranges ...string) *v1.Service {
		s := withIngress(northSouthService("lb", netip.MustParseAddr("10.96.5.13"), v1.ServiceTypeLoadBalancer, []int32{30084}, ports...), lbIP.String())
		s.Spec.LoadBalancerSourceRanges = ranges
		return s
	}
	objs := bed.NewObjects(t)
	objs.Put("lb", svc("10.99.0.0/16"))
	objs.Put("lb-1", BedSlice("lb-1", "lb", ports, aWeb))
	objs.Put("open", withIngress(northSouthService("open", netip.MustParseAddr("10.96.5.14"), v1.ServiceTypeLoadBalancer, []int32{30085}, ports...), openIP.String()))
	objs.Put("open-1", BedSlice("open-1", "open", ports, aWeb))
	bed.A.StartAgent(t, objs)
	RouteVia(t, bed.External, netip.MustParsePrefix("203.0.113.0/24"), bed.A.IP)
	bed.A.WaitIPVS(t, VSLine("TCP", ap(lbIP, 80), "rr"), VSLine("TCP", ap(openIP, 80), "rr"))

	// A load-balancer IP without ranges: served from outside, from a pod
	// on the node (by the Service's endpoints), from the node itself.
	mustServe(t, bed.External, ap(openIP, 80), 3, aWeb)
	mustServe(t, aClient.Name, ap(openIP, 80), 3, aWeb)
	mustServe(t, bed.A.NS, ap(openIP, 80), 3, aWeb)

	// Ranges that hold neither the client nor the node: both dropped.
	mustNotServe(t, bed.External, ap(lbIP, 80), "the client is outside loadBalancerSourceRanges")
	mustNotServe(t, bed.A.NS, ap(lbIP, 80), "the node's address is outside loadBalancerSourceRanges")

	// The client's address only: it is served, the node still is not.
	objs.Put("lb", svc(bed.ExternalIP.String()+"/32"))
	waitFor(t, 15*time.Second, "the client let through", func() bool { _, err := AskTCP(bed.External, ap(lbIP, 80)); return err == nil })
	mustServe(t, bed.External, ap(lbIP, 80), 3, aWeb)
	mustNotServe(t, bed.A.NS, ap(lbIP, 80), "the node's address is still outside loadBalancerSourceRanges")

	// The whole underlay: the node reaches its own load-balancer IP too.
	objs.Put("lb", svc(UnderlayPrefix.String()))
	waitFor(t, 15*time.Second, "the node let through", func() bool { _, err := AskTCP(bed.A.NS, ap(lbIP, 80)); return err == nil })
	mustServe(t, bed.A.NS, ap(lbIP, 80), 3, aWeb)
	mustServe(t, bed.External, ap(lbIP, 80), 3, aWeb)
	t.Logf("ipset list KIPVS-LB-SOURCES:\n%s", Run(t, bed.A.NS, "ipset", "list", "KIPVS-LB-SOURCES"))
}

func TestExternalIPsInternalPolicyAndSCTP(t *testing.T) {
	bed := NewBed(t)
	aWeb, bWeb := bed.A.AddPod(t, "a-web5"), bed.B.AddPod(t, "b-web5")
	aClient, bClient := bed.A.AddPod(t, "a-cli5"), bed.B.AddPod(t, "b-cli5")
	for _, p := range []*BedPod{aWeb, bWeb} {
		StartBackend(t, p.Name, p.Name, 8080)
		StartBackendSCTP(t, p.Name, p.Name+"-sctp", 9000)
	}
	web := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	extIP := netip.MustParseAddr("198.51.100.5")
	ext := ServiceObject("ext", netip.MustParseAddr("10.96.5.15"), web...)
	ext.Spec.ExternalIPs = []string{extIP.String()}
	ext.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	local := ServiceObject("local", netip.MustParseAddr("10.96.5.16"), web...)
	local.Spec.InternalTrafficPolicy = ptr(v1.ServiceInternalTrafficPolicyLocal)
	sctp := []Port{{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 9000, Target: 9000}}
	sig := northSouthService("sig", netip.MustParseAddr("10.96.5.17"), v1.ServiceTypeNodePort, []int32{30090}, sctp...)
	objs := bed.NewObjects(t)
	objs.Put("ext", ext)
	objs.Put("ext-1", BedSlice("ext-1", "ext", web, aWeb, bWeb))
	objs.Put("local", local)
	objs.Put("local-1", BedSlice("local-1", "local", web, aWeb))
	objs.Put("sig", sig)
	objs.Put("sig-1", BedSlice("sig-1", "sig", sctp, aWeb, bWeb))
	for _, n := range bed.Nodes() {
		n.StartAgent(t, objs, "--ipvs-strict-arp")
	}
	bed.B.WaitIPVS(t, VSLine("TCP", ap(extIP, 80), "rr"), VSLine("SCTP", ap(bed.B.IP, 30090), "rr"))
	bed.A.WaitIPVS(t, VSLine("TCP", ap(extIP, 80), "rr"), VSLine("SCTP", ap(bed.A.IP, 30090), "rr"))

	// The external IP, routed to node-b: masqueraded, both pods.
	RouteVia(t, bed.External, netip.PrefixFrom(extIP, 32), bed.B.IP)
	tally := mustServe(t, bed.External, ap(extIP, 80), 20, aWeb, bWeb)
	for _, r := range tally.Replies {
		if r.Source.Addr() == bed.ExternalIP {
			t.Errorf("an external IP's backend saw the client's own address; it must be masqueraded")
		}
	}
	if !VIPBoundIn(t, bed.B.NS, extIP) {
		t.Errorf("the external IP is not bound on node-b's kipvs0")
	}

	// internalTrafficPolicy Local: node-a's pod reaches its local endpoint;
	// node-b has none and drops.
	mustServe(t, aClient.Name, ap(netip.MustParseAddr("10.96.5.16"), 80), 5, aWeb)
	mustNotServe(t, bClient.Name, ap(netip.MustParseAddr("10.96.5.16"), 80), "node-b has no local endpoint of an internalTrafficPolicy Local Service")

	// SCTP: real associations through a NodePort, from outside, to both nodes.
	for _, n := range bed.Nodes() {
		names := map[string]bool{}
		for range 8 {
			r, err := AskSCTP(bed.External, ap(n.IP, 30090))
			if err != nil {
				t.Fatalf("SCTP %s:30090 from outside: %v", n.Name, err)
			}
			names[r.Name] = true
		}
		if len(names) == 0 {
			t.Errorf("SCTP through %s: no answer", n.Name)
		}
		t.Logf("SCTP through %s answered by %v", n.Name, names)
	}

	// strictARP: the VIPs on kipvs0 are neither answered nor announced over ARP.
	for _, n := range bed.Nodes() {
		for key, want := range map[string]string{"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"} {
			if got := strings.TrimSpace(Run(t, n.NS, "sysctl", "-n", key)); got != want {
				t.Errorf("%s: %s = %s, want %s", n.Name, key, got, want)
			}
		}
	}
}

// VIPBoundIn reports whether addr is on kipvs0 in namespace ns.
func VIPBoundIn(t testing.TB, ns string, addr netip.Addr) bool {
	out, _ := Exec(ns, "ip", "-o", "addr", "show", "dev", "kipvs0")
	return strings.Contains(out, " "+addr.String()+"/")
}

// TestE2ELoadBalancerLocalThroughTheAPI is TestExternalTrafficPolicyLocal
// against the real apiserver, with two Node objects: the apiserver
// allocates the NodePort and the health-check node port, a "load-balancer
// controller" writes the ingress IP into the status, and both agents read
// everything through their informers.
func TestE2ELoadBalancerLocalThroughTheAPI(t *testing.T) {
	api := NeedAPI(t)
	bed, a1, _, _ := podsOnBothNodes(t, StartBackend)
	for _, n := range bed.Nodes() {
		api.CreateNode(t, n)
	}
	svcs := api.Client.CoreV1().Services(Namespace)
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-lb", Namespace: Namespace},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyLocal,
			Ports: []v1.ServicePort{{Name: httpPort.Name, Protocol: v1.ProtocolTCP, Port: httpPort.Port, TargetPort: intstr.FromInt32(httpPort.Target)}},
		},
	}
	created, err := svcs.Create(apiCtx(t), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service: %v", err)
	}
	t.Cleanup(func() {
		if err := svcs.Delete(apiCtx(t), svc.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting Service: %v", err)
		}
	})
	nodePort, hcnp := uint16(created.Spec.Ports[0].NodePort), uint16(created.Spec.HealthCheckNodePort)
	if nodePort == 0 || hcnp == 0 {
		t.Fatalf("the apiserver allocated nodePort %d, healthCheckNodePort %d", nodePort, hcnp)
	}
	lbIP := netip.MustParseAddr("203.0.113.30")
	created.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: lbIP.String(), IPMode: ptr(v1.LoadBalancerIPModeVIP)}}
	if _, err := svcs.UpdateStatus(apiCtx(t), created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing the load-balancer status: %v", err)
	}
	slice := BedSlice("e2e-lb-1", svc.Name, []Port{httpPort}, a1)
	slices := api.Client.DiscoveryV1().EndpointSlices(Namespace)
	if _, err := slices.Create(apiCtx(t), slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice: %v", err)
	}
	t.Cleanup(func() {
		if err := slices.Delete(apiCtx(t), slice.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting EndpointSlice: %v", err)
		}
	})
	for _, n := range bed.Nodes() {
		n.StartAPIAgent(t)
	}
	bed.A.WaitIPVS(t, VSLine("TCP", ap(bed.A.IP, nodePort), "rr"), VSLine("TCP", ap(lbIP, uint16(httpPort.Port)), "rr"), RSLine(podAddr(a1)))
	bed.B.WaitIPVS(t, VSLine("TCP", ap(bed.B.IP, nodePort), "rr"))

	waitFor(t, 20*time.Second, "node-a's health-check port", func() bool {
		_, err := AskTCP(bed.External, ap(bed.A.IP, hcnp))
		return err != nil && !strings.Contains(err.Error(), "refused") || err == nil
	})
	if code, body, _ := healthCheck(t, bed.External, ap(bed.A.IP, hcnp)); code != http.StatusOK || body["localEndpoints"] != float64(1) {
		t.Errorf("node-a health check: %d %v", code, body)
	}
	if code, body, _ := healthCheck(t, bed.External, ap(bed.B.IP, hcnp)); code != http.StatusServiceUnavailable || body["localEndpoints"] != float64(0) {
		t.Errorf("node-b health check: %d %v", code, body)
	}
	tally := mustServe(t, bed.External, ap(bed.A.IP, nodePort), 5, a1)
	if src := tally.Replies[0].Source.Addr(); src != bed.ExternalIP {
		t.Errorf("the backend saw %s, want the client's %s", src, bed.ExternalIP)
	}
	mustNotServe(t, bed.External, ap(bed.B.IP, nodePort), "node-b has no local endpoint")
	RouteVia(t, bed.External, netip.PrefixFrom(lbIP, 32), bed.A.IP)
	mustServe(t, bed.External, ap(lbIP, uint16(httpPort.Port)), 3, a1)
}
