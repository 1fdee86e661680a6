//go:build vmguest

package guest

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAgentHealthzFollowsSyncs: kube-ipvs' /healthz and /livez on 10256, as
// kube-proxy's: 503 once a change has waited 2 × syncPeriod for a sync,
// 200 again after the next good one.
func TestAgentHealthzFollowsSyncs(t *testing.T) {
	// A set with kube-ipvs' name and a type it cannot read: every sync
	// fails reading the kernel.
	Run(t, Node, "ipset", "create", "KIPVS-VIP", "hash:net,port")
	t.Cleanup(func() { _, _ = Exec(Node, "ipset", "destroy", "KIPVS-VIP") })
	objs := NewObjects(t)
	objs.Put("node", &v1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: metav1.ObjectMeta{Name: NodeName}})
	started := time.Now()
	StartAgent(t, objs) // --sync-period 2s: unhealthy after 4 s
	addr := netip.MustParseAddrPort("127.0.0.1:10256")
	probe := func(path string) (int, map[string]any) {
		code, body, hdr := httpGet(t, Node, addr, path)
		if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s headers: %v", path, hdr)
		}
		return code, body
	}
	if code, body := probe("/livez"); code != http.StatusOK {
		t.Logf("/livez %.1fs after start: %d %v (slower than the 4 s timeout?)", time.Since(started).Seconds(), code, body)
	}
	waitFor(t, 30*time.Second, "/livez turning 503", func() bool { code, _ := probe("/livez"); return code == http.StatusServiceUnavailable })
	t.Logf("/livez 503 %.1fs after the agent started", time.Since(started).Seconds())
	code, body := probe("/healthz")
	if code != http.StatusServiceUnavailable || body["healthy"] != false || body["nodeEligible"] != true {
		t.Errorf("/healthz while syncs fail: %d %v", code, body)
	}

	// The node is repaired: the next sync succeeds, and both answer 200.
	Run(t, Node, "ipset", "destroy", "KIPVS-VIP")
	waitFor(t, 30*time.Second, "/healthz back to 200", func() bool { code, _ := probe("/healthz"); return code == http.StatusOK })
	code, body = probe("/livez")
	if code != http.StatusOK || body["healthy"] != true || body["lastUpdated"] != body["currentTime"] {
		t.Errorf("/livez after a good sync: %d %v", code, body)
	}
	if _, ok := body["nodeEligible"]; ok {
		t.Errorf("/livez reports nodeEligible: %v", body)
	}
}
