package healthcheck

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

// askProxy asks h's handler for path and returns the status and decoded body.
func askProxy(t *testing.T, h *ProxyHealth, path string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if ct, nosniff := rec.Header().Get("Content-Type"), rec.Header().Get("X-Content-Type-Options"); ct != "application/json" || nosniff != "nosniff" {
		t.Errorf("%s headers: Content-Type %q, X-Content-Type-Options %q", path, ct, nosniff)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s body %q: %v", path, rec.Body.String(), err)
	}
	return rec.Code, body
}

func wantProbe(t *testing.T, h *ProxyHealth, path string, code int, healthy bool) map[string]any {
	t.Helper()
	got, body := askProxy(t, h, path)
	if got != code || body["healthy"] != healthy {
		t.Errorf("%s: %d %v, want %d healthy=%v", path, got, body, code, healthy)
	}
	return body
}

func TestProxyHealthFollowsSyncs(t *testing.T) {
	start := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(start)
	h := NewProxyHealth(clk, 60*time.Second, v1.IPv4Protocol)
	h.SetNode(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})

	// Starting up: healthy, even with a change waiting.
	h.Queued(start)
	clk.Step(time.Hour)
	wantProbe(t, h, "/livez", http.StatusOK, true)

	// The loop starts with its first sync due; it fails and fails.
	h.Started(clk.Now())
	h.Queued(clk.Now())
	h.Synced(clk.Now(), true, time.Millisecond, errors.New("kernel says no"))
	clk.Step(59 * time.Second)
	body := wantProbe(t, h, "/healthz", http.StatusOK, true)
	if body["lastUpdated"] != body["currentTime"] || body["nodeEligible"] != true {
		t.Errorf("healthy /healthz: %v; want lastUpdated = currentTime and nodeEligible", body)
	}
	clk.Step(time.Second)
	body = wantProbe(t, h, "/healthz", http.StatusServiceUnavailable, false)
	if body["lastUpdated"] != start.Add(time.Hour).Format(time.RFC3339Nano) {
		t.Errorf("unhealthy /healthz lastUpdated %v, want the loop's start %s", body["lastUpdated"], start.Add(time.Hour))
	}
	if st, _ := body["status"].(map[string]any)["IPv4"].(map[string]any); st["healthy"] != false {
		t.Errorf("status: %v", body["status"])
	}
	body = wantProbe(t, h, "/livez", http.StatusServiceUnavailable, false)
	if _, ok := body["nodeEligible"]; ok {
		t.Errorf("/livez says nodeEligible: %v", body)
	}
	if h.Healthy() {
		t.Error("Healthy() with a change late")
	}

	// A later change does not restart the clock; a good sync does.
	h.Queued(clk.Now())
	wantProbe(t, h, "/livez", http.StatusServiceUnavailable, false)
	h.Synced(clk.Now(), true, time.Millisecond, nil)
	wantProbe(t, h, "/livez", http.StatusOK, true)
	clk.Step(time.Hour) // nothing waits: healthy however long
	wantProbe(t, h, "/healthz", http.StatusOK, true)
}

func TestProxyHealthNodeEligibility(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	h := NewProxyHealth(clk, time.Minute, v1.IPv4Protocol)
	h.Started(clk.Now())
	now := metav1.NewTime(clk.Now())
	for _, c := range []struct {
		name string
		node *v1.Node
		ok   bool
	}{
		{"no Node known yet", nil, false},
		{"a Node", &v1.Node{}, true},
		{"tainted by the cluster autoscaler", &v1.Node{Spec: v1.NodeSpec{Taints: []v1.Taint{
			{Key: "other", Effect: v1.TaintEffectNoSchedule}, {Key: ToBeDeletedTaint, Effect: v1.TaintEffectNoSchedule}}}}, false},
		{"being deleted", &v1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h.SetNode(c.node)
			code := http.StatusOK
			if !c.ok {
				code = http.StatusServiceUnavailable
			}
			if got, body := askProxy(t, h, "/healthz"); got != code || body["nodeEligible"] != c.ok || body["healthy"] != true {
				t.Errorf("/healthz: %d %v, want %d nodeEligible=%v healthy=true", got, body, code, c.ok)
			}
			wantProbe(t, h, "/livez", http.StatusOK, true) // never about the node
		})
	}
}
