//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	discovery "k8s.io/api/discovery/v1"
)

// TestDemo is the guest half of `make demo` (test/demo runs it): it tells
// what it does on stdout, which the host streams to the user's terminal.

// say prints one line of the demo's story.
func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// step starts a part of the story.
func step(format string, args ...any) { say("\n==> "+format, args...) }

// indent prints a block of command output, indented.
func indent(s string) {
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		say("    %s", l)
	}
}

func describeSlice(s *discovery.EndpointSlice) string {
	var eps []string
	for _, e := range s.Endpoints {
		name := e.Addresses[0]
		if e.TargetRef != nil {
			name = e.TargetRef.Name
		}
		state := "ready"
		switch {
		case e.Conditions.Terminating != nil && *e.Conditions.Terminating:
			state = "terminating"
		case e.Conditions.Ready == nil || !*e.Conditions.Ready:
			state = "not ready"
		}
		eps = append(eps, fmt.Sprintf("%s %s", name, state))
	}
	return fmt.Sprintf("EndpointSlice %s: %s", s.Name, strings.Join(eps, ", "))
}

// requests makes n requests from the client pod, one connection each, and
// prints which pod answered each.
func requests(t *testing.T, vs netip.AddrPort, n int) {
	t.Helper()
	step("%d requests from pod \"client\" to %s, each on a new connection", n, vs)
	tally := CountTCP("client", vs, n)
	for i, r := range tally.Replies {
		say("    request %d -> %s", i+1, r.Name)
	}
	names := make([]string, 0, len(tally.ByName))
	for name := range tally.ByName {
		names = append(names, name)
	}
	sort.Strings(names)
	var counts []string
	for _, name := range names {
		counts = append(counts, fmt.Sprintf("%s: %d", name, tally.ByName[name]))
	}
	say("    answers per pod: %s", strings.Join(counts, ", "))
	if tally.Failed != 0 {
		t.Fatalf("%d requests failed: %v", tally.Failed, tally.Errors)
	}
}

func showIPVS(t *testing.T) {
	step("ipvsadm -Ln   (one virtual server for the ClusterIP, one real server per pod; weight 0: draining)")
	indent(IPVS(t))
}

func TestDemo(t *testing.T) {
	api := NeedAPI(t)
	CleanupAgent(t)
	kernel := strings.TrimSpace(Run(t, Node, "uname", "-r"))
	say("==> In the VM: Linux %s with IPVS; kube-apiserver on the host at %s", kernel, api.Server)

	step("Creating pods pod1, pod2, pod3 (app=web) on node %s", NodeName)
	say("    each pod is a network namespace running a backend that answers with its name;")
	say("    its Pod object is created through the API with status Running/Ready, as kubelet reports it")
	var pods []*APIPod
	for n := 1; n <= 3; n++ {
		p := api.StartPod(t, "web", n)
		say("    %-5s %-11s Running, Ready", p.Name, p.IP())
		pods = append(pods, p)
	}
	AddPod(t, "client", netip.MustParseAddr("10.244.2.2"))

	step("Creating Service web (TCP port 80 -> pods' port %d) through the API", BackendPort)
	svc := api.CreateService(t, "web", Port{Name: "http", Protocol: "TCP", Port: 80, Target: BackendPort})
	vs := netip.AddrPortFrom(ClusterIP(svc), 80)
	say("    the apiserver allocated ClusterIP %s", ClusterIP(svc))
	slices := api.Slices(t, svc)
	say("    %s   (written as the EndpointSlice controller would)", describeSlice(slices.Sync(t)))

	step("Starting kube-ipvs --kubeconfig %s --node-name %s", AgentKubeconfig, NodeName)
	say("    it authenticates as ServiceAccount kube-system/kube-ipvs, with the RBAC from deploy/")
	began := time.Now()
	StartAPIAgent(t)
	WaitIPVSFor(t, 30*time.Second, &vs, servedBy(pods)...)
	say("    Services and EndpointSlices synced and programmed in %v", time.Since(began).Round(100*time.Millisecond))
	showIPVS(t)
	if strings.Contains(IPVS(t), "10.96.0.1:443") {
		say("    (10.96.0.1:443 is the \"kubernetes\" Service, the apiserver itself: no endpoints here, so no real servers)")
	}
	requests(t, vs, 9)

	step("Scaling web to 5 pods: pod4 and pod5")
	for n := 4; n <= 5; n++ {
		p := api.StartPod(t, "web", n)
		say("    %-5s %-11s Running, Ready", p.Name, p.IP())
		pods = append(pods, p)
	}
	say("    %s", describeSlice(slices.Sync(t)))
	WaitIPVSFor(t, 30*time.Second, &vs, servedBy(pods)...)
	showIPVS(t)
	requests(t, vs, 10)

	step("Scaling web back to 3 pods: deleting pod4 and pod5")
	for _, p := range pods[3:] {
		api.TerminatePod(t, p)
	}
	say("    %s", describeSlice(slices.Sync(t)))
	draining := servedBy(pods[:3])
	for _, p := range pods[3:] {
		draining = append(draining, DrainLine(rsOf(p)))
	}
	WaitIPVSFor(t, 30*time.Second, &vs, draining...)
	say("    kube-ipvs keeps the terminating pods at weight 0: their open connections drain, new ones go to the ready pods")
	showIPVS(t)
	for _, p := range pods[3:] {
		api.RemovePod(t, p)
	}
	say("    pod4 and pod5 have stopped; %s", describeSlice(slices.Sync(t)))
	// Gone from the slice, they stay at weight 0 while IPVS still counts
	// their closed connections (TIME_WAIT, InActConn), then go.
	gone := servedBy(pods[:3])
	for _, p := range pods[3:] {
		gone = append(gone, "!"+RSLine(rsOf(p)))
	}
	WaitIPVSFor(t, 30*time.Second, &vs, gone...)
	say("    their real servers stay at weight 0 until IPVS counts no connection on them (InActConn holds")
	say("    the closed ones for IPVS's 2-minute TIME_WAIT), then go; new connections reach only pod1-3")
	showIPVS(t)
	requests(t, vs, 9)

	step("Done: deleting the Service, the pods and everything kube-ipvs made (kube-ipvs --cleanup)")
}
