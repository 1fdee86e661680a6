package metrics

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// Traffic is the opt-in per-virtual-server series (virtualServerMetrics):
// the kernel's counters of each virtual server kube-ipvs programs, labelled
// with its Service's namespace, name and port name and the virtual server
// ("TCP/10.96.0.10:80", "FWM/8192"). One series set per virtual server:
// on a large cluster that is many series, hence off by default.
//
// A scrape reads the owners from the proxier (one pass over the keys under
// its view lock) and the counters from the kernel (one dump); a sync never
// waits for the kernel read. The kernel's connection and packet counts are
// 32-bit and wrap; the byte counts do not.
type Traffic struct {
	owners                        func() []proxier.ServerOwner
	stats                         ipvs.StatsReader
	conns, packets, bytes, errors *prometheus.Desc
}

// NewTraffic returns the collector; register it with Registry.
func NewTraffic(owners func() []proxier.ServerOwner, stats ipvs.StatsReader) *Traffic {
	labels := []string{"namespace", "service", "port", "virtual_server"}
	withDirection := append(labels[:len(labels):len(labels)], "direction")
	return &Traffic{
		owners: owners,
		stats:  stats,
		conns: prometheus.NewDesc(own+"_virtual_server_connections_total",
			"Connections the virtual server scheduled since it was added", labels, nil),
		packets: prometheus.NewDesc(own+"_virtual_server_packets_total",
			"Packets through the virtual server since it was added, by direction (in: to the real servers)", withDirection, nil),
		bytes: prometheus.NewDesc(own+"_virtual_server_bytes_total",
			"Bytes through the virtual server since it was added, by direction (in: to the real servers)", withDirection, nil),
		errors: prometheus.NewDesc(own+"_virtual_server_stats_errors_total",
			"Scrapes whose read of the virtual servers' counters failed (their series are missing then)", nil, nil),
	}
}

// Describe is part of prometheus.Collector.
func (t *Traffic) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.conns
	ch <- t.packets
	ch <- t.bytes
}

// Collect is part of prometheus.Collector.
func (t *Traffic) Collect(ch chan<- prometheus.Metric) {
	stats, err := t.stats.ListServiceStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(t.errors, err)
		return
	}
	for _, o := range t.owners() {
		s, ok := stats[o.Key]
		if !ok {
			continue // wanted, not (yet) in the kernel
		}
		l := []string{o.Service.Namespace, o.Service.Name, o.Port, vsLabel(o.Key)}
		ch <- prometheus.MustNewConstMetric(t.conns, prometheus.CounterValue, float64(s.Conns), l...)
		ch <- prometheus.MustNewConstMetric(t.packets, prometheus.CounterValue, float64(s.PacketsIn), append(l, "in")...)
		ch <- prometheus.MustNewConstMetric(t.packets, prometheus.CounterValue, float64(s.PacketsOut), append(l, "out")...)
		ch <- prometheus.MustNewConstMetric(t.bytes, prometheus.CounterValue, float64(s.BytesIn), append(l, "in")...)
		ch <- prometheus.MustNewConstMetric(t.bytes, prometheus.CounterValue, float64(s.BytesOut), append(l, "out")...)
	}
}

// vsLabel names a virtual server as `ipvsadm -Ln` lists it: "TCP/10.96.0.10:80",
// "FWM/8192".
func vsLabel(k ipvs.ServiceKey) string {
	if k.IsMark() {
		return fmt.Sprintf("FWM/%d", k.Mark)
	}
	return strings.ToUpper(k.Proto.String()) + "/" + k.AddrPort().String()
}
