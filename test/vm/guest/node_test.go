//go:build vmguest

package guest

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The node tests put kube-ipvs on a node as production nodes are: a FORWARD
// policy of DROP (Docker, hardened hosts), a CNI hostPort DNAT after it in
// nat, pods that stop being ready while clients hold connections, UDP
// clients that keep their socket, and other software's virtual servers.

var inPodIP = netip.MustParseAddr("10.244.2.50") // a client pod inside the cluster CIDR

// forwardDrop sets the filter FORWARD policy to DROP until the test ends.
func forwardDrop(t *testing.T) {
	t.Helper()
	Run(t, Node, "iptables", "-P", "FORWARD", "DROP")
	t.Cleanup(func() { _, _ = Exec(Node, "iptables", "-P", "FORWARD", "ACCEPT") })
}

func TestAgentOnANodeWhoseForwardPolicyIsDrop(t *testing.T) {
	b := newAgentBed(t)
	AddPod(t, "inpod", inPodIP)
	b.web(b.pods...)
	b.objs.Put("self", ServiceObject("self", selfVIP, httpPort))
	b.objs.Put("self-1", SliceObject("self-1", "self", []Port{httpPort}, b.pods[0]))
	forwardDrop(t)
	agent := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])), VSLine("TCP", netip.AddrPortFrom(selfVIP, 80), "rr"))

	answered := func(t *testing.T) {
		t.Helper()
		t.Run("pod client", func(t *testing.T) {
			got := CountTCP("inpod", webVS(), 30)
			wantEven(t, got, b.pods, 10)
			wantSource(t, got, inPodIP)
		})
		t.Run("client outside the cluster CIDR", func(t *testing.T) {
			wantEven(t, CountTCP("client", webVS(), 30), b.pods, 10)
		})
		t.Run("hairpin", func(t *testing.T) {
			if r, err := AskTCP(b.pods[0].Name, netip.AddrPortFrom(selfVIP, 80)); err != nil || r.Name != b.pods[0].Name {
				t.Errorf("hairpin: %+v, %v", r, err)
			}
		})
	}
	answered(t)
	t.Logf("filter FORWARD:\n%s", Run(t, Node, "iptables", "-S", "FORWARD"))

	// Without kube-ipvs' FORWARD chain the replies are dropped, so the
	// checks above are not vacuous. (The agent is stopped first: its next
	// full resync would put the chain back within seconds.)
	agent.Stop()
	Run(t, Node, "iptables", "-F", "KIPVS-FORWARD")
	if r, err := AskTCP("inpod", webVS()); err == nil {
		t.Fatalf("with KIPVS-FORWARD flushed a pod still got an answer (%+v): FORWARD DROP is not in effect", r)
	}
	StartAgent(t, b.objs)
	waitFor(t, 15*time.Second, "the agent to restore KIPVS-FORWARD", func() bool {
		_, err := AskTCP("inpod", webVS())
		return err == nil
	})
	answered(t)
}

