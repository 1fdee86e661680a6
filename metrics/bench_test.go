package metrics

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

const benchServices = 1000

func benchService(i int) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)},
		Spec: v1.ServiceSpec{
			Type:      v1.ServiceTypeClusterIP,
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}).String(),
			Ports:     []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
}

func benchSlice(i, gen int) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%d-abc", i),
			Labels: map[string]string{discovery.LabelServiceName: fmt.Sprintf("svc-%d", i)}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for e := range 3 {
		addr := netip.AddrFrom4([4]byte{10, 244, byte(i >> 6), byte((i&63)*4 + (e+gen)%4)})
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{addr.String()},
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

// BenchmarkSyncWithMetrics times an incremental sync of one changed
// EndpointSlice among 1000 Services on the fake kernel, with no metrics,
// with the metrics registered, and with them registered while a client
// scrapes /metrics without pause. The three figures should be alike: a
// scrape never holds a sync up.
func BenchmarkSyncWithMetrics(b *testing.B) {
	for _, c := range []struct {
		name             string
		metrics, scraped bool
	}{{"none", false, false}, {"registered", true, false}, {"scraped", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			ipt, sets := iptables.NewFakeKernel()
			k := proxier.Kernel{IPVS: ipvs.NewFake(), Addrs: netif.NewFakeAddrs(netif.DefaultLink),
				IPTables: ipt, Sets: sets, Conntrack: conntrack.NewFake()}
			opts := proxier.Options{
				Build: proxier.BuildConfig{NodeName: "node-a", Scheduler: "rr", Family: v1.IPv4Protocol},
				Rules: proxier.RuleConfig{Family: v1.IPv4Protocol, MasqueradeBit: 14,
					ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
			}
			var m *Metrics
			if c.metrics {
				m = New("IPv4", Build{Version: "bench"})
				opts.Metrics = m
			}
			p := proxier.New(zap.NewNop(), k, opts)
			for i := range benchServices {
				p.OnService(benchService(i))
				p.OnSlice(benchSlice(i, 0))
			}
			if err := p.Sync(true); err != nil {
				b.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			if c.scraped {
				h := m.Handler()
				wg.Go(func() {
					for ctx.Err() == nil {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
						_, _ = io.Copy(io.Discard, rec.Body)
					}
				})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := range b.N {
				i := n % benchServices
				p.OnSlice(benchSlice(i, n/benchServices+1))
				if m != nil {
					m.Queued(time.Now())
				}
				start := time.Now()
				if err := p.Sync(false); err != nil {
					b.Fatal(err)
				}
				if m != nil {
					m.Synced(time.Now(), false, time.Now().Sub(start), nil)
				}
			}
			b.StopTimer()
			stop()
			wg.Wait()
		})
	}
}
