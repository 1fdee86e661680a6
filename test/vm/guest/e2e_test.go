//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// The e2e tests run the real kube-ipvs binary with the kube-ipvs
// ServiceAccount's token and the RBAC from deploy/ against the real
// kube-apiserver on the host (test/vm/e2e starts it and gives the guest its
// kubeconfigs). The test plays kubectl, kubelet and the EndpointSlice
// controller through the API; the agent sees only what the API says.
//
//	go test -tags vmtest -v ./test/vm/e2e

var e2eHTTP = Port{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, Target: BackendPort}

// outage is how long TestE2EAPIOutage keeps kube-apiserver stopped.
func outage(t *testing.T) time.Duration {
	s := os.Getenv("KIPVS_GUEST_OUTAGE")
	if s == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("KIPVS_GUEST_OUTAGE=%q: %v", s, err)
	}
	return d
}

func podsOf(ps ...*APIPod) []*Pod {
	out := make([]*Pod, len(ps))
	for i, p := range ps {
		out[i] = p.Pod
	}
	return out
}

func rsOf(p *APIPod) netip.AddrPort { return netip.AddrPortFrom(p.IP(), BackendPort) }

// servedBy is the ipvsadm pattern list "these pods are the real servers,
// and those are not".
func servedBy(in []*APIPod, out ...*APIPod) []string {
	var ps []string
	for _, p := range in {
		ps = append(ps, RSLine(rsOf(p)))
	}
	for _, p := range out {
		ps = append(ps, "!"+AnyRSLine(rsOf(p)))
	}
	return ps
}

