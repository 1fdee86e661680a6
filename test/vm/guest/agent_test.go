//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// The agent tests run the real kube-ipvs binary on the VM's kernel, fed
// Services and EndpointSlices from files, and check what users see: where
// requests go, what backends see as the source, and `ipvsadm -Ln`.

var (
	webVIP   = netip.MustParseAddr("10.96.0.10")
	dnsVIP   = netip.MustParseAddr("10.96.0.53")
	selfVIP  = netip.MustParseAddr("10.96.0.30")
	outsider = netip.MustParseAddr("192.168.100.2") // a client outside the cluster CIDR
	httpPort = Port{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: backendPort}
	dnsPort  = Port{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, Target: backendPort}
)

// agentBed is a node with three pods, a client outside the cluster and an
// objects directory.
type agentBed struct {
	pods   []*Pod
	client *Pod
	objs   *Objects
}

func newAgentBed(t *testing.T) *agentBed {
	CleanupAgent(t)
	b := &agentBed{pods: startPods(t, 3), client: AddPod(t, "client", outsider), objs: NewObjects(t)}
	return b
}

// web publishes the web Service on webVIP:80 with the given pods.
func (b *agentBed) web(pods ...*Pod) {
	b.objs.Put("web", ServiceObject("web", webVIP, httpPort))
	b.objs.Put("web-1", SliceObject("web-1", "web", []Port{httpPort}, pods...))
}

func rs(p *Pod) netip.AddrPort { return netip.AddrPortFrom(p.IP(), backendPort) }

func webVS() netip.AddrPort { return netip.AddrPortFrom(webVIP, 80) }

func TestAgentTCPClusterIPSpreadsEvenly(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	StartAgent(t, b.objs)
	out := WaitIPVS(t, VSLine("TCP", webVS(), "rr"), RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))
	t.Logf("ipvsadm -Ln:\n%s", out)
	if !VIPBound(t, webVIP) {
		t.Errorf("%s is not bound on kipvs0", webVIP)
	}
	wantEven(t, CountTCP("client", webVS(), 300), b.pods, 100)
}

func TestAgentUDPClusterIPAnswersFromEveryPod(t *testing.T) {
	b := newAgentBed(t)
	vs := netip.AddrPortFrom(dnsVIP, 53)
	b.objs.Put("dns", ServiceObject("dns", dnsVIP, dnsPort))
	b.objs.Put("dns-1", SliceObject("dns-1", "dns", []Port{dnsPort}, b.pods...))
	StartAgent(t, b.objs)
	WaitIPVS(t, VSLine("UDP", vs, "rr"), RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))
	got := CountUDP("client", vs, 30)
	for _, p := range b.pods {
		if got.ByName[p.Name] == 0 || got.Failed != 0 {
			t.Errorf("UDP answers %v: want every pod and no failure", got)
			break
		}
	}
}

func TestAgentFollowsEndpointAndServiceChanges(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])))

	b.web(b.pods[0], b.pods[1])
	WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), "!"+RSLine(rs(b.pods[2])))
	wantEven(t, CountTCP("client", webVS(), 100), b.pods[:2], 50)

	b.web(b.pods...)
	WaitIPVS(t, RSLine(rs(b.pods[2])))
	wantEven(t, CountTCP("client", webVS(), 300), b.pods, 100)

	b.objs.Delete("web")
	b.objs.Delete("web-1")
	WaitIPVS(t, "!"+regexp.QuoteMeta(webVS().String()))
	deadline := time.Now().Add(5 * time.Second)
	for VIPBound(t, webVIP) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound after its Service was deleted", webVIP)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// conns is the cumulative connection count of a virtual server in
