//go:build vmguest

package guest

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// The egress and ingress lists (egress.masquerade, egress.nonMasqueradeCIDRs,
// egress.denyCIDRs, ingress.denySourceCIDRs) on the two-node bed, with a
// second outside client, "outside2" (192.168.60.101), which the lists
// deny.

const deniedNS = "outside2"

var deniedIP = netip.MustParseAddr("192.168.60.101")

// egressConfig writes a KubeIPVSConfiguration with body (the egress and
// ingress sections) and returns its path.
func egressConfig(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	WriteFile(t, path, "apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n"+body)
	return path
}

// listLines is what kube-ipvs' lists put in namespace ns: the iptables-save
// lines naming them, their sets (`ipset list -n`) and the sets' members
// (the add lines of `ipset save`, sorted: a hash set lists its members in
// no fixed order; its create lines carry a random initval).
func listLines(t *testing.T, ns string) string {
	t.Helper()
	words := []string{"KIPVS-EGRESS-MASQ", "KIPVS-EGRESS-FILTER", "KIPVS-INGRESS-DENY", "KIPVS-NON-MASQ", "KIPVS-EGRESS-DENY", "KIPVS-DENY-SOURCES"}
	keep := func(out string, ok func(line string) bool) []string {
		var lines []string
		for line := range strings.Lines(out) {
			for _, w := range words {
				if strings.Contains(line, w) && ok(line) {
					lines = append(lines, line)
					break
				}
			}
		}
		return lines
	}
	rules := keep(Run(t, ns, "iptables-save"), func(line string) bool { return !strings.HasPrefix(line, ":") })
	sets := keep(Run(t, ns, "ipset", "list", "-n"), func(string) bool { return true })
	members := keep(Run(t, ns, "ipset", "save"), func(line string) bool { return strings.HasPrefix(line, "add ") })
	slices.Sort(members)
	return strings.Join(slices.Concat(rules, sets, members), "")
}

// sourceSeen asks addr from ns and returns the source its backend saw.
func sourceSeen(t *testing.T, ns string, addr netip.AddrPort) netip.Addr {
	t.Helper()
	r, err := AskTCP(ns, addr)
	if err != nil {
		t.Fatalf("%s from %s: %v", addr, ns, err)
	}
	return r.Source.Addr()
}

