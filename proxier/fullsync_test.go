package proxier

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	discovery "k8s.io/api/discovery/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// stepCluster records n Services of two endpoints each on p: more than one
// chunk of virtual servers.
func stepCluster(p *Proxier, n int) []*discovery.EndpointSlice {
	var slices []*discovery.EndpointSlice
	vip := netip.MustParseAddr("10.96.1.0")
	for i := range n {
		vip = vip.Next()
		name := fmt.Sprintf("svc-%04d", i)
		p.OnService(service(ns, name, withClusterIP(vip.String())))
		s := slice(ns, name+"-1", name, withEndpoints(ep(fmt.Sprintf("10.244.%d.%d", 10+i/200, 1+i%200)), ep("10.244.9.9")))
		p.OnSlice(s)
		slices = append(slices, s)
	}
	return slices
}

// steps runs FullStep until the pass ends and returns how many steps it
// took; between the first and the second it calls between.
func steps(t *testing.T, p *Proxier, between func()) int {
	t.Helper()
	for n := 1; ; n++ {
		done, err := p.FullStep(time.Hour)
		if err != nil {
			t.Fatalf("step %d: %v", n, err)
		}
		if done {
			return n
		}
		if n == 1 && between != nil {
			between()
		}
	}
}

// A change recorded while a full sync runs is programmed by an incremental
// sync between two of its steps, and the pass, which reads each virtual
// server only when it repairs it, neither undoes it nor misses the drift
// it was there for.
func TestChangeDuringAFullSyncIsSyncedBetweenSteps(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	slices := stepCluster(p, 3*maxChunk)
	mustSync(t, p, false)

	// Drift, for the pass to repair: a real server and a virtual server
	// deleted by hand, in the last chunk.
	last := key("10.96.3.255", ipvs.TCP, 80)
	if !strings.Contains(n.ipvs.Dump(), "-A -t 10.96.3.255:80") {
		t.Fatalf("the last Service is not where the test expects it:\n%s", n.ipvs.Dump()[:200])
	}
	if err := n.ipvs.DeleteDestination(last, ap("10.244.9.9:8080")); err != nil {
		t.Fatal(err)
	}
	gone := key("10.96.3.254", ipvs.TCP, 80)
	if err := n.ipvs.DeleteService(gone); err != nil {
		t.Fatal(err)
	}

	// During the pass: the first Service's endpoint moves, the second
	// Service goes, a new one comes.
	moved := slices[0].DeepCopy()
	moved.Endpoints[0].Addresses = []string{"10.244.200.1"}
	var during string
	count := steps(t, p, func() {
		p.OnSlice(moved)
		p.OnServiceDelete(service(ns, "svc-0001"))
		p.OnService(service(ns, "late", withClusterIP("10.96.9.9")))
		p.OnSlice(slice(ns, "late-1", "late", withEndpoints(ep("10.244.201.1"))))
		mustSync(t, p, false)
		during = n.ipvs.Dump()
	})
	if count != 11 {
		t.Errorf("the pass took %d steps, want 11: the read, the sets, three tables, the sweep, the routes, 3 chunks and the end", count)
	}
	for _, want := range []string{"-a -t 10.96.1.1:80 -r 10.244.200.1:8080", "-A -t 10.96.9.9:80", "-a -t 10.96.9.9:80 -r 10.244.201.1:8080"} {
		if !strings.Contains(during, want) {
			t.Errorf("between two steps the kernel lacks %q", want)
		}
	}
	if strings.Contains(during, "-A -t 10.96.1.2:80") {
		t.Errorf("between two steps the deleted Service is still there")
	}
	got := n.ipvs.Dump()
	for _, want := range []string{"-a -t 10.96.3.255:80 -r 10.244.9.9:8080", "-A -t 10.96.3.254:80", "-a -t 10.96.1.1:80 -r 10.244.200.1:8080", "-A -t 10.96.9.9:80"} {
		if !strings.Contains(got, want) {
			t.Errorf("after the pass the kernel lacks %q", want)
		}
	}
	for _, unwanted := range []string{"-A -t 10.96.1.2:80", "-a -t 10.96.1.1:80 -r 10.244.10.1:8080"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("after the pass the kernel still has %q", unwanted)
		}
	}
	// The mirror is exact: a full sync now finds nothing to do.
	n.resetCalls()
	mustSync(t, p, true)
	if _, w := n.calls(); w != 0 {
		t.Errorf("a full sync after the stepped one wrote %d times: %v", w, n.callLog())
	}
}

