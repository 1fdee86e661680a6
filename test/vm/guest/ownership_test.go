//go:build vmguest

package guest

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/fixtures/kubeproxy"
)

// The ownership tests show that kube-ipvs touches only what it made: its
// record of its virtual servers survives the loss of kipvs0, and what
// kube-proxy, an operator or another tool made survives syncs, restarts
// and --cleanup, byte for byte.

// handMadeVS are virtual servers an operator made by hand: on the node's
// own address (as a NodePort would be), on another port of a ClusterIP
// kube-ipvs binds, and on an address nobody binds.
var handMadeVS = [][]string{
	{"-A", "-t", "192.168.100.1:30080", "-s", "wlc"},
	{"-a", "-t", "192.168.100.1:30080", "-r", "10.244.1.2:8080", "-m", "-w", "2"},
	{"-A", "-t", "10.96.0.10:443", "-s", "sh", "-b", "sh-port"},
	{"-a", "-t", "10.96.0.10:443", "-r", "10.244.1.3:8080", "-m", "-w", "1"},
	{"-A", "-u", "172.16.5.5:53", "-s", "rr"},
}

// foreignIPVS is `ipvsadm -Sn` restricted to virtual servers on keys that
// are not kube-ipvs' own webVS.
func foreignIPVS(t *testing.T, mine ...netip.AddrPort) string {
	var keep []string
	for _, l := range strings.Split(Run(t, Node, "ipvsadm", "-Sn"), "\n") {
		ours := false
		for _, m := range mine {
			ours = ours || strings.Contains(l, " "+m.String()+" ")
		}
		if l != "" && !ours {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func TestAgentOwnsOnlyWhatItRecorded(t *testing.T) {
	b := newAgentBed(t)
	for _, args := range handMadeVS {
		Run(t, Node, append([]string{"ipvsadm"}, args...)...)
	}
	t.Cleanup(func() {
		for _, vs := range []string{"192.168.100.1:30080", "10.96.0.10:443"} {
			_, _ = Exec(Node, "ipvsadm", "-D", "-t", vs)
		}
		_, _ = Exec(Node, "ipvsadm", "-D", "-u", "172.16.5.5:53")
	})
	handMade := foreignIPVS(t, webVS())
	b.web(b.pods...)
	agent := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))
	t.Logf("ipset list KIPVS-OWNED:\n%s", Run(t, Node, "ipset", "list", "KIPVS-OWNED"))

	// The agent stops, kipvs0 is deleted (every VIP with it), and pod2
	// leaves the Service meanwhile. The restarted agent's first full sync
	// leaves exactly the desired real servers.
	agent.Stop()
	Run(t, Node, "ip", "link", "del", "kipvs0")
	b.web(b.pods[0], b.pods[2])
	agent = StartAgent(t, b.objs)
	vs := webVS()
	out := WaitIPVSFor(t, 15*time.Second, &vs, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[2])), "!"+AnyRSLine(rs(b.pods[1])))
	if n := len(regexp.MustCompile(`(?m)^\s+->\s+\d`).FindAllString(out, -1)); n != 2 {
		t.Errorf("%d real servers after the restart, want exactly 2:\n%s", n, out)
	}
	if !VIPBound(t, webVIP) {
		t.Errorf("%s is not bound again on kipvs0", webVIP)
	}
	wantEven(t, CountTCP("client", webVS(), 20), []*Pod{b.pods[0], b.pods[2]}, 10)
	time.Sleep(3 * time.Second) // a full resync
	if got := foreignIPVS(t, webVS()); got != handMade {
		t.Errorf("hand-made virtual servers changed by syncs and a restart:\nbefore:\n%s\nafter:\n%s", handMade, got)
	}

	// --cleanup, once the agent stopped (a running one puts back what
	// cleanup removes), removes kube-ipvs' virtual server and nothing else.
	agent.Stop()
	Run(t, Node, AgentBin, "--cleanup", "--log-format", "console")
	if got := strings.TrimSpace(Run(t, Node, "ipvsadm", "-Sn")); got != handMade {
		t.Errorf("after --cleanup:\n%s\nwant exactly the hand-made ones:\n%s", got, handMade)
	}
}

// kubeProxyState is everything kube-proxy's IPVS mode owns on the node,
// as an operator would read it: its netfilter lines (all KUBE-…), its
// ipsets, its dummy interface and its virtual servers.
func kubeProxyState(t *testing.T) string {
	var b strings.Builder
	for _, cmd := range [][]string{{"iptables-save"}, {"ipset", "save"}} {
		for _, l := range strings.Split(Run(t, Node, cmd...), "\n") {
			if strings.Contains(l, "KUBE-") {
				b.WriteString(l + "\n")
			}
		}
	}
	b.WriteString(Run(t, Node, "ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0"))
	b.WriteString(foreignIPVS(t, netip.AddrPortFrom(ownVIP, 80)))
	return b.String()
}

// ownVIP is the ClusterIP of kube-ipvs' Service in the kube-proxy test,
// apart from the fixture's.
var ownVIP = netip.MustParseAddr("10.96.1.10")

