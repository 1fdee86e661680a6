//go:build vmguest

package guest

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/inspect"
)

// withPods gives each endpoint of s the targetRef of its pod, as the
// EndpointSlice controller writes it.
func withPods(s *discovery.EndpointSlice, pods ...*BedPod) *discovery.EndpointSlice {
	for i, p := range pods {
		s.Endpoints[i].TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: "default", Name: p.Name}
	}
	return s
}

// kipvs runs `kube-ipvs ARGS… --debug-socket SOCK` on node n, as an operator
// would on the node (kubectl exec into the agent's pod), and returns stdout.
func kipvs(t *testing.T, n *BedNode, sock string, args ...string) string {
	t.Helper()
	return Run(t, n.NS, append(append([]string{AgentBin}, args...), "--debug-socket", sock)...)
}

func TestAgentShowAndExplain(t *testing.T) {
	bed := NewBed(t)
	aWeb, bWeb := bed.A.AddPod(t, "a-show1"), bed.B.AddPod(t, "b-show1")
	for _, p := range []*BedPod{aWeb, bWeb} {
		StartBackend(t, p.Name, p.Name, 8080)
	}
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	vip, localVIP := netip.MustParseAddr("10.96.7.10"), netip.MustParseAddr("10.96.7.20")
	local := northSouthService("local", localVIP, v1.ServiceTypeNodePort, []int32{30097}, ports...)
	local.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	objs := bed.NewObjects(t)
	objs.Put("web", ServiceObject("web", vip, ports...))
	objs.Put("web-1", withPods(BedSlice("web-1", "web", ports, aWeb, bWeb), aWeb, bWeb))
	objs.Put("local", local)
	objs.Put("local-1", withPods(BedSlice("local-1", "local", ports, bWeb), bWeb))
	sock := filepath.Join(t.TempDir(), "kube-ipvs.sock")
	agent := bed.A.StartAgent(t, objs, "--debug-socket", sock)
	nodePort := ap(bed.A.IP, 30097)
	bed.A.WaitIPVS(t, VSLine("TCP", ap(vip, 80), "rr"), RSLine(ap(aWeb.IP(), 8080)), RSLine(ap(bWeb.IP(), 8080)),
		VSLine("TCP", nodePort, "rr"), fwmLine("rr"))
	// Someone else's virtual server on the node: shown apart, left alone.
	foreign := []string{"ipvsadm", "-A", "-t", ap(bed.A.IP, 9999).String(), "-s", "wlc"}
	Run(t, bed.A.NS, foreign...)
	t.Cleanup(func() { _, _ = Exec(bed.A.NS, "ipvsadm", "-D", "-t", ap(bed.A.IP, 9999).String()) })

	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("debug socket %s: %v %v, want a socket of mode 0600", sock, fi, err)
	}

	// Traffic through the ClusterIP from a pod on node-a, so the counters move.
	aClient := bed.A.AddPod(t, "a-showc")
	mustServe(t, aClient.Name, ap(vip, 80), 10, aWeb, bWeb)
	// As explain says below: the Local NodePort refuses outside clients on a
	// node without a local endpoint, and short-circuits the node's pods.
	mustNotServe(t, bed.External, nodePort, "node-a has no local endpoint of a Local Service")
	mustServe(t, aClient.Name, nodePort, 3, bWeb)

	var show inspect.Show
	if err := json.Unmarshal([]byte(kipvs(t, bed.A, sock, "show", "-o", "json")), &show); err != nil {
		t.Fatalf("show -o json: %v", err)
	}
	byKey := map[string]inspect.VirtualServer{}
	for _, vs := range show.VirtualServers {
		byKey[vs.Key] = vs
	}
	if show.Node != "node-a" || !show.Synced || !show.Stats || show.KernelError != "" {
		t.Errorf("show = node %q synced %v stats %v error %q", show.Node, show.Synced, show.Stats, show.KernelError)
	}
	web, ok := byKey["-t 10.96.7.10:80"]
	if !ok || web.Kind != inspect.KindClusterIP || web.Service != "default/web" || web.Port != "http" || !web.InKernel || len(web.RealServers) != 2 {
		t.Fatalf("web's virtual server = %+v", web)
	}
	conns := 0
	for _, rs := range web.RealServers {
		want := map[string]string{ap(aWeb.IP(), 8080).String(): "default/a-show1 node-a", ap(bWeb.IP(), 8080).String(): "default/b-show1 node-b"}[rs.Address]
		if rs.Pod+" "+rs.Node != want || rs.Weight != 1 || !rs.Ready || !rs.InKernel || rs.Stats == nil {
			t.Errorf("web real server %+v, want %s of weight 1", rs, want)
			continue
		}
		conns += rs.ActiveConns + rs.InactiveConns + int(rs.Stats.Conns)
	}
	if conns == 0 {
		t.Errorf("no connection counted on web's real servers after 10 requests: %+v", web.RealServers)
	}
	np := byKey["-t "+nodePort.String()]
	if np.Kind != inspect.KindNodePort || np.Service != "default/local" || np.TrafficPolicy != "Local" || len(np.RealServers) != 0 || np.ShortCircuitMark == 0 {
		t.Errorf("the Local NodePort = %+v, want no real server and a short circuit", np)
	}
	sc, ok := byKey["-f "+strconv.FormatUint(uint64(np.ShortCircuitMark), 10)]
	if !ok || sc.Kind != inspect.KindShortCircuit || len(sc.RealServers) != 1 || sc.RealServers[0].Pod != "default/b-show1" {
		t.Errorf("the short circuit = %+v", sc)
	}
	if len(show.Foreign) != 1 || show.Foreign[0].Key != "-t "+ap(bed.A.IP, 9999).String() {
		t.Errorf("foreign = %+v", show.Foreign)
	}

	// Not a Service port on a ClusterIP: rejected (kubernetes#72236).
	var ex inspect.Explanation
	if err := json.Unmarshal([]byte(kipvs(t, bed.A, sock, "explain", "-o", "json", "10.96.7.10:81")), &ex); err != nil {
		t.Fatalf("explain -o json: %v", err)
	}
	for _, p := range ex.Paths {
		if p.Verdict != inspect.VerdictRejected || !strings.Contains(p.Summary, "kubernetes#72236") {
			t.Errorf("10.96.7.10:81 from %s: %s: %s", p.From, p.Verdict, p.Summary)
		}
	}
	if r, err := AskTCP(aClient.Name, ap(vip, 81)); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("10.96.7.10:81 from a pod: %v %v; want refused, as explain says", r, err)
	}

	// The Local NodePort from outside: no local endpoint.
	ex = inspect.Explanation{}
	if err := json.Unmarshal([]byte(kipvs(t, bed.A, sock, "explain", nodePort.String(), "-o", "json")), &ex); err != nil {
		t.Fatalf("explain -o json: %v", err)
	}
	for _, p := range ex.Paths {
		switch p.From {
		case inspect.FromOutside:
			if p.Verdict != inspect.VerdictRefused || !strings.Contains(p.Choice, "has none here") || !strings.Contains(p.Choice, "default/b-show1 on node-b") {
				t.Errorf("NodePort from outside: %s: %s; %s", p.Verdict, p.Summary, p.Choice)
			}
		case inspect.FromPod, inspect.FromNode:
			if p.Verdict != inspect.VerdictServed || !strings.HasPrefix(p.VirtualServer, "-f ") {
				t.Errorf("NodePort from %s: %s: %s; want the short circuit", p.From, p.Verdict, p.Summary)
			}
		}
	}

	// What an operator reads, for the README.
	t.Logf("kube-ipvs show:\n%s", kipvs(t, bed.A, sock, "show"))
	t.Logf("kube-ipvs explain %s:\n%s", nodePort, kipvs(t, bed.A, sock, "explain", nodePort.String()))
	t.Logf("kube-ipvs explain 10.96.7.10:81:\n%s", kipvs(t, bed.A, sock, "explain", "10.96.7.10:81"))
	t.Logf("kube-ipvs explain 10.96.7.10:80 --from %s:\n%s", aWeb.IP(), kipvs(t, bed.A, sock, "explain", "10.96.7.10:80", "--from", aWeb.IP().String()))
	t.Logf("kube-ipvs show -o json:\n%s", kipvs(t, bed.A, sock, "show", "-o", "json"))

	// The socket goes with the agent.
	agent.Stop()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the debug socket is left after the agent stopped: %v", err)
	}
	if out, err := Exec(bed.A.NS, AgentBin, "show", "--debug-socket", sock); err == nil || !strings.Contains(out, "no kube-ipvs agent answers") {
		t.Errorf("show without an agent: %v\n%s", err, out)
	}
}
