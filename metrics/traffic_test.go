package metrics

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

func TestTrafficSeriesPerVirtualServer(t *testing.T) {
	f := ipvs.NewFake()
	if err := f.Load("-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n-A -t 172.16.0.1:443 -s wlc\n"); err != nil {
		t.Fatal(err)
	}
	web := ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: ipvs.TCP, Port: 80}
	if err := f.SetStats(web, netip.MustParseAddrPort("10.244.1.5:8080"), ipvs.Stats{Conns: 4, PacketsIn: 40, PacketsOut: 30, BytesIn: 4000, BytesOut: 3000}); err != nil {
		t.Fatal(err)
	}
	owners := []proxier.ServerOwner{
		{Key: web, Service: types.NamespacedName{Namespace: "default", Name: "web"}, Port: "http"},
		// wanted, not in the kernel yet: no series
		{Key: ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.11"), Proto: ipvs.TCP, Port: 80}, Service: types.NamespacedName{Namespace: "default", Name: "new"}},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewTraffic(func() []proxier.ServerOwner { return owners }, f))
	want := `
# HELP kube_ipvs_virtual_server_connections_total Connections the virtual server scheduled since it was added
# TYPE kube_ipvs_virtual_server_connections_total counter
kube_ipvs_virtual_server_connections_total{namespace="default",port="http",service="web",virtual_server="TCP/10.96.0.10:80"} 4
# HELP kube_ipvs_virtual_server_bytes_total Bytes through the virtual server since it was added, by direction (in: to the real servers)
# TYPE kube_ipvs_virtual_server_bytes_total counter
kube_ipvs_virtual_server_bytes_total{direction="in",namespace="default",port="http",service="web",virtual_server="TCP/10.96.0.10:80"} 4000
kube_ipvs_virtual_server_bytes_total{direction="out",namespace="default",port="http",service="web",virtual_server="TCP/10.96.0.10:80"} 3000
# HELP kube_ipvs_virtual_server_packets_total Packets through the virtual server since it was added, by direction (in: to the real servers)
# TYPE kube_ipvs_virtual_server_packets_total counter
kube_ipvs_virtual_server_packets_total{direction="in",namespace="default",port="http",service="web",virtual_server="TCP/10.96.0.10:80"} 40
kube_ipvs_virtual_server_packets_total{direction="out",namespace="default",port="http",service="web",virtual_server="TCP/10.96.0.10:80"} 30
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The foreign 172.16.0.1:443 is nobody's: no series. A failed kernel
	// read is a scrape error, not stale series.
	f.FailOn(ipvs.MethodListServices, ipvs.ServiceKey{}, errors.New("netlink: no buffer space"))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "no buffer space") {
		t.Errorf("gather with the kernel failing: %v, want its error", err)
	}
}

func TestVSLabel(t *testing.T) {
	if got := vsLabel(ipvs.MarkKey(8192, false)); got != "FWM/8192" {
		t.Errorf("mark label %q", got)
	}
	if got := vsLabel(ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.53"), Proto: ipvs.UDP, Port: 53}); got != "UDP/10.96.0.53:53" {
		t.Errorf("label %q", got)
	}
}
