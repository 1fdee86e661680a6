//go:build linux

package ipvs

import (
	"net"
	"net/netip"
	"syscall"
	"testing"

	libipvs "github.com/moby/ipvs"
)

func TestDestStatsFromLib(t *testing.T) {
	raw := []*libipvs.Destination{
		{Address: net.IP{10, 244, 2, 1}, Port: 8080, Weight: 1, AddressFamily: syscall.AF_INET, ActiveConnections: 2, InactiveConnections: 5,
			Stats: libipvs.DstStats{Connections: 7, PacketsIn: 70, PacketsOut: 60, BytesIn: 5 << 32, BytesOut: 4000, CPS: 1}},
		{Address: net.IP{10, 244, 1, 1}, Port: 8080, Weight: 0, AddressFamily: syscall.AF_INET},
		{Address: net.ParseIP("fd00::1"), Port: 80, Weight: 1, AddressFamily: syscall.AF_INET6}, // other family: skipped
		nil,
	}
	got := destStatsFromLib(web, raw)
	if len(got) != 2 {
		t.Fatalf("destStatsFromLib = %+v, want 2 real servers", got)
	}
	if got[0].Addr.String() != "10.244.1.1:8080" || got[0].Stats != (Stats{}) || got[0].Weight != 0 {
		t.Errorf("first = %+v, want 10.244.1.1:8080 at weight 0 without traffic", got[0])
	}
	want := Stats{Conns: 7, PacketsIn: 70, PacketsOut: 60, BytesIn: 5 << 32, BytesOut: 4000}
	if got[1].Addr.String() != "10.244.2.1:8080" || got[1].Stats != want || got[1].ActiveConns != 2 || got[1].InactiveConns != 5 {
		t.Errorf("second = %+v, want 10.244.2.1:8080 with %+v and 2/5 connections", got[1], want)
	}
}

func TestSvcStatsFromLib(t *testing.T) {
	raw := []*libipvs.Service{
		{Address: net.IP{10, 96, 0, 10}, Protocol: syscall.IPPROTO_TCP, Port: 80, AddressFamily: syscall.AF_INET,
			Stats: libipvs.SvcStats{Connections: 9, PacketsIn: 90, PacketsOut: 80, BytesIn: 3 << 32, BytesOut: 700, CPS: 2}},
		{FWMark: 8192, AddressFamily: syscall.AF_INET, Stats: libipvs.SvcStats{Connections: 1}},
		nil,
	}
	got := svcStatsFromLib(raw)
	web := ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: TCP, Port: 80}
	if len(got) != 2 || got[web] != (Stats{Conns: 9, PacketsIn: 90, PacketsOut: 80, BytesIn: 3 << 32, BytesOut: 700}) ||
		got[MarkKey(8192, false)].Conns != 1 {
		t.Errorf("svcStatsFromLib = %+v", got)
	}
}
