package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// family returns the gathered metric family called name.
func family(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// labels renders a metric's labels as name=value,….
func labels(m *dto.Metric) string {
	var s []string
	for _, l := range m.GetLabel() {
		s = append(s, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(s, ",")
}

// only returns the family's one metric, checking its labels.
func only(t *testing.T, f *dto.MetricFamily, wantLabels string) *dto.Metric {
	t.Helper()
	if len(f.GetMetric()) != 1 || labels(f.GetMetric()[0]) != wantLabels {
		var got []string
		for _, m := range f.GetMetric() {
			got = append(got, labels(m))
		}
		t.Fatalf("%s: metrics with labels %q, want one with %q", f.GetName(), got, wantLabels)
	}
	return f.GetMetric()[0]
}

// The kubeproxy_* series have kube-proxy v1.37's names, types, labels and
// buckets (pkg/proxy/metrics), so its dashboards and alerts read them.
func TestKubeProxySeriesMatchKubeProxy(t *testing.T) {
	m := New("IPv4", Build{Version: "v0.9.0", Commit: "abc", GoVersion: "go1.26.8"})
	at := time.Unix(1764644400, 500_000_000)
	m.Queued(at)
	m.Synced(at, true, 3*time.Millisecond, nil)
	m.Synced(at, false, 2*time.Second, nil)
	m.ServiceChanged(1)
	m.SliceChanged(1)
	m.SliceChanged(2)
	m.Programmed(at, []time.Time{at.Add(-1500 * time.Millisecond)})
	m.Tallied(proxier.Tallies{NoLocalInternal: 1, NoLocalExternal: 2})
	m.Served("/healthz", 503)
	m.Served("/livez", 200)

	syncBounds := []float64{0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384}
	for _, c := range []struct {
		name  string
		count uint64
	}{
		{"kubeproxy_sync_proxy_rules_duration_seconds", 2},
		{"kubeproxy_sync_full_proxy_rules_duration_seconds", 1},
		{"kubeproxy_sync_partial_proxy_rules_duration_seconds", 1},
	} {
		h := only(t, family(t, m, c.name), "ip_family=IPv4").GetHistogram()
		if h.GetSampleCount() != c.count {
			t.Errorf("%s: %d samples, want %d", c.name, h.GetSampleCount(), c.count)
		}
		var bounds []float64
		for _, b := range h.GetBucket() {
			bounds = append(bounds, b.GetUpperBound())
		}
		if !equalFloats(bounds, syncBounds) {
			t.Errorf("%s buckets %v, want %v", c.name, bounds, syncBounds)
		}
	}
	if g := only(t, family(t, m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"), "ip_family=IPv4").GetGauge(); g.GetValue() != 1764644400.5 {
		t.Errorf("last timestamp %v", g.GetValue())
	}
	if g := only(t, family(t, m, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"), "ip_family=IPv4").GetGauge(); g.GetValue() != 1764644400.5 {
		t.Errorf("last queued timestamp %v", g.GetValue())
	}

	prog := only(t, family(t, m, "kubeproxy_network_programming_duration_seconds"), "ip_family=IPv4").GetHistogram()
	buckets := prog.GetBucket()
	if len(buckets) != 80 || buckets[0].GetUpperBound() != 0.25 || buckets[1].GetUpperBound() != 0.5 ||
		buckets[2].GetUpperBound() != 1 || buckets[60].GetUpperBound() != 59 || buckets[61].GetUpperBound() != 60 ||
		buckets[72].GetUpperBound() != 115 || buckets[73].GetUpperBound() != 120 || buckets[79].GetUpperBound() != 300 {
		t.Errorf("network programming buckets are not kube-proxy's: %d of them, %v", len(buckets), buckets)
	}
	if prog.GetSampleCount() != 1 || prog.GetSampleSum() != 1.5 || buckets[2].GetCumulativeCount() != 0 || buckets[3].GetCumulativeCount() != 1 {
		t.Errorf("network programming: %d samples, sum %v; want one of 1.5 s in the 2 s bucket", prog.GetSampleCount(), prog.GetSampleSum())
	}

	for name, want := range map[string]float64{
		"kubeproxy_sync_proxy_rules_service_changes_total":    1,
		"kubeproxy_sync_proxy_rules_endpoint_changes_total":   2,
		"kubeproxy_sync_proxy_rules_service_changes_pending":  1,
		"kubeproxy_sync_proxy_rules_endpoint_changes_pending": 2,
	} {
		mt := only(t, family(t, m, name), "")
		if got := mt.GetCounter().GetValue() + mt.GetGauge().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	m.ChangesTaken()
	if v := only(t, family(t, m, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"), "").GetGauge().GetValue(); v != 0 {
		t.Errorf("endpoint changes pending %v after a sync took them", v)
	}

	noLocal := family(t, m, "kubeproxy_sync_proxy_rules_no_local_endpoints_total")
	got := map[string]float64{}
	for _, mt := range noLocal.GetMetric() {
		got[labels(mt)] = mt.GetGauge().GetValue()
	}
	if len(got) != 2 || got["ip_family=IPv4,traffic_policy=internal"] != 1 || got["ip_family=IPv4,traffic_policy=external"] != 2 {
		t.Errorf("no local endpoints %v", got)
	}
	if c := only(t, family(t, m, "kubeproxy_proxy_healthz_total"), "code=503").GetCounter(); c.GetValue() != 1 {
		t.Errorf("healthz 503 count %v", c.GetValue())
	}
	if c := only(t, family(t, m, "kubeproxy_proxy_livez_total"), "code=200").GetCounter(); c.GetValue() != 1 {
		t.Errorf("livez 200 count %v", c.GetValue())
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if d := a[i] - b[i]; d > 1e-12 || d < -1e-12 {
			return false
		}
	}
	return true
}

func TestOwnSeries(t *testing.T) {
	m := New("IPv4", Build{Version: "v0.9.0", Commit: "abc123", GoVersion: "go1.26.8"})
	if g := only(t, family(t, m, "kube_ipvs_build_info"), "commit=abc123,go_version=go1.26.8,version=v0.9.0").GetGauge(); g.GetValue() != 1 {
		t.Errorf("build info %v, want 1", g.GetValue())
	}
	m.Applied("add_service", nil, 2)
	m.Applied("add_real_server", errors.New("refused"), 1)
	ops := map[string]float64{}
	for _, mt := range family(t, m, "kube_ipvs_kernel_operations_total").GetMetric() {
		ops[labels(mt)] = mt.GetCounter().GetValue()
	}
	if len(ops) != 2 || ops["operation=add_service,result=ok"] != 2 || ops["operation=add_real_server,result=error"] != 1 {
		t.Errorf("kernel operations %v", ops)
	}
	m.Skipped(string(proxier.ReasonDisallowedExternalIP))
	if c := only(t, family(t, m, "kube_ipvs_skipped_input_total"), "reason=externalip_outside_externalips_allowedcidrs").GetCounter(); c.GetValue() != 1 {
		t.Errorf("skipped %v", c.GetValue())
	}
	m.Synced(time.Now(), true, time.Second, errors.New("reading kernel state"))
	if c := only(t, family(t, m, "kube_ipvs_sync_failures_total"), "kind=full").GetCounter(); c.GetValue() != 1 {
		t.Errorf("sync failures %v", c.GetValue())
	}
	fams, _ := m.Registry().Gather()
	for _, f := range fams {
		if f.GetName() == "kubeproxy_sync_proxy_rules_last_timestamp_seconds" {
			t.Errorf("a failed sync set the last synced timestamp: %v", f)
		}
	}
	m.Tallied(proxier.Tallies{Draining: 3, Failing: 1})
	if g := only(t, family(t, m, "kube_ipvs_draining_real_servers"), "").GetGauge(); g.GetValue() != 3 {
		t.Errorf("draining %v", g.GetValue())
	}
	if g := only(t, family(t, m, "kube_ipvs_failing_services"), "").GetGauge(); g.GetValue() != 1 {
		t.Errorf("failing %v", g.GetValue())
	}
	family(t, m, "go_goroutines")
	family(t, m, "process_resident_memory_bytes")
}

func TestReasonLabel(t *testing.T) {
	for in, want := range map[string]string{
		"unparseable clusterIP":                                  "unparseable_clusterip",
		"EndpointSlice port 0 or out of range":                   "endpointslice_port_0_or_out_of_range",
		"EndpointSlice without kubernetes.io/service-name label": "endpointslice_without_kubernetes_io_service_name_label",
		"  odd -- spacing ":                                      "odd_spacing",
	} {
		if got := ReasonLabel(in); got != want {
			t.Errorf("ReasonLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestServe(t *testing.T) {
	m := New("IPv4", Build{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	// A port in use is the caller's error, at once.
	if err := Serve(ctx, addr, m.Handler(), func(error) {}); err == nil || !strings.Contains(err.Error(), "metricsBindAddress "+addr) {
		t.Errorf("serving on a port in use: %v, want an error naming metricsBindAddress and the address", err)
	}
	l.Close()
	if err := Serve(ctx, addr, m.Handler(), func(err error) { t.Errorf("serving: %v", err) }); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/metrics": "kube_ipvs_build_info", "/healthz": "ok"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %.200s, want 200 with %q", path, resp.StatusCode, body, want)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge") {
		t.Errorf("the text format lacks the no-local-endpoints gauge:\n%.500s", rec.Body.String())
	}
}
