package proxier

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	testclock "k8s.io/utils/clock/testing"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// recordedMetrics is a Metrics that keeps what it heard.
type recordedMetrics struct {
	services, slices []int // the pending counts, one per event
	taken            int
	latencies        []time.Duration
	applied          map[string]int // "op ok" / "op error"
	skipped          map[string]int
	tallies          Tallies
}

func newRecordedMetrics() *recordedMetrics {
	return &recordedMetrics{applied: map[string]int{}, skipped: map[string]int{}}
}

func (m *recordedMetrics) ServiceChanged(n int) { m.services = append(m.services, n) }
func (m *recordedMetrics) SliceChanged(n int)   { m.slices = append(m.slices, n) }
func (m *recordedMetrics) ChangesTaken()        { m.taken++ }
func (m *recordedMetrics) Programmed(at time.Time, ts []time.Time) {
	for _, t := range ts {
		m.latencies = append(m.latencies, at.Sub(t))
	}
}
func (m *recordedMetrics) Applied(op string, err error, n int) {
	if err != nil {
		m.applied[op+" error"] += n
	} else {
		m.applied[op+" ok"] += n
	}
}
func (m *recordedMetrics) Skipped(r string)  { m.skipped[r]++ }
func (m *recordedMetrics) Tallied(t Tallies) { m.tallies = t }

func withTrigger(t time.Time) func(*discovery.EndpointSlice) {
	return func(s *discovery.EndpointSlice) {
		s.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: t.Format(time.RFC3339Nano)}
	}
}

func TestMetricsHearChangesOperationsAndProgrammingLatency(t *testing.T) {
	start := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	clk := testclock.NewFakeClock(start)
	n := newFakeNode()
	m := newRecordedMetrics()
	opts := testOptions()
	opts.Clock, opts.Metrics = clk, m
	p := newTestProxier(t, n, opts)
	const ns = "default"
	web := service(ns, "web", withClusterIP("10.96.0.10"), withPorts(svcPort("http", v1.ProtocolTCP, 80)))
	port := withSlicePorts(slicePortOf("http", v1.ProtocolTCP, 8080))

	// A change triggered before the proxier started is not timed, as in
	// kube-proxy; one triggered after is, from its trigger time to the
	// sync that programmed it.
	p.OnService(web)
	p.OnSlice(slice(ns, "web-1", "web", port, withEndpoints(ep("10.244.1.1")), withTrigger(start.Add(-time.Minute))))
	p.OnSlice(slice(ns, "web-2", "web", port, withEndpoints(ep("10.244.1.2")), withTrigger(start.Add(time.Second))))
	clk.SetTime(start.Add(3 * time.Second))
	mustSync(t, p, true)
	if !slices.Equal(m.services, []int{1}) || !slices.Equal(m.slices, []int{1, 2}) || m.taken != 1 {
		t.Errorf("pending counts: services %v slices %v taken %d, want [1] [1 2] 1", m.services, m.slices, m.taken)
	}
	if !slices.Equal(m.latencies, []time.Duration{2 * time.Second}) {
		t.Errorf("programming latencies %v, want [2s]", m.latencies)
	}
	if m.applied["add_service ok"] != 1 || m.applied["add_real_server ok"] != 2 || m.applied["bind_addr ok"] != 1 {
		t.Errorf("applied %v, want one add_service, two add_real_server, one bind_addr", m.applied)
	}

	// A Service whose operations fail keeps its trigger times until a
	// sync programs it.
	api := service(ns, "api", withClusterIP("10.96.0.20"), withPorts(svcPort("http", v1.ProtocolTCP, 80)))
	n.ipvs.FailOn(ipvs.MethodAddService, key("10.96.0.20", ipvs.TCP, 80), errors.New("refused"))
	p.OnService(api)
	p.OnSlice(slice(ns, "api-1", "api", port, withEndpoints(ep("10.244.1.3")), withTrigger(start.Add(4*time.Second))))
	clk.SetTime(start.Add(5 * time.Second))
	mustSync(t, p, false)
	if len(m.latencies) != 1 || m.applied["add_service error"] != 1 || m.tallies.Failing != 1 {
		t.Fatalf("while failing: latencies %v applied %v tallies %+v, want no new latency, one add_service error, one failing",
			m.latencies, m.applied, m.tallies)
	}
	n.ipvs.FailOn(ipvs.MethodAddService, key("10.96.0.20", ipvs.TCP, 80), nil)
	clk.SetTime(start.Add(40 * time.Second))
	mustSync(t, p, true)
	if !slices.Equal(m.latencies, []time.Duration{2 * time.Second, 36 * time.Second}) || m.tallies.Failing != 0 {
		t.Errorf("after the retry: latencies %v tallies %+v, want [2s 36s], none failing", m.latencies, m.tallies)
	}

	// A deleted slice drops its Service's trigger times (its annotation is
	// that of its last update).
	p.OnSlice(slice(ns, "web-3", "web", port, withEndpoints(ep("10.244.1.4")), withTrigger(start.Add(41*time.Second))))
	p.OnSliceDelete(slice(ns, "web-2", "web"))
	mustSync(t, p, false)
	if len(m.latencies) != 2 {
		t.Errorf("latencies %v: a deleted slice's Service must not be timed", m.latencies)
	}

	// Skipped input is counted by reason; the Local tallies follow
	// kube-proxy: a Local policy with endpoints, none here.
	bad := service(ns, "bad", withClusterIP("10.96.0.30"), withPorts(svcPort("http", v1.ProtocolTCP, 80)),
		func(s *v1.Service) {
			s.Spec.ExternalIPs = []string{"not-an-ip"}
			local := v1.ServiceInternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = &local
		})
	p.OnService(bad)
	p.OnSlice(slice(ns, "bad-1", "bad", port, withEndpoints(ep("10.244.2.1", onNode("node-b")))))
	mustSync(t, p, false)
	if m.skipped[string(ReasonBadExternalIP)] != 1 {
		t.Errorf("skipped %v, want one %q", m.skipped, ReasonBadExternalIP)
	}
	if m.tallies.NoLocalInternal != 1 || m.tallies.NoLocalExternal != 0 {
		t.Errorf("tallies %+v, want one Service with no local endpoint for its internal policy", m.tallies)
	}
	p.OnServiceDelete(bad)
	mustSync(t, p, false)
	if m.tallies.NoLocalInternal != 0 {
		t.Errorf("tallies %+v after the Service went, want none", m.tallies)
	}
}

