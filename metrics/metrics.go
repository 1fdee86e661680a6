// Package metrics exports what kube-ipvs does as Prometheus metrics: the
// kubeproxy_* series of kube-proxy v1.37, with its names, help, buckets and
// labels, so that dashboards and alerts made for kube-proxy keep working,
// and kube-ipvs' own kube_ipvs_* series.
//
// A Metrics is a proxier.Observer (the runner's syncs), a proxier.Metrics
// (the proxier's changes, operations and tallies) and the hook of the
// proxy health server. Every method only updates in-memory collectors: a
// scrape never waits for a sync, nor a sync for a scrape.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kube-ipvs/kube-ipvs/proxier"
)

const (
	kubeProxy = "kubeproxy"
	own       = "kube_ipvs"
)

// syncBuckets are kube-proxy's buckets for sync durations: 1 ms doubling
// to about 16 s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// programmingBuckets are kube-proxy's buckets for network programming
// latency: 0.25 s and 0.5 s, every second to 59 s, every 5 s to 115 s,
// every 30 s to 5 min.
func programmingBuckets() []float64 {
	var b []float64
	b = append(b, prometheus.LinearBuckets(0.25, 0.25, 2)...)
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	return append(b, prometheus.LinearBuckets(120, 30, 7)...)
}

// Build identifies the running binary, for kube_ipvs_build_info.
type Build struct {
	Version, Commit, GoVersion string
}

// Metrics holds every collector, in a registry of its own.
type Metrics struct {
	reg    *prometheus.Registry
	family string

	syncAll, syncFull, syncPartial *prometheus.HistogramVec
	lastSynced, lastQueued         *prometheus.GaugeVec
	programming                    *prometheus.HistogramVec
	serviceTotal, endpointTotal    prometheus.Counter
	servicePending, endpointPend   prometheus.Gauge
	noLocal                        *prometheus.GaugeVec
	healthz, livez                 *prometheus.CounterVec

	skipped      *prometheus.CounterVec
	operations   *prometheus.CounterVec
	syncFailures *prometheus.CounterVec
	draining     prometheus.Gauge
	failing      prometheus.Gauge
}

var (
	_ proxier.Observer = (*Metrics)(nil)
	_ proxier.Metrics  = (*Metrics)(nil)
)

// New returns the metrics of a proxier of family ("IPv4" or "IPv6"),
// with the Go runtime's and the process's collectors and build info.
func New(family string, build Build) *Metrics {
	family = strings.TrimSuffix(family, "Protocol")
	m := &Metrics{reg: prometheus.NewRegistry(), family: family}
	byFamily := []string{"ip_family"}
	histogram := func(subsystem, name, help string, buckets []float64) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Subsystem: subsystem, Name: name, Help: help, Buckets: buckets}, byFamily)
		m.reg.MustRegister(h)
		return h
	}
	gauge := func(subsystem, name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: subsystem, Name: name, Help: help}, labels)
		m.reg.MustRegister(g)
		return g
	}
	counter := func(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: subsystem, Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}

	m.syncAll = histogram(kubeProxy, "sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", syncBuckets)
	m.syncFull = histogram(kubeProxy, "sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs", syncBuckets)
	m.syncPartial = histogram(kubeProxy, "sync_partial_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for partial resyncs", syncBuckets)
	m.lastSynced = gauge(kubeProxy, "sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced", byFamily...)
	m.lastQueued = gauge(kubeProxy, "sync_proxy_rules_last_queued_timestamp_seconds", "The last time a sync of proxy rules was queued", byFamily...)
	m.programming = histogram(kubeProxy, "network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds", programmingBuckets())
	m.serviceTotal = counter(kubeProxy, "sync_proxy_rules_service_changes_total", "Cumulative proxy rules Service changes").WithLabelValues()
	m.servicePending = gauge(kubeProxy, "sync_proxy_rules_service_changes_pending", "Pending proxy rules Service changes").WithLabelValues()
	m.endpointTotal = counter(kubeProxy, "sync_proxy_rules_endpoint_changes_total", "Cumulative proxy rules Endpoint changes").WithLabelValues()
	m.endpointPend = gauge(kubeProxy, "sync_proxy_rules_endpoint_changes_pending", "Pending proxy rules Endpoint changes").WithLabelValues()
	m.noLocal = gauge(kubeProxy, "sync_proxy_rules_no_local_endpoints_total", "Number of services with a Local traffic policy and no endpoints", "traffic_policy", "ip_family")
	m.healthz = counter(kubeProxy, "proxy_healthz_total", "Cumulative proxy healthz HTTP status", "code")
	m.livez = counter(kubeProxy, "proxy_livez_total", "Cumulative proxy livez HTTP status", "code")

	m.skipped = counter(own, "skipped_input_total", "Parts of Services and EndpointSlices not programmed because they are invalid or unsupported, by reason", "reason")
	m.operations = counter(own, "kernel_operations_total", "Kernel operations (IPVS, addresses, ipset members), by operation and result (ok or error)", "operation", "result")
	m.syncFailures = counter(own, "sync_failures_total", "Syncs that failed as a whole (the kernel could not be read or the rules written), by kind (full or partial)", "kind")
	m.draining = gauge(own, "draining_real_servers", "Real servers kept at weight 0 until their connections end").WithLabelValues()
	m.failing = gauge(own, "failing_services", "Services whose kernel operations failed and wait for a retry").WithLabelValues()
	info := gauge(own, "build_info", "The running kube-ipvs binary; always 1", "version", "commit", "go_version")
	info.WithLabelValues(build.Version, build.Commit, build.GoVersion).Set(1)

	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// kube-proxy exports these before the first sync, at zero.
	for _, policy := range []string{"internal", "external"} {
		m.noLocal.WithLabelValues(policy, family)
	}
	return m
}