// `ipvsadm -Ln --stats`; a virtual server deleted and recreated starts
// again from zero.
func conns(t *testing.T, vs netip.AddrPort) int {
	out := Run(t, Node, "ipvsadm", "-Ln", "--stats", "-t", vs.String())
	m := regexp.MustCompile(`(?m)^TCP\s+` + regexp.QuoteMeta(vs.String()) + `\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no stats for %s:\n%s", vs, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestAgentRestartKeepsConnectionsAndVirtualServers(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	// A foreign virtual server made by hand, on an address kube-ipvs does not own.
	foreign := "192.168.50.1:443"
	Run(t, Node, "ipvsadm", "-A", "-t", foreign, "-s", "wlc")
	Run(t, Node, "ipvsadm", "-a", "-t", foreign, "-r", rs(b.pods[0]).String(), "-m", "-w", "3")
	t.Cleanup(func() { _, _ = Exec(Node, "ipvsadm", "-D", "-t", foreign) })

	agent := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])))
	conn, err := DialTCP("client", webVS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before, err := conn.Ask()
	if err != nil {
		t.Fatal(err)
	}
	CountTCP("client", webVS(), 30)
	connsBefore := conns(t, webVS())
	time.Sleep(3 * time.Second) // a full resync or two
	agent.Stop()

	restarted := StartAgent(t, b.objs)
	// Its first, full sync (about 5 s of iptables runs under TCG), then
	// two periodic ones.
	if err := restarted.WaitOutput(`synced	{"full": true`, 60*time.Second); err != nil {
		t.Fatalf("the restarted agent never synced: %v", err)
	}
	time.Sleep(5 * time.Second)
	after, err := conn.Ask()
	if err != nil || after.Name != before.Name {
		t.Errorf("connection across the restart: %+v, %v; before it went to %s", after, err, before.Name)
	}
	if n := conns(t, webVS()); n < connsBefore {
		t.Errorf("virtual server was recreated: %d connections counted, %d before the restart", n, connsBefore)
	}
	log := restarted.Output()
	for _, bad := range []string{"ipvsadm -D", "ipvsadm -A", "ipvsadm -d", "ip addr del", "rules changed"} {
		if strings.Contains(log, bad) {
			t.Errorf("restarted agent ran %q:\n%s", bad, log)
		}
	}
	if out := IPVS(t); !regexp.MustCompile(`(?m)^TCP\s+`+regexp.QuoteMeta(foreign)+` wlc`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^\s+-> `+regexp.QuoteMeta(rs(b.pods[0]).String())+`\s+Masq\s+3\s`).MatchString(out) {
		t.Errorf("foreign virtual server %s did not survive syncs and a restart:\n%s", foreign, out)
	}
}

func TestAgentMasquerade(t *testing.T) {
	b := newAgentBed(t)
	inside := AddPod(t, "inpod", netip.MustParseAddr("10.244.2.50"))
	b.web(b.pods...)
	b.objs.Put("self", ServiceObject("self", selfVIP, httpPort))
	b.objs.Put("self-1", SliceObject("self-1", "self", []Port{httpPort}, b.pods[0]))
	StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])), VSLine("TCP", netip.AddrPortFrom(selfVIP, 80), "rr"))

	t.Run("client outside the cluster CIDR is masqueraded", func(t *testing.T) {
		got := CountTCP("client", webVS(), 30)
		for _, r := range got.Replies {
			if r.Source.Addr() == outsider || r.Source.Addr() != Gateway(b.pods[0].IP()) {
				t.Fatalf("%s saw the client as %s, want the node's %s", r.Name, r.Source, Gateway(b.pods[0].IP()))
			}
		}
		if got.Failed != 0 || len(got.Replies) != 30 {
			t.Errorf("answers: %v", got)
		}
	})
	t.Run("pod inside the cluster CIDR keeps its address", func(t *testing.T) {
		got := CountTCP("inpod", webVS(), 30)
		wantSource(t, got, inside.IP())
		if got.Failed != 0 || len(got.Replies) != 30 {
			t.Errorf("answers: %v", got)
		}
	})
	t.Run("hairpin: a pod reaches itself through its Service", func(t *testing.T) {
		r, err := AskTCP(b.pods[0].Name, netip.AddrPortFrom(selfVIP, 80))
		if err != nil || r.Name != b.pods[0].Name {
			t.Fatalf("hairpin: %+v, %v", r, err)
		}
		if r.Source.Addr() == b.pods[0].IP() {
			t.Errorf("hairpin reply came from the pod's own address %s: not masqueraded", r.Source)
		}
	})
}