// checkAgent fails the test if the agent has exited or was refused by the
// apiserver.
func checkAgent(t *testing.T, agent *Proc) {
	t.Helper()
	if done, err := agent.Exited(); done {
		t.Fatalf("kube-ipvs exited (%v):\n%s", err, tail(agent.Output(), 40))
	}
	for _, bad := range []string{"forbidden", "Unauthorized"} {
		if strings.Contains(agent.Output(), bad) {
			t.Errorf("kube-ipvs was refused by the apiserver (%q in its log): RBAC from deploy/ too narrow?\n%s",
				bad, tail(agent.Output(), 40))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestE2EServiceLifecycle(t *testing.T) {
	api := NeedAPI(t)
	CleanupAgent(t)
	AddPod(t, "client", outsider)
	pods := []*APIPod{api.StartPod(t, "web", 1), api.StartPod(t, "web", 2), api.StartPod(t, "web", 3)}
	svc := api.CreateService(t, "web", e2eHTTP)
	vip := ClusterIP(svc)
	if !netip.MustParsePrefix("10.96.0.0/16").Contains(vip) {
		t.Fatalf("the apiserver allocated ClusterIP %s, outside 10.96.0.0/16", vip)
	}
	vs := netip.AddrPortFrom(vip, 80)
	slices := api.Slices(t, svc)
	slice := slices.Sync(t)
	t.Logf("Service web got ClusterIP %s; EndpointSlice %s has %d endpoints", vip, slice.Name, len(slice.Endpoints))

	agent := StartAPIAgent(t, "--virtual-server-metrics")
	out := WaitIPVSFor(t, 30*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	t.Logf("ipvsadm -Ln -t %s:\n%s", vs, out)
	if !VIPBound(t, vip) {
		t.Errorf("%s is not bound on kipvs0", vip)
	}
	wantEven(t, CountTCP("client", vs, 90), podsOf(pods...), 30)

	t.Log("scale down: pod3 terminating (its open connection drains), then gone")
	held := connTo(t, vs, pods[2].Name)
	api.TerminatePod(t, pods[2])
	slices.Sync(t)
	WaitIPVSFor(t, 30*time.Second, &vs, append(servedBy(pods[:2]), DrainLine(rsOf(pods[2])))...)
	wantEven(t, CountTCP("client", vs, 60), podsOf(pods[:2]...), 30)
	if r, err := held.Ask(); err != nil || r.Name != pods[2].Name {
		t.Errorf("the connection to terminating pod3 did not drain: %+v, %v", r, err)
	}
	api.RemovePod(t, pods[2])
	if n := len(slices.Sync(t).Endpoints); n != 2 {
		t.Errorf("EndpointSlice has %d endpoints after pod3 went, want 2", n)
	}
	// The pod is gone (its process stopped, which closed the connection)
	// and so is its endpoint: the real server stays at weight 0 while the
	// kernel still counts the closed connection, and takes nothing new.
	WaitIPVSFor(t, 30*time.Second, &vs, append(servedBy(pods[:2]), DrainLine(rsOf(pods[2])))...)
	held.Close()

	t.Log("scale up: pod4")
	pod4 := api.StartPod(t, "web", 4)
	slices.Sync(t)
	now := []*APIPod{pods[0], pods[1], pod4}
	WaitIPVSFor(t, 30*time.Second, &vs, append(servedBy(now), "!"+RSLine(rsOf(pods[2])))...)
	wantEven(t, CountTCP("client", vs, 90), podsOf(now...), 30)
	checkProgrammingMetrics(t)
	checkVirtualServerMetrics(t, vs, 90+60+90)

	t.Log("delete the Service and, as the garbage collector would, its EndpointSlice")
	api.DeleteService(t, svc)
	slices.Delete(t)
	WaitIPVSFor(t, 30*time.Second, nil, "!"+regexp.QuoteMeta(vs.String()))
	waitUnbound(t, vip)
	if r, err := AskTCP("client", vs); err == nil {
		t.Errorf("%s still answers after its Service was deleted: %+v", vs, r)
	}
	checkAgent(t, agent)
}

// waitUnbound waits until addr is off kipvs0.
func waitUnbound(t *testing.T, addr netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for VIPBound(t, addr) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound on kipvs0 after its Service was deleted", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestE2EAPIOutage(t *testing.T) {
	api := NeedAPI(t)
	CleanupAgent(t)
	AddPod(t, "client", outsider)
	pods := []*APIPod{api.StartPod(t, "echo", 1), api.StartPod(t, "echo", 2), api.StartPod(t, "echo", 3)}
	svc := api.CreateService(t, "echo", e2eHTTP)
	vs := netip.AddrPortFrom(ClusterIP(svc), 80)
	slices := api.Slices(t, svc)
	slices.Sync(t)
	agent := StartAPIAgent(t)
	WaitIPVSFor(t, 30*time.Second, &vs, servedBy(pods)...)
	wantEven(t, CountTCP("client", vs, 30), podsOf(pods...), 10)
	before := Run(t, Node, "ipvsadm", "-Sn")
	// Checked now: while kube-apiserver restarts, a request may be refused
	// before its RBAC caches have synced, which says nothing about deploy/.
	checkAgent(t, agent)

	d := outage(t)
	t.Logf("stopping kube-apiserver for %v", d)
	api.StopAPIServer(t)
	began := time.Now()
	rounds := 0
	for time.Since(began) < d {
		wantEven(t, CountTCP("client", vs, 9), podsOf(pods...), 3)
		if now := Run(t, Node, "ipvsadm", "-Sn"); now != before {
			t.Errorf("IPVS changed during the outage:\nbefore:\n%s\nnow:\n%s", before, now)
		}
		if done, err := agent.Exited(); done {
			t.Fatalf("kube-ipvs exited during the outage (%v):\n%s", err, tail(agent.Output(), 40))
		}
		rounds++
		time.Sleep(5 * time.Second)
	}
	t.Logf("served %d rounds of 9 requests during %v without the apiserver", rounds, time.Since(began).Round(time.Second))
	if rounds < 2 {
		t.Errorf("only %d rounds of traffic during the outage", rounds)
	}

	api.StartAPIServer(t)
	back := time.Now()
	t.Logf("kube-apiserver back after %v; changing objects", back.Sub(began).Round(time.Second))
	api.RemovePod(t, pods[2])
	slices.Sync(t)
	late := api.CreateService(t, "late", e2eHTTP)
	lateVS := netip.AddrPortFrom(ClusterIP(late), 80)
	pod5 := api.StartPod(t, "late", 5)
	api.Slices(t, late).Sync(t)
	// client-go's reflectors back off up to 30 s (plus jitter) while the
	// apiserver is gone, so the first relist may take that long.
	// pod3's real server goes, or drains at weight 0 while the kernel
	// still counts the closed connections of the rounds above (TIME_WAIT).
	WaitIPVSFor(t, 90*time.Second, &vs, append(servedBy(pods[:2]), "!"+RSLine(rsOf(pods[2])))...)
	WaitIPVSFor(t, 30*time.Second, &lateVS, append(servedBy([]*APIPod{pod5}), VSLine("TCP", lateVS, "rr"))...)
	t.Logf("both changes programmed %v after kube-apiserver came back", time.Since(back).Round(100*time.Millisecond))
	wantEven(t, CountTCP("client", vs, 20), podsOf(pods[:2]...), 10)
	wantEven(t, CountTCP("client", lateVS, 5), podsOf(pod5), 5)
	if done, err := agent.Exited(); done {
		t.Fatalf("kube-ipvs exited (%v):\n%s", err, tail(agent.Output(), 40))
	}
}

// connTo opens connections to vs until one lands on the named pod, and
// returns it; the others are closed.
func connTo(t *testing.T, vs netip.AddrPort, pod string) *Conn {
	t.Helper()
	for range 10 {
		c, err := DialTCP("client", vs)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := c.Ask(); err == nil && r.Name == pod {
			return c
		}
		c.Close()
	}
	t.Fatalf("no connection to %s landed on %s", vs, pod)
	return nil
}

// checkProgrammingMetrics scrapes the agent: the EndpointSlice changes
// made through the apiserver (stamped with last-change-trigger-time, as
// the EndpointSlice controller does) are counted by kube-proxy's network
// programming histogram, each within a few seconds, and the Service and
// endpoint change counters and the build info are there.
func checkProgrammingMetrics(t *testing.T) {
	t.Helper()
	m := ScrapeMetrics(t, Node, MetricsAddr)
	count, ok := MetricValue(m, `kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}`)
	sum, _ := MetricValue(m, `kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}`)
	// The slice was written three times after the agent started: pod3
	// terminating, pod3 gone, pod4 (the first write came before it).
	if !ok || count < 3 || sum/count > 30 {
		t.Errorf("network programming histogram: count %v (present %v), mean %.2fs; want at least 3 changes, each under 30 s", count, ok, sum/count)
	}
	t.Logf("network programming: %v changes, mean %.3fs", count, sum/count)
	for _, series := range []string{"kubeproxy_sync_proxy_rules_endpoint_changes_total", "kubeproxy_sync_proxy_rules_service_changes_total"} {
		if v, ok := MetricValue(m, series); !ok || v < 1 {
			t.Errorf("%s = %v (present %v), want at least 1", series, v, ok)
		}
	}
	if !strings.Contains(m, "kube_ipvs_build_info{") {
		t.Errorf("no kube_ipvs_build_info in the scrape")
	}
}

// checkVirtualServerMetrics scrapes the agent (run with
// --virtual-server-metrics) until vs's connection counter, labelled with
// its Service, has counted at least least connections (the kernel folds
// its per-CPU counters into the totals every 2 s), and checks it is what
// `ipvsadm -Ln --stats` says.
func checkVirtualServerMetrics(t *testing.T, vs netip.AddrPort, least int) {
	t.Helper()
	series := fmt.Sprintf(`kube_ipvs_virtual_server_connections_total{namespace="default",port="http",service="web",virtual_server="TCP/%s"}`, vs)
	var v float64
	var ok bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if v, ok = MetricValue(ScrapeMetrics(t, Node, MetricsAddr), series); ok && v >= float64(least) {
			break
		}
	}
	if !ok || v < float64(least) {
		t.Fatalf("%s = %v (present %v), want at least %d", series, v, ok, least)
	}
	if kernel := vsConns(t, vs); kernel < int64(v) {
		t.Errorf("%s = %v, more than ipvsadm's %d", series, v, kernel)
	}
	t.Logf("%s %v", series, v)
}