func TestAgentServiceTrafficIsNotCapturedByALaterHostPortDNAT(t *testing.T) {
	b := newAgentBed(t)
	AddPod(t, "inpod", inPodIP)
	hostPod := AddPod(t, "hostport", netip.MustParseAddr("10.244.3.9"))
	StartBackend(t, hostPod.Name, "hostport", backendPort)
	b.web(b.pods...)
	agent := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))

	// CNI portmap's hostPort DNAT for a pod with hostPort 80, appended
	// after kube-ipvs' jumps, matching every local address (a VIP is one).
	dnat := []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"}
	Run(t, Node, "iptables", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT")
	Run(t, Node, "iptables", "-t", "nat", "-A", "CNI-HOSTPORT-DNAT", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", netip.AddrPortFrom(hostPod.IP(), backendPort).String())
	for _, chain := range []string{"PREROUTING", "OUTPUT"} {
		Run(t, Node, append([]string{"iptables", "-t", "nat", "-A", chain}, dnat...)...)
	}
	t.Cleanup(func() {
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			_, _ = Exec(Node, append([]string{"iptables", "-t", "nat", "-D", chain}, dnat...)...)
		}
		_, _ = Exec(Node, "iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT")
		_, _ = Exec(Node, "iptables", "-t", "nat", "-X", "CNI-HOSTPORT-DNAT")
	})
	t.Logf("nat PREROUTING:\n%s", Run(t, Node, "iptables", "-t", "nat", "-S", "PREROUTING"))
	// The hostPort itself works: the node's own address, port 80.
	nodeHTTP := netip.AddrPortFrom(Gateway(outsider), 80)
	if r, err := AskTCP("client", nodeHTTP); err != nil || r.Name != "hostport" {
		t.Fatalf("the hostPort DNAT does not work on %s: %+v, %v", nodeHTTP, r, err)
	}

	onlyTheService := func(t *testing.T) {
		t.Helper()
		for _, from := range []string{"inpod", "client", Node} {
			name := from
			if from == Node {
				name = "the node"
			}
			t.Run("from "+name, func(t *testing.T) { wantEven(t, CountTCP(from, webVS(), 15), b.pods, 5) })
		}
	}
	onlyTheService(t)

	// With kube-ipvs' nat jump gone the DNAT does capture ClusterIP:80,
	// so the check above is not vacuous. (The agent is stopped first: its
	// next full resync would put the jump back within seconds.)
	agent.Stop()
	jump := []string{"-m", "comment", "--comment", "kube-ipvs service portals", "-j", "KIPVS-SERVICES"}
	Run(t, Node, append([]string{"iptables", "-t", "nat", "-D", "PREROUTING"}, jump...)...)
	if r, err := AskTCP("client", webVS()); err != nil || r.Name != "hostport" {
		t.Fatalf("without kube-ipvs' jump expected the hostPort pod to capture %s: %+v, %v", webVS(), r, err)
	}
	StartAgent(t, b.objs)
	waitFor(t, 15*time.Second, "the agent to restore the nat jump at the head of PREROUTING", func() bool {
		r, err := AskTCP("client", webVS())
		return err == nil && r.Name != "hostport"
	})
	onlyTheService(t)
}

// waitFor polls cond every 200 ms until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAgentDrainsATCPRealServerAcrossARestart(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	agent := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))
	held := connTo(t, webVS(), b.pods[2].Name)
	defer held.Close()
	ask := func(when string) {
		t.Helper()
		if r, err := held.Ask(); err != nil || r.Name != b.pods[2].Name {
			t.Fatalf("%s: the open connection to pod3 broke: %+v, %v", when, r, err)
		}
	}

	// pod3 stops being ready (not terminating: a failed readiness probe).
	notReady := SliceObject("web-1", "web", []Port{httpPort}, b.pods...)
	notReady.Endpoints[2].Conditions.Ready = ptr(false)
	notReady.Endpoints[2].Conditions.Serving = ptr(false)
	b.objs.Put("web-1", notReady)
	WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), DrainLine(rs(b.pods[2])))
	ask("pod3 not ready")
	wantEven(t, CountTCP("client", webVS(), 20), b.pods[:2], 10)

	// Then it leaves the slice: still draining, through full resyncs.
	b.web(b.pods[0], b.pods[1])
	time.Sleep(5 * time.Second)
	WaitIPVS(t, DrainLine(rs(b.pods[2])))
	ask("pod3 gone from the slice")

	// A restart in the middle continues the drain.
	agent.Stop()
	restarted := StartAgent(t, b.objs)
	time.Sleep(5 * time.Second)
	out := WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), DrainLine(rs(b.pods[2])))
	ask("after the restart")
	if strings.Contains(restarted.Output(), "ipvsadm -d") {
		t.Errorf("the restarted agent deleted a real server:\n%s", restarted.Output())
	}
	t.Logf("ipvsadm -Ln during the drain:\n%s", out)

	// The client closes; the real server goes once IPVS counts no
	// connection on it (a closed connection stays in TIME_WAIT, counted in
	// InActConn, for IPVS's 2 minutes).
	held.Close()
	closed := time.Now()
	WaitIPVSFor(t, 4*time.Minute, nil, "!"+AnyRSLine(rs(b.pods[2])), RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])))
	t.Logf("pod3's real server went %v after its last connection closed", time.Since(closed).Round(100*time.Millisecond))
	if !strings.Contains(restarted.Output(), "its connections are closed") {
		t.Errorf("the drain did not end because the connections closed:\n%s", tail(restarted.Output(), 30))
	}
}

