//go:build vmguest

package guest

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// The short circuit of externalTrafficPolicy Local: pods and the nodes
// themselves reaching a Local Service's external addresses are served by
// every endpoint, as in kube-proxy's iptables and nftables modes, while
// outside clients still get only the node's own endpoints.

// fwmLine is the ipvsadm -Ln pattern of a firewall-mark virtual server.
func fwmLine(sched string) string { return `^FWM\s+\d+ ` + sched + `\b` }

// fwmRealServers returns, per firewall mark, the real servers ipvsadm -Ln
// lists under it.
func fwmRealServers(out string) map[string][]string {
	got := map[string][]string{}
	mark := ""
	rs := regexp.MustCompile(`^\s+-> (\S+)\s`)
	for _, line := range strings.Split(out, "\n") {
		switch f := strings.Fields(line); {
		case len(f) >= 2 && f[0] == "FWM":
			mark = f[1]
			got[mark] = []string{}
		case len(f) >= 1 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP"):
			mark = ""
		case mark != "":
			if m := rs.FindStringSubmatch(line); m != nil && m[1] != "RemoteAddress:Port" {
				got[mark] = append(got[mark], m[1])
			}
		}
	}
	return got
}

func TestShortCircuitOfLocalServices(t *testing.T) {
	bed := NewBed(t)
	aWeb := bed.A.AddPod(t, "a-web6")
	bClient := bed.B.AddPod(t, "b-cli6")
	StartBackend(t, aWeb.Name, aWeb.Name, 8080)
	ports := []Port{
		{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: 8080},
		{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, Target: 8080},
	}
	lbIP := netip.MustParseAddr("203.0.113.30")
	svc := withIngress(northSouthService("lb", netip.MustParseAddr("10.96.5.30"), v1.ServiceTypeLoadBalancer, []int32{30086, 30087}, ports...), lbIP.String())
	svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = 32102
	objs := bed.NewObjects(t)
	objs.Put("lb", svc)
	objs.Put("lb-1", BedSlice("lb-1", "lb", ports, aWeb))
	// node-b runs a CNI that sets a policy bit of its own (Calico's 0x10000)
	// on what the node sends, in filter OUTPUT: after IPVS took the node's
	// packet by its mark and before POSTROUTING masquerades it.
	cni := []string{"OUTPUT", "-j", "MARK", "--set-xmark", "0x10000/0x10000"}
	Run(t, bed.B.NS, append([]string{"iptables", "-t", "filter", "-A"}, cni...)...)
	t.Cleanup(func() { _, _ = Exec(bed.B.NS, append([]string{"iptables", "-t", "filter", "-D"}, cni...)...) })
	agentB := bed.B.StartAgent(t, objs)
	bed.A.StartAgent(t, objs)
	t.Cleanup(func() { // before the agents' cleanups, which run later
		if t.Failed() {
			out, _ := Exec(bed.B.NS, "iptables-save", "-c")
			t.Logf("node-b iptables-save -c:\n%s", out)
		}
	})
	bed.A.WaitIPVS(t, VSLine("TCP", ap(bed.A.IP, 30086), "rr"), RSLine(ap(aWeb.IP(), 8080)))

	// node-b: the Local virtual servers have no real server; one
	// firewall-mark virtual server per port has the Service's endpoints.
	out := bed.B.WaitIPVS(t, VSLine("TCP", ap(bed.B.IP, 30086), "rr"), VSLine("UDP", ap(lbIP, 53), "rr"), fwmLine("rr"))
	fwm := fwmRealServers(out)
	if len(fwm) != 2 {
		t.Fatalf("node-b has %d firewall-mark virtual servers, want one per port (2):\n%s", len(fwm), out)
	}
	for mark, rs := range fwm {
		if len(rs) != 1 || rs[0] != ap(aWeb.IP(), 8080).String() {
			t.Errorf("FWM %s has real servers %v, want [%s]:\n%s", mark, rs, ap(aWeb.IP(), 8080), out)
		}
	}
	t.Logf("node-b ipvsadm -Ln:\n%s\nipset list KIPVS-SHORT-CIRCUIT:\n%s", out, Run(t, bed.B.NS, "ipset", "list", "KIPVS-SHORT-CIRCUIT"))

	// Outside clients still get the Local policy: node-b refuses them.
	mustNotServe(t, bed.External, ap(bed.B.IP, 30086), "node-b has no local endpoint; outside clients are not short-circuited")

	// A pod on node-b reaches node-b's NodePort and the load-balancer IP
	// (bound on node-b's kipvs0), TCP and UDP, served by node-a's pod
	// with the pod's own address kept.
	for _, addr := range []netip.AddrPort{ap(bed.B.IP, 30086), ap(lbIP, 80), ap(bed.A.IP, 30086)} {
		tally := mustServe(t, bClient.Name, addr, 3, aWeb)
		if src := tally.Replies[0].Source.Addr(); src != bClient.IP() {
			t.Errorf("%s from a pod: the backend saw %s, want the pod's address %s", addr, src, bClient.IP())
		}
	}
	for _, addr := range []netip.AddrPort{ap(bed.B.IP, 30087), ap(lbIP, 53)} {
		tally := CountUDP(bClient.Name, addr, 3)
		if tally.Failed > 0 || tally.ByName[aWeb.Name] != 3 {
			t.Errorf("UDP %s from a pod on node-b: %s; want 3 answers from %s", addr, tally, aWeb.Name)
		} else if src := tally.Replies[0].Source.Addr(); src != bClient.IP() {
			t.Errorf("UDP %s from a pod: the backend saw %s, want %s", addr, src, bClient.IP())
		}
	}

	// node-b itself reaches them too, masqueraded to its own address (its
	// source for the load-balancer IP would be that IP, on kipvs0).
	for _, addr := range []netip.AddrPort{ap(bed.B.IP, 30086), ap(lbIP, 80)} {
		tally := mustServe(t, bed.B.NS, addr, 3, aWeb)
		if src := tally.Replies[0].Source.Addr(); src != bed.B.IP {
			t.Errorf("%s from node-b: the backend saw %s, want node-b's address %s", addr, src, bed.B.IP)
		}
	}

	// A restart keeps the marks, and a connection through a
	// short-circuit virtual server lives through it.
	conn, err := DialTCP(bClient.Name, ap(lbIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, err := conn.Ask(); err != nil || r.Name != aWeb.Name {
		t.Fatalf("held connection: %+v, %v", r, err)
	}
	before := Run(t, bed.B.NS, "ipvsadm", "-Sn")
	agentB.Stop()
	bed.B.StartAgent(t, objs)
	time.Sleep(3 * time.Second) // past one full resync (--sync-period 2s)
	if after := Run(t, bed.B.NS, "ipvsadm", "-Sn"); after != before {
		t.Errorf("a restart changed node-b's IPVS table:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if r, err := conn.Ask(); err != nil || r.Name != aWeb.Name {
		t.Errorf("the connection held through the restart: %+v, %v", r, err)
	}

	// Once the Service is Cluster, the firewall-mark virtual servers and
	// their marks go.
	svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
	svc.Spec.HealthCheckNodePort = 0
	objs.Put("lb", svc)
	bed.B.WaitIPVS(t, "!"+fwmLine("rr"), RSLine(ap(aWeb.IP(), 8080)))
	for _, set := range []string{"KIPVS-SHORT-CIRCUIT", "KIPVS-OWNED-MARK"} {
		if out := Run(t, bed.B.NS, "ipset", "list", set); strings.Contains(out, "Members:\n") && !strings.HasSuffix(strings.TrimSpace(out), "Members:") {
			t.Errorf("%s still has members after the Service became Cluster:\n%s", set, out)
		}
	}
}
