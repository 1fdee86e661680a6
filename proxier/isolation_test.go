package proxier

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// observed returns a logger that records every entry, and the record.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

func TestOneBrokenServiceNeverStallsTheNode(t *testing.T) {
	n := newFakeNode()
	opts, clk := clocked(testOptions())
	p := newTestProxier(t, n, opts)
	log, logs := observed()
	p.log = log
	webAndDNS(p)
	mustSync(t, p, false)

	// The kernel refuses the virtual server of a new Service, forever.
	bad := key("10.96.0.66", ipvs.TCP, 80)
	n.ipvs.FailOn(ipvs.MethodAddService, bad, errors.New("invalid argument"))
	p.OnService(service(ns, "bad", withClusterIP("10.96.0.66")))
	p.OnSlice(slice(ns, "bad-1", "bad", withEndpoints(ep("10.244.6.6"))))
	mustSync(t, p, false)

	for i := range 5 {
		// Meanwhile web loses an endpoint: it is in the kernel after the
		// very next sync, retry or not.
		eps := withEndpoints(ep("10.244.1.1", onNode(testNode)))
		if i%2 == 1 {
			eps = withEndpoints(ep("10.244.1.1", onNode(testNode)), ep("10.244.2.1"))
		}
		p.OnSlice(slice(ns, "web-1", "web", eps))
		mustSync(t, p, false)
		if got, want := strings.Contains(n.ipvs.Dump(), "10.244.2.1"), i%2 == 1; got != want {
			t.Fatalf("round %d: web's endpoint change is not in the kernel:\n%s", i, n.ipvs.Dump())
		}
		clk.Step(time.Minute) // the bad Service's retry is due each round
		mustSync(t, p, false)
	}
	f, ok := p.Failures()[nameOf(ns, "bad")]
	if !ok || f.Attempts != 6 || !strings.Contains(f.Err.Error(), "invalid argument") {
		t.Fatalf("failures = %v, want bad failing 6 times", p.Failures())
	}
	if len(p.Failures()) != 1 {
		t.Errorf("other Services are counted as failing: %v", p.Failures())
	}
	// Its ownership record went in before the failed add; it names no
	// virtual server the kernel lacks for long: the next retry re-plans it.
	if errs := logs.FilterMessageSnippet("kernel refused").FilterField(zap.Stringer("service", nameOf(ns, "bad"))).Len(); errs != 1 {
		t.Errorf("the same error was logged %d times, want once", errs)
	}
	// Once the kernel takes it, the Service is programmed and forgotten.
	n.ipvs.FailOn(ipvs.MethodAddService, bad, nil)
	clk.Step(time.Minute)
	mustSync(t, p, false)
	if !strings.Contains(n.ipvs.Dump(), "-a -t 10.96.0.66:80 -r 10.244.6.6:8080 -m -w 1") || len(p.Failures()) != 0 {
		t.Errorf("after recovery: failures %v, ipvs:\n%s", p.Failures(), n.ipvs.Dump())
	}
	// A later full sync finds nothing to repair: the mirror was exact.
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("full sync after recovery wrote %d times: %v", w, n.callLog())
	}
}

func TestRetriesBackOffPerService(t *testing.T) {
	n := newFakeNode()
	opts, clk := clocked(testOptions())
	opts.RetryMax = 8 * time.Second
	p := newTestProxier(t, n, opts)
	n.ipvs.FailOn(ipvs.MethodAddService, key("10.96.0.10", ipvs.TCP, 80), errors.New("refused"))
	p.OnService(service(ns, "web"))
	mustSync(t, p, false)
	var gaps []string
	for range 5 {
		at := p.RetryAt()
		gaps = append(gaps, at.Sub(clk.Now()).String())
		clk.SetTime(at)
		mustSync(t, p, false)
	}
	if got := strings.Join(gaps, " "); got != "1s 2s 4s 8s 8s" {
		t.Errorf("retry delays = %s, want 1s 2s 4s 8s 8s", got)
	}
}