func TestAgentMovesAUDPClientOffARemovedPod(t *testing.T) {
	CleanupAgent(t)
	AddPod(t, "client", outsider)
	objs := NewObjects(t)
	var pods []*Pod
	backends := map[string]*Proc{}
	for i, name := range []string{"pod1", "pod2", "pod3"} {
		p := AddPod(t, name, netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}))
		backends[name] = StartBackend(t, name, name, backendPort)
		pods = append(pods, p)
	}
	vs := netip.AddrPortFrom(dnsVIP, 53)
	objs.Put("dns", ServiceObject("dns", dnsVIP, dnsPort))
	objs.Put("dns-1", SliceObject("dns-1", "dns", []Port{dnsPort}, pods...))
	StartAgent(t, objs)
	WaitIPVS(t, VSLine("UDP", vs, "rr"), RSLine(rs(pods[0])), RSLine(rs(pods[1])), RSLine(rs(pods[2])))

	// One UDP socket, one datagram every 100 ms, as a DNS client or a
	// game client keeps its port.
	stream := StartUDPStream(t, "client", vs, 100*time.Millisecond)
	first := stream.WaitAnswer(t, 10*time.Second)
	t.Logf("the client's flow lands on %s", first.Name)
	var keep []*Pod
	var gone *Pod
	for _, p := range pods {
		if p.Name != first.Name {
			keep = append(keep, p)
		} else {
			gone = p
		}
	}

	// Its pod goes: the backend stops and the endpoint leaves the slice.
	removed := time.Now()
	backends[first.Name].Stop()
	objs.Put("dns-1", SliceObject("dns-1", "dns", []Port{dnsPort}, keep...))
	next := stream.WaitAnswerFrom(t, 30*time.Second, func(r Reply) bool { return r.Name != first.Name })
	t.Logf("the same UDP socket got its first answer from %s %v after %s was removed",
		next.Name, next.At.Sub(removed).Round(10*time.Millisecond), first.Name)
	// UDP real servers are not drained.
	WaitIPVS(t, "!"+AnyRSLine(rs(gone)), RSLine(rs(keep[0])), RSLine(rs(keep[1])))
}

func TestAgentStartUpChecksAndTheMHScheduler(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	agent := StartAgent(t, b.objs, "--scheduler", "mh")
	// ipvsadm shows the flag kube-ipvs sets with mh, as kube-proxy does.
	WaitIPVS(t, `^TCP\s+`+regexp.QuoteMeta(webVS().String())+` mh \(mh-port\)`, RSLine(rs(b.pods[2])))
	// mh-port hashes the client's port too: one client's connections
	// spread over the pods instead of all landing on one.
	got := CountTCP("client", webVS(), 30)
	if got.Failed != 0 || len(got.ByName) < 2 {
		t.Errorf("30 connections from one client with mh-port: %v, want at least two pods", got)
	}
	// This kernel (6.1) reuses ports without delay: conn_reuse_mode is left
	// alone, and said so. The VM has no br_netfilter: warned about.
	if v := strings.TrimSpace(Run(t, Node, "cat", "/proc/sys/net/ipv4/vs/conn_reuse_mode")); v != "1" {
		t.Errorf("conn_reuse_mode = %s on a 6.1 kernel, want the kernel's 1", v)
	}
	for _, want := range []string{"conn_reuse_mode left as it is", "bridge-nf-call-iptables is not 1"} {
		if !strings.Contains(agent.Output(), want) {
			t.Errorf("the agent did not log %q at start-up:\n%s", want, tail(agent.Output(), 30))
		}
	}
}