// recordedEvents is an EventRecorder that keeps "ns/name reason: note".
type recordedEvents []string

func (r *recordedEvents) Service(svc *v1.Service, reason, note string) {
	*r = append(*r, svc.Namespace+"/"+svc.Name+" "+reason+": "+note)
}

// A conflict is recorded on the Service that loses, naming the winner,
// whichever of the two came last; bad input on the Service that has it.
func TestWarningsAreRecordedOnTheirService(t *testing.T) {
	for _, order := range [][]string{{"a", "b"}, {"b", "a"}} {
		t.Run(order[0]+" first", func(t *testing.T) {
			n := newFakeNode()
			var evs recordedEvents
			opts := testOptions()
			opts.Events = &evs
			p := newTestProxier(t, n, opts)
			svcs := map[string]*v1.Service{"a": service(ns, "a"), "b": service(ns, "b", withAffinity(nil))}
			for _, name := range order {
				p.OnService(svcs[name])
			}
			mustSync(t, p, false)
			want := []string{"default/b nil sessionAffinityConfig: using 10800s",
				"default/b virtual server claimed by another Service: -t 10.96.0.10:80 is claimed by default/a and default/b; default/a wins"}
			if !slices.Equal(evs, want) {
				t.Errorf("events %q, want %q", evs, want)
			}
		})
	}
	n := newFakeNode()
	var evs recordedEvents
	opts := testOptions()
	opts.Events = &evs
	p := newTestProxier(t, n, opts)
	p.OnService(service(ns, "web", withClusterIP("10.96.0.11"), func(s *v1.Service) { s.Spec.ExternalIPs = []string{"not-an-ip"} }))
	mustSync(t, p, false)
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "default/web unparseable externalIP: ") {
		t.Errorf("events %q, want one unparseable externalIP on default/web", evs)
	}
}

func TestServerOwnersNameTheServicePort(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	got := map[string]string{}
	for _, o := range p.ServerOwners() {
		got[o.Key.String()] = o.Service.String() + " " + o.Port
	}
	want := map[string]string{"-t 10.96.0.10:80": "default/web http", "-u 10.96.0.53:53": "default/dns dns"}
	if len(got) != len(want) || got["-t 10.96.0.10:80"] != want["-t 10.96.0.10:80"] || got["-u 10.96.0.53:53"] != want["-u 10.96.0.53:53"] {
		t.Errorf("ServerOwners = %v, want %v", got, want)
	}

	// By port on the Service's own addresses, by nodePort on the node's;
	// none for a short circuit.
	svc := service(ns, "np", withClusterIP("10.96.0.30"), withPorts(
		v1.ServicePort{Name: "a", Protocol: v1.ProtocolTCP, Port: 30081, NodePort: 30080},
		v1.ServicePort{Name: "b", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30081},
	), func(s *v1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.7"} })
	for _, c := range []struct {
		key  ipvs.ServiceKey
		want string
	}{
		{key("10.96.0.30", ipvs.TCP, 80), "b"},
		{key("10.96.0.30", ipvs.TCP, 30081), "a"},
		{key("192.0.2.7", ipvs.TCP, 80), "b"},
		{key("192.168.1.10", ipvs.TCP, 30081), "b"},
		{key("192.168.1.10", ipvs.TCP, 30080), "a"},
		{key("192.168.1.10", ipvs.UDP, 30080), ""},
		{ipvs.MarkKey(8192, false), ""},
	} {
		if got := portName(svc, c.key); got != c.want {
			t.Errorf("portName(%s) = %q, want %q", c.key, got, c.want)
		}
	}
}