func TestFullSetFailsOnlyTheServicesThatNeedIt(t *testing.T) {
	n := newFakeNode()
	opts, _ := clocked(testOptions())
	p := newTestProxier(t, n, opts)
	webAndDNS(p)
	mustSync(t, p, false)
	full := errors.New("Hash is full, cannot add more elements")
	n.sets.Hook = func(method string, args ...string) error {
		if method == "AddEntry" && args[0] == SetClusterIP && strings.HasPrefix(args[1], "10.96.0.77,") {
			return fmt.Errorf("adding to ipset %s: %w", args[0], full)
		}
		return nil
	}
	p.OnService(service(ns, "api", withClusterIP("10.96.0.77")))
	p.OnSlice(slice(ns, "dns-1", "dns", withSlicePorts(slicePortOf("dns", "UDP", 53))))
	mustSync(t, p, false)
	if got := n.ipvs.Dump(); strings.Contains(got, "10.96.0.77") || strings.Contains(got, "10.244.3.1") {
		t.Errorf("api must not route without its set member, and dns must lose its endpoint:\n%s", got)
	}
	if f := p.Failures(); len(f) != 1 || !errors.Is(f[nameOf(ns, "api")].Err, full) {
		t.Errorf("failures = %v", f)
	}
}

// A virtual server that exists without kube-ipvs' record is refused, not
// overwritten, and the record written just before it is taken back. Only a
// full sync, which reads it whole, takes it over, and only because its
// address is bound on kipvs0 (kube-ipvs' own) and a Service wants it: that
// is how a lost record (ipset flush) is recovered.
func TestUnrecordedVirtualServerOnAWantedKey(t *testing.T) {
	n := newFakeNode()
	opts, clk := clocked(testOptions())
	// Someone made 10.96.0.10:80 by hand before kube-ipvs ever ran, and
	// the address is not kube-ipvs' (not bound on kipvs0).
	if err := n.ipvs.Load("-A -t 10.96.0.10:80 -s wlc\n-a -t 10.96.0.10:80 -r 192.168.9.9:80 -g -w 5\n"); err != nil {
		t.Fatal(err)
	}
	p := newTestProxier(t, n, opts)
	p.OnService(service(ns, "web"))
	p.OnSlice(slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))))
	mustSync(t, p, false)
	f, ok := p.Failures()[nameOf(ns, "web")]
	if !ok || !errors.Is(f.Err, errForeign) {
		t.Fatalf("failures = %v, want web refused with %v", p.Failures(), errForeign)
	}
	if got := n.ipvs.Dump(); !strings.Contains(got, "-A -t 10.96.0.10:80 -s wlc\n-a -t 10.96.0.10:80 -r 192.168.9.9:80 -g -w 5\n") {
		t.Errorf("the foreign virtual server was changed:\n%s", got)
	}
	if strings.Contains(n.sets.Dump(), "add KIPVS-OWNED 10.96.0.10,tcp:80") {
		t.Errorf("the ownership record was left on a foreign virtual server:\n%s", n.sets.Dump())
	}
	clk.Step(time.Second)
	mustSync(t, p, false) // an incremental retry does not take it over either
	if f := p.Failures()[nameOf(ns, "web")]; f.Attempts != 2 {
		t.Fatalf("the retry did not run: %v", p.Failures())
	}
	if !strings.Contains(n.ipvs.Dump(), "-s wlc") {
		t.Fatalf("taken over by an incremental sync:\n%s", n.ipvs.Dump())
	}
	mustSync(t, p, true)
	checkDump(t, "ipvs after a full sync", n.ipvsDump(), "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\nlink kipvs0 up\n10.96.0.10/32\n")
	if len(p.Failures()) != 0 || !strings.Contains(n.sets.Dump(), "add KIPVS-OWNED 10.96.0.10,tcp:80") {
		t.Errorf("after the full sync: failures %v, sets:\n%s", p.Failures(), n.sets.Dump())
	}
}