func TestEgressMasqueradeAndDenyLists(t *testing.T) {
	bed := NewBed(t)
	bed.plug(t, deniedNS, deniedIP)
	Run(t, deniedNS, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	StartBackend(t, bed.External, "outside", 9000)
	StartBackend(t, deniedNS, "outside2", 9000)
	client := bed.A.AddPod(t, "a-egr1")
	web := bed.B.AddPod(t, "b-egrweb")
	StartBackend(t, web.Name, web.Name, 8080)
	ports := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080}}
	objs := bed.NewObjects(t)
	vip := netip.MustParseAddr("10.96.7.10")
	objs.Put("web", northSouthService("web", vip, v1.ServiceTypeNodePort, []int32{30090}, ports...))
	objs.Put("web-1", BedSlice("web-1", "web", ports, web))
	// A selector-less Service whose one endpoint is the denied address:
	// IPVS must not carry pods there either.
	metaPorts := []Port{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 9000}}
	metaVIP := netip.MustParseAddr("10.96.7.20")
	objs.Put("meta", ServiceObject("meta", metaVIP, metaPorts...))
	meta := SliceObject("meta-1", "meta", metaPorts, &Pod{Name: deniedNS, IPs: []netip.Addr{deniedIP}})
	meta.Endpoints[0].NodeName = nil
	objs.Put("meta-1", meta)

	outside, denied := ap(bed.ExternalIP, 9000), ap(deniedIP, 9000)
	cfg := egressConfig(t, "lists", `egress:
  masquerade: true
  denyCIDRs: [`+deniedIP.String()+`/32]
ingress:
  denySourceCIDRs: [`+deniedIP.String()+`/32]
`)
	agent := bed.A.StartAgent(t, objs, "--config", cfg)
	nodePort := ap(bed.A.IP, 30090)
	bed.A.WaitIPVS(t, VSLine("TCP", nodePort, "rr"), RSLine(ap(web.IP(), 8080)))

	t.Run("a pod reaching outside appears as its node", func(t *testing.T) {
		if got := sourceSeen(t, client.Name, outside); got != bed.A.IP {
			t.Errorf("the outside client saw %s; want node-a's %s", got, bed.A.IP)
		}
	})
	t.Run("a pod reaching a pod keeps its address", func(t *testing.T) {
		if got := sourceSeen(t, client.Name, ap(web.IP(), 8080)); got != client.IP() {
			t.Errorf("the pod on node-b saw %s; want the client pod's %s (the cluster CIDR is not masqueraded)", got, client.IP())
		}
		if got := sourceSeen(t, client.Name, ap(vip, 80)); got != client.IP() {
			t.Errorf("through the ClusterIP the pod saw %s; want the client pod's %s", got, client.IP())
		}
	})
	t.Run("a pod cannot reach a denied destination, the node can", func(t *testing.T) {
		_, err := AskTCP(client.Name, denied)
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("%s from a pod: %v; want it rejected (no route to host: ICMP administratively prohibited)", denied, err)
		}
		if got := sourceSeen(t, bed.A.NS, denied); got != bed.A.IP {
			t.Errorf("the node reached %s from %s", denied, got)
		}
		sourceSeen(t, client.Name, outside) // and the pod still gets out elsewhere
	})
	t.Run("a pod cannot reach a denied destination through a Service, the node can", func(t *testing.T) {
		bed.A.WaitIPVS(t, VSLine("TCP", ap(metaVIP, 80), "rr"), RSLine(denied))
		if _, err := AskTCP(client.Name, ap(metaVIP, 80)); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("%s (endpoint %s) from a pod: %v; want it rejected", ap(metaVIP, 80), denied, err)
		}
		if got := sourceSeen(t, bed.A.NS, ap(metaVIP, 80)); got != bed.A.IP {
			t.Errorf("the node reached %s through %s from %s", denied, metaVIP, got)
		}
	})
	t.Run("a denied source cannot reach the NodePort, another can", func(t *testing.T) {
		mustNotServe(t, deniedNS, nodePort, "ingress.denySourceCIDRs holds the client")
		mustServe(t, bed.External, nodePort, 3, web)
		mustServe(t, client.Name, ap(vip, 80), 3, web) // ClusterIPs are not affected
	})
	t.Run("a flushed POSTROUTING comes back within a sync period", func(t *testing.T) {
		const jump = "-j KIPVS-EGRESS-MASQ"
		start := time.Now()
		if out := Run(t, bed.A.NS, "sh", "-c", "iptables -t nat -F POSTROUTING && iptables -t nat -S POSTROUTING"); strings.Contains(out, jump) {
			t.Fatalf("POSTROUTING still jumps to kube-ipvs after the flush:\n%s", out)
		}
		for deadline := start.Add(BedWait); ; {
			if strings.Contains(Run(t, bed.A.NS, "iptables", "-t", "nat", "-S", "POSTROUTING"), jump) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the egress jump is not back after %v", BedWait)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("the jumps were back %v after the flush (sync period 2s)", time.Since(start).Round(100*time.Millisecond))
		if got := sourceSeen(t, client.Name, outside); got != bed.A.IP {
			t.Errorf("after the repair the outside client saw %s; want node-a's %s", got, bed.A.IP)
		}
	})

	// The outside client learns a route to node-a's pods: a pod's own
	// address can then be answered.
	RouteVia(t, bed.External, bed.A.PodCIDR, bed.A.IP)
	// The agents restart under the parent test: a subtest's cleanup would
	// run --cleanup while the agent still runs.
	agent.Stop()
	keep := egressConfig(t, "keep", `egress:
  masquerade: true
  nonMasqueradeCIDRs: [10.244.0.0/16, `+bed.ExternalIP.String()+`/32]
`)
	agent = bed.A.StartAgent(t, objs, "--config", keep)
	t.Run("a restart with the outside client in nonMasqueradeCIDRs keeps the pod's address", func(t *testing.T) {
		bed.A.WaitIPVS(t, VSLine("TCP", nodePort, "rr"))
		waitLines(t, bed.A.NS, `-A POSTROUTING -m comment --comment "kube-ipvs egress masquerade" -j KIPVS-EGRESS-MASQ
-A KIPVS-EGRESS-MASQ -m mark --mark 0x4000/0x4000 -j RETURN
-A KIPVS-EGRESS-MASQ -m set --match-set KIPVS-NON-MASQ dst -j RETURN
-A KIPVS-EGRESS-MASQ -s 10.244.0.0/16 -j MASQUERADE --random-fully
KIPVS-NON-MASQ
add KIPVS-NON-MASQ 10.244.0.0/16
add KIPVS-NON-MASQ 192.168.60.100
`)
		if got := sourceSeen(t, client.Name, outside); got != client.IP() {
			t.Errorf("the outside client saw %s; want the pod's %s", got, client.IP())
		}
		if _, err := AskTCP(deniedNS, nodePort); err != nil {
			t.Errorf("the deny lists are gone, yet %s cannot reach %s: %v", deniedNS, nodePort, err)
		}
	})
	agent.Stop()
	bed.A.StartAgent(t, objs)
	t.Run("a restart without the lists leaves none of them", func(t *testing.T) {
		bed.A.WaitIPVS(t, VSLine("TCP", nodePort, "rr"))
		waitLines(t, bed.A.NS, "")
		if got := sourceSeen(t, client.Name, outside); got != client.IP() {
			t.Errorf("the outside client saw %s; want the pod's %s", got, client.IP())
		}
	})
}

// waitLines waits until listLines in ns is want, for BedWait: an agent
// rewrites its rules at its first full sync.
func waitLines(t *testing.T, ns, want string) {
	t.Helper()
	deadline := time.Now().Add(BedWait)
	for {
		got := listLines(t, ns)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-ipvs' list lines in %s:\n%s\nwant:\n%s", ns, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A bad CIDR in a list stops start-up with the field and the value named.
func TestEgressListsRefuseBadCIDRs(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"egress:\n  denyCIDRs: [169.254.169.254]\n", `egress.denyCIDRs[0]: invalid CIDR "169.254.169.254"`},
		{"ingress:\n  denySourceCIDRs: [198.51.100.0/24, 10.0.0.256/8]\n", `ingress.denySourceCIDRs[1]: invalid CIDR "10.0.0.256/8"`},
		{"egress:\n  nonMasqueradeCIDRs: [fd00::/129]\n", `egress.nonMasqueradeCIDRs[0]: invalid CIDR "fd00::/129"`},
	} {
		cfg := egressConfig(t, "bad", tc.body)
		out, err := Exec(Node, AgentBin, "--config", cfg, "--objects-dir", t.TempDir(), "--node-name", NodeName)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("kube-ipvs with %q: err %v, output:\n%s\nwant it to stop naming %s", tc.body, err, out, tc.want)
		}
		if left := agentLeftovers(Node); left != "" {
			t.Errorf("a refused configuration left:\n%s", left)
		}
	}
}