// Registry is where the collectors are, for a handler or a test.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Started is part of proxier.Observer; nothing is exported for it.
func (m *Metrics) Started(time.Time) {}

// Queued sets the last queued timestamp.
func (m *Metrics) Queued(at time.Time) { m.lastQueued.WithLabelValues(m.family).Set(seconds(at)) }

// Synced observes a sync's duration, failed or not as kube-proxy does,
// and, when it succeeded, sets the last synced timestamp.
func (m *Metrics) Synced(at time.Time, full bool, took time.Duration, err error) {
	kind, h := "partial", m.syncPartial
	if full {
		kind, h = "full", m.syncFull
	}
	m.syncAll.WithLabelValues(m.family).Observe(took.Seconds())
	h.WithLabelValues(m.family).Observe(took.Seconds())
	if err != nil {
		m.syncFailures.WithLabelValues(kind).Inc()
		return
	}
	m.lastSynced.WithLabelValues(m.family).Set(seconds(at))
}

// ServiceChanged counts a Service event.
func (m *Metrics) ServiceChanged(pending int) {
	m.serviceTotal.Inc()
	m.servicePending.Set(float64(pending))
}

// SliceChanged counts an EndpointSlice event.
func (m *Metrics) SliceChanged(pending int) {
	m.endpointTotal.Inc()
	m.endpointPend.Set(float64(pending))
}

// ChangesTaken zeroes the pending gauges.
func (m *Metrics) ChangesTaken() {
	m.servicePending.Set(0)
	m.endpointPend.Set(0)
}

// Programmed observes the network programming latency of each trigger.
func (m *Metrics) Programmed(at time.Time, triggers []time.Time) {
	h := m.programming.WithLabelValues(m.family)
	for _, t := range triggers {
		h.Observe(at.Sub(t).Seconds())
	}
}

// Applied counts n kernel operations of one kind.
func (m *Metrics) Applied(op string, err error, n int) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.operations.WithLabelValues(op, result).Add(float64(n))
}

// Skipped counts skipped input, labelled with ReasonLabel(reason).
func (m *Metrics) Skipped(reason string) { m.skipped.WithLabelValues(ReasonLabel(reason)).Inc() }

// Tallied sets the gauges of the proxier's counts.
func (m *Metrics) Tallied(t proxier.Tallies) {
	m.noLocal.WithLabelValues("internal", m.family).Set(float64(t.NoLocalInternal))
	m.noLocal.WithLabelValues("external", m.family).Set(float64(t.NoLocalExternal))
	m.draining.Set(float64(t.Draining))
	m.failing.Set(float64(t.Failing))
}

// Served counts an answer of the proxy health server (path /healthz or
// /livez), as kube-proxy's proxy_healthz_total and proxy_livez_total.
func (m *Metrics) Served(path string, code int) {
	switch path {
	case "/healthz":
		m.healthz.WithLabelValues(fmt.Sprint(code)).Inc()
	case "/livez":
		m.livez.WithLabelValues(fmt.Sprint(code)).Inc()
	}
}

// ReasonLabel turns a skip reason ("externalIP outside
// externalIPs.allowedCIDRs") into a label value: lower case, every run of
// other characters than letters and digits one underscore
// ("externalip_outside_externalips_allowedcidrs").
func ReasonLabel(reason string) string {
	var b strings.Builder
	gap := false
	for _, r := range strings.ToLower(reason) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if gap && b.Len() > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			gap = false
			continue
		}
		gap = true
	}
	return b.String()
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Serve serves /metrics (and /healthz, "ok", as kube-proxy's metrics
// server does) on addr until ctx is done. It binds before it returns, so
// a port in use is its error; failed hears a later serving error.
func Serve(ctx context.Context, addr string, h http.Handler, failed func(error)) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metricsBindAddress %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed(fmt.Errorf("metricsBindAddress %s: %w", addr, err))
		}
	}()
	return nil
}
