//go:build vmguest

// Package guestbench is the guest side of the VM benchmark (make bench-vm,
// ../README.md). Its one test, TestBench, runs in a VM the host driver
// (../main.go) booted for one proxy in one situation, or for the floor,
// and prints what it measured as one line (measure.ResultPrefix + JSON)
// for the host to read. It asserts nothing about the figures: it fails
// only when a run cannot finish (the proxy exits, IPVS never holds what
// the API says, a change never arrives), and then says what it saw.
//
// The host chooses the run through the environment (see params).
package guestbench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
	"github.com/kube-ipvs/kube-ipvs/test/vm/guest"
)

// params is one run, from the environment the host gives the guest.
type params struct {
	proxy, situation string
	layout           measure.Layout
	syncPeriod       time.Duration // kube-ipvs' ipvs.syncPeriod
	spread           time.Duration // the changes are made over this long
	timeout          time.Duration // for IPVS to hold everything, and for each change
	idleLimit        time.Duration
}

func readParams(t *testing.T) params {
	t.Helper()
	env := func(k string) string {
		v := os.Getenv(k)
		if v == "" {
			t.Fatalf("%s is not set: TestBench runs only under the benchmark's host driver (make bench-vm)", k)
		}
		return v
	}
	num := func(k string) int {
		n, err := strconv.Atoi(env(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return n
	}
	dur := func(k string) time.Duration {
		d, err := time.ParseDuration(env(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return d
	}
	p := params{
		proxy: env("KIPVS_BENCH_PROXY"), situation: os.Getenv("KIPVS_BENCH_SITUATION"), // none for the floor
		layout:     measure.Layout{Services: num("KIPVS_BENCH_SERVICES"), Endpoints: num("KIPVS_BENCH_ENDPOINTS"), Changes: num("KIPVS_BENCH_CHANGES")},
		syncPeriod: dur("KIPVS_BENCH_SYNC_PERIOD"), spread: dur("KIPVS_BENCH_SPREAD"),
		timeout: dur("KIPVS_BENCH_TIMEOUT"), idleLimit: dur("KIPVS_BENCH_IDLE_LIMIT"),
	}
	if err := p.layout.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBench measures one run and prints its measure.Result.
func TestBench(t *testing.T) {
	p := readParams(t)
	var r measure.Result
	switch p.proxy {
	case measure.Floor:
		r = runFloor(t, p)
	case measure.KubeIPVS, measure.KubeProxy:
		r = runProxy(t, p)
	default:
		t.Fatalf("KIPVS_BENCH_PROXY=%q: want floor, kube-ipvs or kube-proxy", p.proxy)
	}
	r.Services, r.Endpoints = p.layout.Services, p.layout.Endpoints
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", measure.ResultPrefix, b)
}

// proxy is how one proxy is run and read.
type proxy struct {
	metrics   string // /metrics URL
	histogram string // its sync-duration histogram whose every sync is full
}

var proxies = map[string]proxy{
	measure.KubeIPVS:  {"http://127.0.0.1:10249/metrics", "kubeproxy_sync_full_proxy_rules_duration_seconds"},
	measure.KubeProxy: {"http://" + guest.KubeProxyMetrics + "/metrics", "kubeproxy_sync_proxy_rules_duration_seconds"}, // IPVS mode: every sync is full
}

// runProxy runs the proxy in its situation: join (the objects are there
// before it starts) or burst (the host creates them once it has synced
// with none), then the changes.
func runProxy(t *testing.T, p params) measure.Result {
	api := guest.NeedAPI(t)
	r := measure.Result{Proxy: p.proxy, Situation: p.situation, IdleLimit: p.idleLimit}
	var (
		proc             *guest.Proc
		origin, busyFrom time.Time // Time's origin; where its CPU starts counting
		cpu0             time.Duration
		lastCreate       <-chan burstDone
	)
	switch p.situation {
	case measure.Join:
		origin = time.Now()
		proc = startProxy(t, p)
		defer profileKubeIPVS(t, p)()
		busyFrom = origin
	case measure.Burst:
		proc = startProxy(t, p)
		waitSynced(t, proc, proxies[p.proxy].metrics, p.timeout)
		began := time.Now()
		if _, _, ok := waitIdle(t, proc, p.idleLimit); !ok {
			t.Fatalf("%s never went idle (%v) after its first sync with no Services", p.proxy, p.idleLimit)
		}
		t.Logf("%s synced with no Services and went idle %v later", p.proxy, time.Since(began).Round(time.Millisecond))
		cpu0 = cpuOf(t, proc)
		busyFrom = time.Now()
		lastCreate = askBurst(t, api, p.timeout)
	default:
		t.Fatalf("KIPVS_BENCH_SITUATION=%q: want join or burst", p.situation)
	}
	converged, late := waitConverged(t, p, proc, busyFrom)
	r.TimeError = late
	if p.situation == measure.Burst {
		done := <-lastCreate
		if done.err != nil {
			t.Fatal(done.err)
		}
		origin = busyFrom.Add(done.after)
		r.TimeError += consoleDelay
		r.Notes = append(r.Notes, fmt.Sprintf("the host created %d objects in %v after it read the request",
			2*p.layout.Services, done.after.Round(time.Millisecond)))
	}
	r.Time = converged.Sub(origin)
	t.Logf("%s %s: IPVS held all %d virtual servers and %d real servers %v after %s",
		p.proxy, p.situation, p.layout.Services, p.layout.Services*p.layout.Endpoints, r.Time.Round(time.Millisecond),
		map[string]string{measure.Join: "it started", measure.Burst: "the last create"}[p.situation])

	idleAt, cpuAt, ok := waitIdle(t, proc, p.idleLimit)
	if ok {
		r.IdleAfter = idleAt.Sub(origin)
	} else {
		r.IdleAfter = -1
		cpuAt = cpuOf(t, proc)
		t.Logf("%s did not go idle within %v", p.proxy, p.idleLimit)
	}
	r.CPU = cpuAt - cpu0
	r.PeakRSS = peakRSSOf(t, proc)
	logRSS(t, proc)
	if p.situation == measure.Burst {
		r.Notes = append(r.Notes, fmt.Sprintf("CPU counted from the first create, %v before the last", origin.Sub(busyFrom).Round(time.Millisecond)))
	}

	res := followResyncs(proxies[p.proxy])
	r.Changes, r.WarmUp = makeChanges(t, api, p, proc)
	if r.WarmUp > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("a warm-up change, before the timed ones, took %s (the first change after start, not counted)", measure.Short(r.WarmUp)))
	}
	res.stop()
	r.Resyncs, r.ResyncMean, r.ResyncMax, r.ResyncMaxExact = res.r.Count(), res.r.Mean(), res.r.Max(), res.r.MaxExact()
	checkFinal(t, p, proc)
	printSteps(p, proc)
	return r
}

// startProxy starts kube-ipvs or upstream kube-proxy on the node, the way
// an operator would run it (info logging, default pace but kube-ipvs'
// syncPeriod), and returns at once.
func startProxy(t *testing.T, p params) *guest.Proc {
	dir := t.TempDir()
	switch p.proxy {
	case measure.KubeIPVS:
		cfg := filepath.Join(dir, "kube-ipvs.yaml")
		guest.WriteFile(t, cfg, kubeIPVSConfig(p))
		args := []string{guest.AgentBin, "--config", cfg}
		if env := strings.Fields(os.Getenv("KIPVS_BENCH_KUBE_IPVS_ENV")); len(env) > 0 {
			// bench -kube-ipvs-env: for kube-ipvs only, through busybox env.
			args = append(append([]string{"env"}, env...), args...)
		}
		return guest.Start(t, guest.Node, args...)
	default:
		guest.NeedKubeProxy(t)
		cfg := filepath.Join(dir, "kube-proxy.yaml")
		// Upstream's default verbosity, as kubeadm runs it.
		guest.WriteFile(t, cfg, strings.Replace(guest.KubeProxyConfig(), "verbosity: 2", "verbosity: 0", 1))
		return guest.Start(t, guest.Node, guest.KubeProxyBin, "--config", cfg)
	}
}

// kubeIPVSConfig is kube-ipvs' configuration: the ServiceAccount's
// kubeconfig, the guest tests' cluster CIDR, the apiserver's Service CIDR
// and a short syncPeriod so that the changes meet full resyncs.
func kubeIPVSConfig(p params) string {
	return fmt.Sprintf(`apiVersion: kube-ipvs.io/v1alpha1
kind: KubeIPVSConfiguration
nodeName: %s
kubeconfig: %s
clusterCIDR: %s
serviceCIDRs: [10.96.0.0/16]
ipvs:
  scheduler: rr
  syncPeriod: %s
logging:
  level: %s
`, guest.NodeName, guest.AgentKubeconfig, guest.ClusterCIDR, p.syncPeriod, logLevel())
}

// logLevel is kube-ipvs' logging level: info, or debug when the host
// asked for the full syncs' steps (bench -steps).
func logLevel() string {
	if os.Getenv("KIPVS_BENCH_STEPS") != "" {
		return "debug"
	}
	return "info"
}

// printSteps prints kube-ipvs' log (debug level) but its per-operation
// lines when the host asked for it (bench -steps): when each full sync
// step ran and how long it took, so which step a slow change waited for.
// Without -steps it prints only what is not a log line, such as the Go
// runtime's GODEBUG=gctrace=1 lines (bench -kube-ipvs-env).
func printSteps(p params, proc *guest.Proc) {
	if p.proxy != measure.KubeIPVS {
		return
	}
	steps := os.Getenv("KIPVS_BENCH_STEPS") != ""
	for _, line := range strings.Split(proc.Output(), "\n") {
		switch {
		case line == "", strings.Contains(line, `"msg":"apply"`):
		case steps, !strings.HasPrefix(line, "{"):
			fmt.Printf("log| %s\n", line)
		}
	}
}

// waitSynced waits until the proxy's metrics show a completed IPv4 sync.
func waitSynced(t *testing.T, proc *guest.Proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 5 * time.Second}
	last := "nothing yet"
	for {
		if done, err := proc.Exited(); done {
			t.Fatalf("the proxy exited (%v):\n%s", err, tail(proc.Output(), 40))
		}
		body, err := get(c, url)
		if err != nil {
			last = err.Error()
		} else if v, ok := guest.MetricValue(body, `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}`); ok && v > 0 {
			return
		} else {
			last = "no completed IPv4 sync"
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not sync within %v: %s\n%s", timeout, last, tail(proc.Output(), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// burstDone is the host's answer to bench-create: how long after it read
// the request its last create returned.
type burstDone struct {
	after time.Duration
	err   error
}

// BurstConfigMap is where the host writes bench-create's answer.
const BurstConfigMap = "kipvs-bench-burst"

// consoleDelay bounds how long the host takes to read a console line:
// vmrun polls the console every 100 ms.
const consoleDelay = 100 * time.Millisecond

// askBurst asks the host to create every object (KIPVS-HOST: bench-create)
// and returns at once; the channel gets the host's answer, which it
// writes in ConfigMap BurstConfigMap once its last create returned.
func askBurst(t *testing.T, api *guest.API, timeout time.Duration) <-chan burstDone {
	t.Helper()
	guest.AskHost(t, "bench-create")
	ch := make(chan burstDone, 1)
	go func() {
		deadline := time.Now().Add(timeout)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cm, err := api.Client.CoreV1().ConfigMaps(measure.Namespace).Get(ctx, BurstConfigMap, metav1.GetOptions{})
			cancel()
			if err == nil {
				ns, perr := strconv.ParseInt(cm.Data["lastCreateAfterNanos"], 10, 64)
				if perr != nil || cm.Data["error"] != "" {
					ch <- burstDone{err: fmt.Errorf("the host's burst failed: %q %v", cm.Data["error"], perr)}
				} else {
					ch <- burstDone{after: time.Duration(ns)}
				}
				return
			}
			if time.Now().After(deadline) {
				ch <- burstDone{err: fmt.Errorf("no ConfigMap %s after %v: %v", BurstConfigMap, timeout, err)}
				return
			}
			time.Sleep(time.Second)
		}
	}()
	return ch
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