// A full sync with nothing to repair writes nothing, stepped or not.
func TestSteppedFullSyncWithNothingChangedWritesNothing(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, maxChunk+1)
	mustSync(t, p, false)
	n.resetCalls()
	// The read, the sets, nat, filter and mangle, the sweep, the routes,
	// two chunks and the end.
	if count := steps(t, p, nil); count != 10 {
		t.Errorf("%d steps, want 10", count)
	}
	if _, w := n.calls(); w != 0 {
		t.Errorf("wrote %d times: %v", w, n.callLog())
	}
}

// fakeStepper is a Stepper whose full sync takes three steps; a request
// comes during the first.
type fakeStepper struct {
	r     *Runner
	calls []string
	steps int
}

func (s *fakeStepper) Sync(full bool) error {
	s.calls = append(s.calls, fmt.Sprintf("sync(full=%v)", full))
	return nil
}

func (s *fakeStepper) RetryAt() time.Time { return time.Time{} }

func (s *fakeStepper) FullStep(time.Duration) (bool, error) {
	s.steps++
	s.calls = append(s.calls, fmt.Sprintf("step %d", s.steps))
	if s.steps == 1 {
		s.r.Request()
	}
	return s.steps == 3, nil
}

func TestRunnerSyncsARequestBetweenFullSteps(t *testing.T) {
	s := &fakeStepper{}
	s.r = NewRunner(zap.NewNop(), testingclock.NewFakeClock(time.Unix(1_000_000, 0)), RunnerConfig{}, s)
	if s.r.cfg.StepBudget != DefaultStepBudget {
		t.Errorf("step budget %v, want %v", s.r.cfg.StepBudget, DefaultStepBudget)
	}
	if err := s.r.sync(true); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(s.calls, ", "), "step 1, sync(full=false), step 2, step 3"; got != want {
		t.Errorf("calls: %s, want %s", got, want)
	}
	s.calls = nil
	if err := s.r.sync(false); err != nil || strings.Join(s.calls, ", ") != "sync(full=false)" {
		t.Errorf("an incremental sync: %v, %v", s.calls, err)
	}
}

// A node's first sync adds the set members of many Services in batches,
// one request per set and batch; when the kernel refuses a batch, they are
// added one by one and only the Service whose member fails waits for its
// retry.
func TestSetMembersAreAddedInBatches(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	stepCluster(p, 40)
	mustSync(t, p, false)
	if c := n.sets.Calls(); c[iptables.MethodAddEntries] == 0 || c[iptables.MethodAddEntry] != 0 {
		t.Errorf("calls %v: want the members in batches", c)
	}
	want := n.sets.Dump()

	n = newFakeNode()
	p = newTestProxier(t, n, testOptions())
	n.sets.FailOn(iptables.MethodAddEntries, "", errors.New("refused"))
	bad := "10.96.1.7,tcp:80"
	n.sets.Hook = func(method string, args ...string) error {
		if method == iptables.MethodAddEntry && args[0] == SetClusterIP && args[1] == bad {
			return errors.New("no room")
		}
		return nil
	}
	stepCluster(p, 40)
	mustSync(t, p, false)
	f := p.Failures()
	if len(f) != 1 || f[nameOf(ns, "svc-0006")].Err == nil {
		t.Fatalf("failures %v, want svc-0006 alone", f)
	}
	if c := n.sets.Calls(); c[iptables.MethodAddEntry] == 0 {
		t.Errorf("calls %v: want the refused batches one by one", c)
	}
	n.sets.Hook = nil
	n.sets.FailOn(iptables.MethodAddEntries, "", nil)
	mustSync(t, p, true)
	checkDump(t, "sets after the retry", n.sets.Dump(), want)
}
