package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
)

// ToBeDeletedTaint is the taint the cluster autoscaler puts on a node it is
// about to remove (KEP-3836): /healthz answers 503 on such a node, so that
// load balancers drain it first.
const ToBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// ProxyHealth is the health of the proxy itself, served as kube-proxy's
// ProxyHealthServer serves it on its healthz port (10256):
//
//	GET /livez   200 while no change has waited longer than the timeout
//	             for a successful sync, 503 once one has
//	GET /healthz the same, and 503 too while this node is being deleted or
//	             carries the ToBeDeletedByClusterAutoscaler taint (or is
//	             not known yet)
//
// Both answer JSON like kube-proxy v1.37, with its headers:
//
//	{"lastUpdated":"2026-12-02T00:40:01.5Z","currentTime":"2026-12-02T00:40:01.5Z",
//	 "nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"…","healthy":true}}}
//
// (nodeEligible on /healthz only). When healthy, lastUpdated is the current
// time, as kube-proxy reports it for compatibility. It is fed by the
// runner (Queued, Synced) and the Node informer (SetNode), and safe for
// concurrent use.
type ProxyHealth struct {
	clock   clock.PassiveClock
	timeout time.Duration
	family  v1.IPFamily

	mu sync.Mutex
	// lastUpdated is when the last sync succeeded (or the runner started);
	// zero before that, when the proxy counts as starting up and healthy.
	lastUpdated time.Time
	// queued is when the oldest change still waiting for a successful
	// sync came; zero when none waits.
	queued time.Time
	node   *v1.Node
	// served, when set, hears each answer (kube-proxy's
	// proxy_healthz_total and proxy_livez_total).
	served func(path string, code int)
}

// NewProxyHealth returns the health of a proxy of one family that must sync
// a change within timeout (kube-proxy: 2 × syncPeriod).
func NewProxyHealth(clk clock.PassiveClock, timeout time.Duration, family v1.IPFamily) *ProxyHealth {
	return &ProxyHealth{clock: clk, timeout: timeout, family: family}
}

// Started records that the sync loop started: from now on a change that
// waits too long makes the proxy unhealthy. Changes that came before (the
// caches' first lists) wait from now, as in kube-proxy, whose clock starts
// once it is initialized.
func (h *ProxyHealth) Started(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastUpdated, h.queued = at, time.Time{}
}

// Queued records that a change came that needs a sync; only the oldest
// waiting one counts.
func (h *ProxyHealth) Queued(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.queued.IsZero() {
		h.queued = at
	}
}

// Synced records the end of a sync: a successful one clears what waited.
func (h *ProxyHealth) Synced(at time.Time, _ bool, _ time.Duration, err error) {
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queued, h.lastUpdated = time.Time{}, at
}

// SetNode records this node's Node object (nil: not known).
func (h *ProxyHealth) SetNode(n *v1.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.node = n
}

// Healthy reports whether no change has waited longer than the timeout.
func (h *ProxyHealth) Healthy() bool { return h.report().Healthy }

// healthReport is the JSON body, field for field kube-proxy's ProxyHealth.
type healthReport struct {
	LastUpdated  time.Time                    `json:"lastUpdated"`
	CurrentTime  time.Time                    `json:"currentTime"`
	NodeEligible *bool                        `json:"nodeEligible,omitempty"`
	Healthy      bool                         `json:"healthy"`
	Status       map[v1.IPFamily]familyReport `json:"status,omitempty"`
}

type familyReport struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

func (h *ProxyHealth) report() healthReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock.Now()
	r := healthReport{CurrentTime: now, Healthy: true, Status: map[v1.IPFamily]familyReport{}}
	if h.lastUpdated.IsZero() {
		return r // starting up
	}
	r.LastUpdated = h.lastUpdated
	r.Healthy = h.queued.IsZero() || now.Sub(h.queued) < h.timeout
	r.Status[h.family] = familyReport{LastUpdated: h.lastUpdated, Healthy: r.Healthy}
	return r
}

// nodeEligible reports whether this node may take load-balancer traffic:
// known, not being deleted, not tainted for deletion.
func (h *ProxyHealth) nodeEligible() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.node == nil || !h.node.DeletionTimestamp.IsZero() {
		return false
	}
	for _, t := range h.node.Spec.Taints {
		if t.Key == ToBeDeletedTaint {
			return false
		}
	}
	return true
}

// CountAnswers has f hear the path and status code of every answer. Call
// it before Handler.
func (h *ProxyHealth) CountAnswers(f func(path string, code int)) { h.served = f }

// Handler serves /healthz and /livez.
func (h *ProxyHealth) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		r := h.report()
		eligible := h.nodeEligible()
		r.NodeEligible = &eligible
		h.write(w, "/healthz", r, r.Healthy && eligible)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		r := h.report()
		h.write(w, "/livez", r, r.Healthy)
	})
	return mux
}

func (h *ProxyHealth) write(w http.ResponseWriter, path string, r healthReport, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusServiceUnavailable
	if ok {
		r.LastUpdated = r.CurrentTime
		code = http.StatusOK
	}
	w.WriteHeader(code)
	if h.served != nil {
		h.served(path, code)
	}
	body, _ := json.Marshal(r)
	_, _ = w.Write(body)
}

// ServeProxyHealth binds addr ("0.0.0.0:10256") and serves h there until
// ctx is done. The bind is done before it returns, and its error returned;
// the caller logs it and goes on: the data plane does not depend on it.
// Once serving, an error ends the server and is given to failed.
func ServeProxyHealth(ctx context.Context, addr string, h *ProxyHealth, failed func(error)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serving proxy health on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed(fmt.Errorf("serving proxy health on %s: %w", addr, err))
		}
	}()
	return nil
}