func TestAgentLeavesKubeProxyAlone(t *testing.T) {
	b := newAgentBed(t)
	// What kube-proxy's IPVS mode leaves on a node: its ipsets and
	// iptables (test/fixtures/kubeproxy), kube-ipvs0 with its ClusterIPs,
	// and its virtual servers.
	loadKubeProxy(t)
	before := kubeProxyState(t)
	t.Logf("kube-proxy's state:\n%s", before)

	b.objs.Put("own", ServiceObject("own", ownVIP, httpPort))
	b.objs.Put("own-1", SliceObject("own-1", "own", []Port{httpPort}, b.pods...))
	agent := StartAgent(t, b.objs, "--sync-period", "100ms", "--min-sync-period", "0s")
	own := netip.AddrPortFrom(ownVIP, 80)
	WaitIPVSFor(t, 15*time.Second, &own, RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])))
	waitFullSyncs(t, agent, 100)
	wantEven(t, CountTCP("client", own, 9), b.pods, 3)
	if got := kubeProxyState(t); got != before {
		t.Errorf("kube-proxy's state changed while kube-ipvs ran:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	agent.Stop()
	Run(t, Node, AgentBin, "--cleanup", "--log-format", "console")
	if got := kubeProxyState(t); got != before {
		t.Errorf("kube-proxy's state changed by --cleanup:\nbefore:\n%s\nafter:\n%s", before, got)
	}
}

// syncs counts the agent's full syncs (its debug log).
func syncs(agent *Proc) int {
	return strings.Count(agent.Output(), `synced	{"full": true`)
}

// waitFullSyncs waits, five minutes at most, until the agent has logged n
// full syncs, and says how long they took.
func waitFullSyncs(t *testing.T, agent *Proc, n int) {
	t.Helper()
	began := time.Now()
	for syncs(agent) < n {
		if time.Since(began) > 5*time.Minute {
			t.Fatalf("only %d full syncs in %v", syncs(agent), time.Since(began))
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d full syncs in %v", syncs(agent), time.Since(began).Round(time.Second))
}

// loadKubeProxy loads the kube-proxy fixture into the node and removes it
// when the test ends.
func loadKubeProxy(t *testing.T) {
	t.Helper()
	Run(t, Node, "sh", "-c", "ipset restore <<'EOF'\n"+kubeproxy.IPSetSave+"EOF")
	Run(t, Node, "sh", "-c", "iptables-restore --noflush <<'EOF'\n"+kubeproxy.IPTablesSave+"EOF")
	Run(t, Node, "ip", "link", "add", "kube-ipvs0", "type", "dummy")
	for _, a := range []string{"10.96.0.1", "10.96.0.10", "10.96.100.50"} {
		Run(t, Node, "ip", "addr", "add", a+"/32", "dev", "kube-ipvs0")
	}
	for _, args := range [][]string{
		{"-A", "-t", "10.96.0.1:443", "-s", "rr"},
		{"-a", "-t", "10.96.0.1:443", "-r", "192.168.100.9:6443", "-m", "-w", "1"},
		{"-A", "-t", "10.96.0.10:53", "-s", "rr"},
		{"-A", "-u", "10.96.0.10:53", "-s", "rr"},
		{"-A", "-t", "10.96.100.50:80", "-s", "rr"},
		{"-a", "-t", "10.96.100.50:80", "-r", "10.244.1.5:8080", "-m", "-w", "1"},
		{"-A", "-t", "192.168.100.1:30080", "-s", "rr"},
		{"-a", "-t", "192.168.100.1:30080", "-r", "10.244.1.5:8080", "-m", "-w", "1"},
	} {
		Run(t, Node, append([]string{"ipvsadm"}, args...)...)
	}
	t.Cleanup(func() {
		for _, vs := range [][]string{{"-t", "10.96.0.1:443"}, {"-t", "10.96.0.10:53"}, {"-u", "10.96.0.10:53"},
			{"-t", "10.96.100.50:80"}, {"-t", "192.168.100.1:30080"}} {
			_, _ = Exec(Node, append([]string{"ipvsadm", "-D"}, vs...)...)
		}
		_, _ = Exec(Node, "ip", "link", "del", "kube-ipvs0")
		for _, table := range []string{"filter", "nat"} {
			out, _ := Exec(Node, "iptables-save", "-t", table)
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "-A ") && strings.Contains(l, "-j KUBE-") && !strings.HasPrefix(l, "-A KUBE-") {
					_, _ = Exec(Node, "sh", "-c", "iptables -t "+table+" -D"+strings.TrimPrefix(l, "-A"))
				}
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, ":KUBE-") {
					chain := strings.Fields(l[1:])[0]
					_, _ = Exec(Node, "iptables", "-t", table, "-F", chain)
				}
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, ":KUBE-") {
					_, _ = Exec(Node, "iptables", "-t", table, "-X", strings.Fields(l[1:])[0])
				}
			}
		}
		out, _ := Exec(Node, "ipset", "list", "-n")
		for _, s := range strings.Fields(out) {
			if strings.HasPrefix(s, "KUBE-") {
				_, _ = Exec(Node, "ipset", "destroy", s)
			}
		}
	})
}
