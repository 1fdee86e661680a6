package proxier

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// clocked returns opts with a fake clock, which it also returns.
func clocked(opts Options) (Options, *testingclock.FakeClock) {
	clk := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	opts.Clock = clk
	return opts, clk
}

// drainOptions drain for at most 15 minutes, on a fake clock.
func drainOptions() (Options, *testingclock.FakeClock) {
	opts := testOptions()
	opts.DrainTimeout = 15 * time.Minute
	return clocked(opts)
}

var webVS = key("10.96.0.10", ipvs.TCP, 80)

// twoWebPods programs web with 10.244.1.1 and 10.244.2.1, and gives the
// second an open connection, as a client would.
func twoWebPods(t *testing.T, n *fakeNode, p *Proxier) {
	t.Helper()
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.2.1"))))
	mustSync(t, p, false)
	if err := n.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 1, 0); err != nil {
		t.Fatal(err)
	}
}

// dropSecondPod removes 10.244.2.1 from web's slice.
func dropSecondPod(p *Proxier) {
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))))
}

const (
	webBoth    = "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1\n"
	webDrain   = "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\n-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 0\n"
	webDrained = "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\n"
)

func TestRealServerWithConnectionsDrainsAtWeightZeroUntilTheyClose(t *testing.T) {
	n := newFakeNode()
	opts, _ := drainOptions()
	p := newTestProxier(t, n, opts)
	twoWebPods(t, n, p)

	dropSecondPod(p)
	mustSync(t, p, false)
	checkDump(t, "ipvs while draining", n.ipvs.Dump(), webDrain)
	if got := p.Draining()[webVS]; len(got) != 1 || got[0] != ap("10.244.2.1:8080") {
		t.Errorf("Draining() = %v", p.Draining())
	}
	// Full syncs read the counts again: still one connection, still draining.
	mustSync(t, p, true)
	mustSync(t, p, false)
	checkDump(t, "ipvs with the connection open", n.ipvs.Dump(), webDrain)
	// The client closes; the next full sync deletes the real server.
	if err := n.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 0, 0); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p, true)
	checkDump(t, "ipvs after the connection closed", n.ipvs.Dump(), webDrained)
	if len(p.Draining()) != 0 {
		t.Errorf("still draining: %v", p.Draining())
	}
	// An inactive connection (FIN_WAIT, TIME_WAIT, …) counts too.
	n2 := newFakeNode()
	p2 := newTestProxier(t, n2, opts)
	twoWebPods(t, n2, p2)
	if err := n2.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 0, 1); err != nil {
		t.Fatal(err)
	}
	dropSecondPod(p2)
	mustSync(t, p2, true)
	checkDump(t, "ipvs with an inactive connection", n2.ipvs.Dump(), webDrain)
}

func TestIdleRealServerIsDeletedAtOnce(t *testing.T) {
	n := newFakeNode()
	opts, _ := drainOptions()
	p := newTestProxier(t, n, opts)
	twoWebPods(t, n, p)
	if err := n.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 0, 0); err != nil {
		t.Fatal(err)
	}
	dropSecondPod(p)
	mustSync(t, p, false) // reads the counts of the one virtual server that changed
	checkDump(t, "ipvs", n.ipvs.Dump(), webDrained)
}

func TestDrainEndsAfterTheDrainTimeout(t *testing.T) {
	n := newFakeNode()
	opts, clk := drainOptions()
	p := newTestProxier(t, n, opts)
	twoWebPods(t, n, p)
	dropSecondPod(p)
	mustSync(t, p, false)
	clk.Step(14 * time.Minute)
	mustSync(t, p, true)
	checkDump(t, "ipvs before the timeout", n.ipvs.Dump(), webDrain)
	clk.Step(time.Minute)
	mustSync(t, p, true)
	checkDump(t, "ipvs at the timeout, the connection still open", n.ipvs.Dump(), webDrained)
}

func TestRestartContinuesTheDrain(t *testing.T) {
	n := newFakeNode()
	opts, _ := drainOptions()
	p := newTestProxier(t, n, opts)
	twoWebPods(t, n, p)
	dropSecondPod(p)
	mustSync(t, p, false)

	// A restarted agent sees the weight-0 real server its objects no
	// longer name: it keeps draining it and writes nothing.
	n.resetCalls()
	p2 := New(p.log, n.kernel(), opts)
	p2.OnService(service(ns, "web"))
	dropSecondPod(p2)
	mustSync(t, p2, false)
	if _, w := n.calls(); w != 0 {
		t.Errorf("restarted agent wrote %d times: %v", w, n.callLog())
	}
	checkDump(t, "ipvs after the restart", n.ipvs.Dump(), webDrain)
	if err := n.ipvs.SetConns(webVS, ap("10.244.2.1:8080"), 0, 0); err != nil {
		t.Fatal(err)
	}
	mustSync(t, p2, true)
	checkDump(t, "ipvs once the connection closed", n.ipvs.Dump(), webDrained)
}

func TestEndpointBackDuringItsDrainTakesTrafficAgain(t *testing.T) {
	n := newFakeNode()
	opts, _ := drainOptions()
	p := newTestProxier(t, n, opts)
	twoWebPods(t, n, p)
	dropSecondPod(p)
	mustSync(t, p, false)
	n.resetCalls()
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.2.1"))))
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvs.Dump(), webBoth)
	if c := n.ipvs.Calls(); c[ipvs.MethodUpdateDestination] != 1 || c[ipvs.MethodDeleteDestination] != 0 {
		t.Errorf("endpoint back: %v, want one weight update and no delete (its connection stays)", n.callLog())
	}
	if len(p.Draining()) != 0 {
		t.Errorf("still draining: %v", p.Draining())
	}
}

