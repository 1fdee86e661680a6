//go:build vmguest

package guest

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// kube-ipvs beside the CNIs that write iptables of their own: node-a of
// the two-node bed holds what Calico's felix and Weave Net's weaver and
// weave-npc leave on a node (test/fixtures/cni) before kube-ipvs starts.
// Their rules match their interfaces (cali+, weave), which the bed's pods
// do not use, but they sit in the same chains and tables as kube-ipvs',
// clear and set mark bits on every packet, and hold the tables' first
// places: kube-ipvs must serve through them and never change one of them.

var (
	cniVIP      = netip.MustParseAddr("10.96.6.10")
	cniNodePort = uint16(30088)
	cniPorts    = []Port{
		{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: BackendPort},
		{Name: "dns", Protocol: v1.ProtocolUDP, Port: 80, Target: BackendPort},
	}
)

// cniConfig is the agent's configuration file: the cluster CIDR and
// egress.masquerade, so that what a pod sends out of the cluster leaves
// with the node's address.
const cniConfig = `apiVersion: kube-ipvs.io/v1alpha1
kind: KubeIPVSConfiguration
clusterCIDR: ` + ClusterCIDR + `
egress:
  masquerade: true
`

func TestAgentBesideCalicoAndWeaveRules(t *testing.T) {
	bed := NewBed(t)
	a1, a2, b1 := bed.A.AddPod(t, "a-cni1"), bed.A.AddPod(t, "a-cni2"), bed.B.AddPod(t, "b-cni1")
	client := bed.A.AddPod(t, "a-cnicl") // a pod client, inside the cluster CIDR
	web := []*BedPod{a1, a2, b1}
	for _, p := range web {
		StartBackend(t, p.Name, p.Name, BackendPort)
	}
	StartBackend(t, bed.External, "outside", BackendPort) // a server outside the cluster

	LoadCNIRules(t, bed.A.NS)
	loaded := CNIState(t, bed.A.NS)
	t.Logf("Calico's and Weave's rules and sets on node-a:\n%s", loaded)
	// The fixture is what iptables-save prints: every line of theirs reads
	// back as it was written, in the same order.
	got := CNIRules(t, bed.A.NS)
	for table, want := range CNIFixtureRules() {
		if !slices.Equal(got[table], want) {
			t.Errorf("iptables-save -t %s after loading the fixture:\n%s\nwant the fixture's lines:\n%s",
				table, strings.Join(got[table], "\n"), strings.Join(want, "\n"))
		}
	}
	if n := strings.Count(loaded, "\ncreate "); n != 10 {
		t.Errorf("%d of the fixture's 10 ipsets after loading it", n)
	}
	unchanged := func(t *testing.T, after string) {
		t.Helper()
		if now := CNIState(t, bed.A.NS); now != loaded {
			t.Errorf("Calico's and Weave's rules or sets changed %s:\nloaded:\n%s\nnow:\n%s", after, loaded, now)
		}
	}

	objs := bed.NewObjects(t)
	objs.Put("web", northSouthService("web", cniVIP, v1.ServiceTypeNodePort, []int32{int32(cniNodePort), int32(cniNodePort)}, cniPorts...))
	objs.Put("web-1", BedSlice("web-1", "web", cniPorts, web...))
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	WriteFile(t, cfg, cniConfig)
	// A full sync every 100 ms: full syncs are what rewrite kube-ipvs' rules.
	args := []string{"--config", cfg, "--sync-period", "100ms", "--min-sync-period", "0s"}
	agent := bed.A.StartAgent(t, objs, args...)
	vs, np := ap(cniVIP, 80), ap(bed.A.IP, cniNodePort)
	bed.A.WaitIPVS(t, VSLine("TCP", vs, "rr"), VSLine("TCP", np, "rr"), VSLine("UDP", np, "rr"),
		RSLine(ap(a1.IP(), BackendPort)), RSLine(ap(a2.IP(), BackendPort)), RSLine(ap(b1.IP(), BackendPort)))
	t.Logf("node-a iptables-save with kube-ipvs beside them:\n%s", Run(t, bed.A.NS, "iptables-save"))

	served := func(t *testing.T) {
		t.Helper()
		pods := []*Pod{a1.Pod, a2.Pod, b1.Pod}
		t.Run("ClusterIP from a pod keeps its address", func(t *testing.T) {
			got := CountTCP(client.Name, vs, 15)
			wantEven(t, got, pods, 5)
			wantSource(t, got, client.IP())
		})
		t.Run("ClusterIP from the node", func(t *testing.T) {
			wantEven(t, CountTCP(bed.A.NS, vs, 6), pods, 2)
		})
		t.Run("NodePort from outside, masqueraded", func(t *testing.T) {
			got := CountTCP(bed.External, np, 15)
			wantEven(t, got, pods, 5)
			for _, r := range got.Replies {
				if r.Source.Addr() == bed.ExternalIP {
					t.Errorf("%s saw the outside client's own address: externalTrafficPolicy Cluster must masquerade", r.Name)
				}
			}
			udp := CountUDP(bed.External, np, 12)
			if udp.Failed > 0 || len(udp.ByName) != len(pods) {
				t.Errorf("UDP %s from outside: %s; want every pod and no failure", np, udp)
			}
		})
	}
	served(t)

	t.Run("egress masquerade", func(t *testing.T) {
		out := ap(bed.ExternalIP, BackendPort)
		r, err := AskTCP(client.Name, out)
		if err != nil || r.Name != "outside" {
			t.Fatalf("a pod reaching %s outside the cluster: %+v, %v (the outside has no route back to pods: unmasqueraded, it cannot answer)", out, r, err)
		}
		if r.Source.Addr() != bed.A.IP {
			t.Errorf("the outside saw the pod as %s, want node-a's %s", r.Source, bed.A.IP)
		}
		// Inside the cluster CIDR the pod keeps its address.
		r, err = AskTCP(client.Name, ap(b1.IP(), BackendPort))
		if err != nil || r.Source.Addr() != client.IP() {
			t.Errorf("the pod reaching %s on node-b directly: %+v, %v; want it seen as %s", b1.Name, r, err, client.IP())
		}
	})

	// The traffic went through their chains: each of their jumps from a
	// built-in chain counted packets. (kube-ipvs ACCEPTs what is bound for
	// a Service in nat PREROUTING and replies in filter FORWARD; there,
	// only what the node routes for pods, the egress checks above, passes
	// their jumps behind kube-ipvs'.)
	for _, j := range []struct{ table, chain, target string }{
		{"raw", "PREROUTING", "cali-PREROUTING"}, {"mangle", "PREROUTING", "cali-PREROUTING"},
		{"nat", "PREROUTING", "cali-PREROUTING"}, {"filter", "INPUT", "cali-INPUT"},
		{"filter", "FORWARD", "cali-FORWARD"}, {"filter", "OUTPUT", "cali-OUTPUT"},
		{"mangle", "POSTROUTING", "cali-POSTROUTING"}, {"nat", "POSTROUTING", "cali-POSTROUTING"},
		{"nat", "POSTROUTING", "WEAVE"},
	} {
		if n := CNIJumpPackets(t, bed.A.NS, j.table, j.chain, j.target); n <= 0 {
			t.Errorf("%s %s -j %s counted %d packets: no traffic passed their rules", j.table, j.chain, j.target, n)
		}
	}

	// 100 full syncs.
	waitFullSyncs(t, agent, 100)
	unchanged(t, "by 100 full syncs")
	served(t)

	// A restart: the new agent's first full syncs find their rules and
	// kube-ipvs' own in place.
	agent.Stop()
	agent = bed.A.StartAgent(t, objs, args...)
	if err := agent.WaitOutput(`synced	{"full": true`, 60*time.Second); err != nil {
		t.Fatalf("the restarted agent never synced: %v", err)
	}
	waitFor(t, 60*time.Second, "5 full syncs of the restarted agent", func() bool { return syncs(agent) >= 5 })
	unchanged(t, "by a restart of kube-ipvs")
	served(t)

	// --cleanup, once the agent has stopped, removes kube-ipvs and nothing
	// of theirs.
	agent.Stop()
	Run(t, bed.A.NS, AgentBin, "--cleanup", "--log-format", "console")
	if left := agentLeftovers(bed.A.NS); left != "" {
		t.Errorf("kube-ipvs --cleanup left:\n%s", left)
	}
	unchanged(t, "by kube-ipvs --cleanup")
}
