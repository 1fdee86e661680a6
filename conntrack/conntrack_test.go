package conntrack

import (
	"net/netip"
	"testing"
)

func TestFakeDeletesOnlyMatchingFlows(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := NewFake()
	f.Add(Entry{Client: ap("10.244.1.9:40000"), OrigDst: ap("10.96.0.53:53"), ReplySrc: ap("10.244.1.2:5353")})
	f.Add(Entry{Client: ap("10.244.1.9:40001"), OrigDst: ap("10.96.0.53:53"), ReplySrc: ap("10.244.1.3:5353")})
	f.Add(Entry{Client: ap("10.244.1.9:40002"), OrigDst: ap("10.96.0.53:54"), ReplySrc: ap("10.244.1.2:5353")})
	f.Add(Entry{Client: ap("10.244.1.9:40003"), OrigDst: ap("10.96.0.99:53"), ReplySrc: ap("10.244.1.7:53")})

	n, err := f.DeleteUDP([]Flow{
		{Service: ap("10.96.0.53:53"), Endpoint: ap("10.244.1.2:5353")}, // one endpoint of one port
		{Service: ap("10.96.0.99:53")},                                  // a whole virtual server
	})
	if err != nil || n != 2 {
		t.Fatalf("DeleteUDP = %d, %v; want 2 entries", n, err)
	}
	want := "udp src=10.244.1.9:40001 dst=10.96.0.53:53 reply-src=10.244.1.3:5353\n" +
		"udp src=10.244.1.9:40002 dst=10.96.0.53:54 reply-src=10.244.1.2:5353\n"
	if got := f.Dump(); got != want {
		t.Errorf("left:\n%s\nwant:\n%s", got, want)
	}
	if got := (Flow{Service: ap("10.96.0.53:53"), Endpoint: ap("10.244.1.2:5353")}).String(); got !=
		"-p udp --orig-dst 10.96.0.53 --orig-port-dst 53 --reply-src 10.244.1.2 --reply-port-src 5353" {
		t.Errorf("String() = %q", got)
	}
}