func TestSCTPDrainsAndZeroDrainTimeoutDeletesAtOnce(t *testing.T) {
	sctp := key("10.96.0.10", ipvs.SCTP, 9000)
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		proto   v1.Protocol
		k       ipvs.ServiceKey
		want    string
	}{
		{"SCTP drains", 15 * time.Minute, v1.ProtocolSCTP, sctp, "-a --sctp-service 10.96.0.10:9000 -r 10.244.2.1:9000 -m -w 0\n"},
		{"drainTimeout 0 deletes TCP at once", 0, v1.ProtocolTCP, webVS, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode()
			opts, _ := clocked(testOptions())
			opts.DrainTimeout = tc.timeout
			p := newTestProxier(t, n, opts)
			port := svcPort("p", tc.proto, int32(tc.k.Port))
			sp := slicePortOf("p", tc.proto, int32(tc.k.Port))
			p.OnService(service(ns, "s", withPorts(port)))
			p.OnSlice(slice(ns, "s-1", "s", withSlicePorts(sp), withEndpoints(ep("10.244.1.1"), ep("10.244.2.1"))))
			mustSync(t, p, false)
			if err := n.ipvs.SetConns(tc.k, netipAP(t, "10.244.2.1", tc.k.Port), 3, 0); err != nil {
				t.Fatal(err)
			}
			p.OnSlice(slice(ns, "s-1", "s", withSlicePorts(sp), withEndpoints(ep("10.244.1.1"))))
			mustSync(t, p, true)
			if got := n.ipvs.Dump(); !strings.Contains(got, "10.244.1.1") || strings.Contains(got, "10.244.2.1") != (tc.want != "") ||
				(tc.want != "" && !strings.Contains(got, tc.want)) {
				t.Errorf("ipvs:\n%s\nwant the second real server as %q", got, tc.want)
			}
		})
	}
}

func netipAP(t *testing.T, addr string, port uint16) netip.AddrPort {
	t.Helper()
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

var errBoom = errors.New("boom")

func TestUDPRealServerGoesAtOnceWithItsConntrackEntries(t *testing.T) {
	n := newFakeNode()
	opts, _ := drainOptions()
	p := newTestProxier(t, n, opts)
	dnsVS := key("10.96.0.53", ipvs.UDP, 53)
	dns := func(eps ...string) {
		p.OnService(service(ns, "dns", withClusterIP("10.96.0.53"), withPorts(svcPort("dns", v1.ProtocolUDP, 53))))
		var es []discovery.Endpoint
		for _, e := range eps {
			es = append(es, ep(e))
		}
		p.OnSlice(slice(ns, "dns-1", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 53)), withEndpoints(es...)))
	}
	dns("10.244.1.1", "10.244.2.1")
	mustSync(t, p, false)
	if err := n.ipvs.SetConns(dnsVS, ap("10.244.2.1:53"), 0, 1); err != nil {
		t.Fatal(err)
	}
	client := ap("10.244.9.9:40000")
	n.ct.Add(conntrack.Entry{Client: client, OrigDst: ap("10.96.0.53:53"), ReplySrc: ap("10.244.2.1:53")})
	n.ct.Add(conntrack.Entry{Client: client, OrigDst: ap("10.96.0.53:53"), ReplySrc: ap("10.244.1.1:53")})
	n.ct.Add(conntrack.Entry{Client: client, OrigDst: ap("10.96.0.10:80"), ReplySrc: ap("10.244.2.1:53")})

	dns("10.244.1.1")
	mustSync(t, p, false)
	checkDump(t, "ipvs", n.ipvs.Dump(), "-A -u 10.96.0.53:53 -s rr\n-a -u 10.96.0.53:53 -r 10.244.1.1:53 -m -w 1\n")
	checkDump(t, "conntrack", n.ct.Dump(),
		"udp src=10.244.9.9:40000 dst=10.96.0.53:53 reply-src=10.244.1.1:53\n"+
			"udp src=10.244.9.9:40000 dst=10.96.0.10:80 reply-src=10.244.2.1:53\n")

	// The whole virtual server goes: every entry to it goes too.
	p.OnServiceDelete(service(ns, "dns"))
	mustSync(t, p, false)
	checkDump(t, "conntrack", n.ct.Dump(), "udp src=10.244.9.9:40000 dst=10.96.0.10:80 reply-src=10.244.2.1:53\n")
}

func TestConntrackFailureIsRetried(t *testing.T) {
	n := newFakeNode()
	opts, clk := drainOptions()
	p := newTestProxier(t, n, opts)
	p.OnService(service(ns, "dns", withClusterIP("10.96.0.53"), withPorts(svcPort("dns", v1.ProtocolUDP, 53))))
	p.OnSlice(slice(ns, "dns-1", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 53)), withEndpoints(ep("10.244.2.1"))))
	mustSync(t, p, false)
	n.ct.Add(conntrack.Entry{Client: ap("10.244.9.9:40000"), OrigDst: ap("10.96.0.53:53"), ReplySrc: ap("10.244.2.1:53")})
	n.ct.Err = errBoom
	p.OnSlice(slice(ns, "dns-1", "dns", withSlicePorts(slicePortOf("dns", v1.ProtocolUDP, 53))))
	mustSync(t, p, false)
	if at := p.RetryAt(); at.IsZero() {
		t.Fatal("a failed conntrack deletion asked for no retry")
	}
	n.ct.Err = nil
	clk.Step(time.Second)
	mustSync(t, p, false)
	if d := n.ct.Dump(); d != "" || !p.RetryAt().IsZero() {
		t.Errorf("after the retry: conntrack %q, RetryAt %v", d, p.RetryAt())
	}
}
