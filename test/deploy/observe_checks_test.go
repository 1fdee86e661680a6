//go:build apiserver

package deploy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-ipvs/kube-ipvs/events"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/kubeapi"
	"github.com/kube-ipvs/kube-ipvs/metrics"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// checkEventsAndMetrics runs the agent's informers, proxier, Events and
// metrics with the kube-ipvs token against the real apiserver, on the fake
// kernel: two Services that claim one external IP and port make a Warning
// Event on the loser naming the winner, with the ServiceAccount's own
// permission; an EndpointSlice change through the apiserver, stamped as
// the EndpointSlice controller stamps it, is counted by the network
// programming histogram once it is synced.
func checkEventsAndMetrics(ctx context.Context, t *testing.T, admin kubernetes.Interface, sa *kubeapi.Client) {
	ipt, sets := iptables.NewFakeKernel()
	k := proxier.Kernel{IPVS: ipvs.NewFake(), Addrs: netif.NewFakeAddrs(netif.DefaultLink), IPTables: ipt, Sets: sets}
	m := metrics.New("IPv4", metrics.Build{Version: "test"})
	rec, stopEvents := events.New(ctx, sa, nodeName)
	defer stopEvents()
	p := proxier.New(zap.NewNop(), k, proxier.Options{
		Build: proxier.BuildConfig{NodeName: nodeName, Scheduler: "rr", Family: corev1.IPv4Protocol,
			ExternalIPCIDRs: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		Rules:   proxier.RuleConfig{Family: corev1.IPv4Protocol, MasqueradeBit: 14},
		Metrics: m,
		Events:  rec,
	})
	w, err := proxier.NewWatcher(sa, nodeName, "", p, func() {})
	if err != nil {
		t.Fatal(err)
	}
	informerCtx, stop := context.WithCancel(ctx)
	defer stop()
	w.Start(informerCtx)
	if !w.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	for _, name := range []string{"claim-b", "claim-a"} {
		s := service(name, nil)
		s.Spec.ExternalIPs = []string{"192.0.2.50"}
		if _, err := admin.CoreV1().Services(testNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The watch delivers the two Services soon; sync until both are in.
	var note string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := p.Sync(false); err != nil {
			return false, err
		}
		evs, err := admin.EventsV1().Events(testNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "Service" && e.Regarding.Name == "claim-b" && e.Reason == "VirtualServerClaimedByAnotherService" {
				if e.Type != corev1.EventTypeWarning || e.ReportingController != events.Component {
					t.Errorf("event type %q from %q, want a Warning from %s", e.Type, e.ReportingController, events.Component)
				}
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no conflict Event on claim-b: %v", err)
	}
	if !strings.Contains(note, "192.0.2.50:80") || !strings.HasSuffix(note, testNS+"/claim-a wins") {
		t.Errorf("event note %q, want it to name the address and the winner %s/claim-a", note, testNS)
	}

	// The EndpointSlice controller stamps last-change-trigger-time with the
	// time of the Pod or Service change behind the slice update: now (a
	// change from before the proxier started would not be timed).
	triggered := time.Now()
	s := slice("claim-a-1", "claim-a", "10.244.1.9", nil)
	s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: triggered.UTC().Format(time.RFC3339Nano)}
	if _, err := admin.DiscoveryV1().EndpointSlices(testNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var h *dto.Histogram
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := p.Sync(false); err != nil {
			return false, err
		}
		fams, err := m.Registry().Gather()
		if err != nil {
			return false, err
		}
		for _, f := range fams {
			if f.GetName() == "kubeproxy_network_programming_duration_seconds" {
				h = f.GetMetric()[0].GetHistogram()
				return h.GetSampleCount() > 0, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the network programming histogram counted nothing: %v", err)
	}
	if h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 || h.GetSampleSum() > 30 {
		t.Errorf("network programming: %d samples summing %.3fs, want one, of the time from the change to its sync", h.GetSampleCount(), h.GetSampleSum())
	}
	t.Logf("network programming latency %.3fs", h.GetSampleSum())
}