func TestAgentHostPortsAreNotReachableOnClusterIPs(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	StartBackend(t, Node, "hostproc", 9999) // a host process on every address, port 9999
	StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])))

	nodeAddr := netip.AddrPortFrom(Gateway(outsider), 9999)
	if r, err := AskTCP("client", nodeAddr); err != nil || r.Name != "hostproc" {
		t.Fatalf("the host process is not reachable on the node's own address %s: %+v, %v", nodeAddr, r, err)
	}
	if r, err := AskTCP("client", netip.AddrPortFrom(webVIP, 9999)); err == nil {
		t.Errorf("host process answered on ClusterIP %s:9999 (kubernetes#72236): %+v", webVIP, r)
	}
	if got := CountTCP("client", webVS(), 3); got.Failed != 0 {
		t.Errorf("the Service port stopped working: %v", got)
	}
	// Without kube-ipvs' filter the host process does answer on the VIP, so
	// the check above is not vacuous; the next full resync restores the rule.
	// (A full resync may restore the chain between the flush and the
	// request; then flush again.)
	var r Reply
	var err error
	for range 3 {
		Run(t, Node, "iptables", "-F", "KIPVS-FILTER")
		if r, err = AskTCP("client", netip.AddrPortFrom(webVIP, 9999)); err == nil && r.Name == "hostproc" {
			break
		}
	}
	if err != nil || r.Name != "hostproc" {
		t.Errorf("with the filter flushed, expected the host process on the VIP: %+v, %v", r, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := AskTCP("client", netip.AddrPortFrom(webVIP, 9999)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("full resync did not restore the filter:\n%s", Run(t, Node, "iptables-save"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kernelState is what dry-run must leave untouched, as an operator reads it
// (IPv6 addresses are left out: link-local ones change state by themselves).
func kernelState(t *testing.T) string {
	var b strings.Builder
	for _, cmd := range [][]string{{"ipvsadm", "-Sn"}, {"iptables-save"}, {"ipset", "save"}, {"ip", "-o", "-4", "addr"}, {"ip", "-o", "link"},
		{"sysctl", "net.ipv4.vs.conntrack", "net.ipv4.vs.expire_nodest_conn"}} {
		out := Run(t, Node, cmd...)
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "#") { // iptables-save's dated comments
				fmt.Fprintln(&b, l)
			}
		}
	}
	return b.String()
}

func TestAgentDryRunLeavesTheKernelUntouched(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	before := kernelState(t)
	agent := StartAgent(t, b.objs, "--mode", "dry-run", "--sync-period", "1s")
	if err := agent.WaitOutput("ipvsadm -A -t 10.96.0.10:80 -s rr", 10*time.Second); err != nil {
		t.Fatalf("dry-run did not log its plan: %v", err)
	}
	b.web(b.pods[0])
	time.Sleep(3 * time.Second)
	agent.Stop()
	if after := kernelState(t); after != before {
		t.Errorf("dry-run changed the kernel.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestAgentConfigFile(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	WriteFile(t, cfg, "apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nmasqueradeAll: true\nipvs:\n  scheduler: wlc\n")
	StartAgent(t, b.objs, "--config", cfg)
	WaitIPVS(t, VSLine("TCP", webVS(), "wlc"), RSLine(rs(b.pods[2])))
	// masqueradeAll: even a pod inside the cluster CIDR is masqueraded.
	AddPod(t, "inpod", netip.MustParseAddr("10.244.2.50"))
	r, err := AskTCP("inpod", webVS())
	if err != nil || r.Source.Addr() == netip.MustParseAddr("10.244.2.50") {
		t.Errorf("with masqueradeAll the backend saw %+v (%v), want the node's address", r, err)
	}

	t.Run("a bad file stops start-up naming every bad field", func(t *testing.T) {
		WriteFile(t, cfg, "apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nclusterCIDR: 10.0.0.0/33\nipvs:\n  schedular: rr\n  syncPeriod: 3x\n")
		out, err := Exec(Node, AgentBin, "--config", cfg, "--objects-dir", b.objs.Dir)
		for _, want := range []string{`ipvs.schedular: unknown field`, `ipvs.syncPeriod: invalid duration "3x"`, `clusterCIDR: invalid CIDR "10.0.0.0/33"`} {
			if err == nil || !strings.Contains(out, want) {
				t.Errorf("kube-ipvs with a bad config: err=%v, output lacks %q:\n%s", err, want, out)
			}
		}
	})
}
