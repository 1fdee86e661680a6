package inspect

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

var webKey = ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: ipvs.TCP, Port: 80}

// drainingWeb is web with web-a and web-b, web-b then gone from the slice
// with a connection open (it drains), counters on both, ClientIP affinity
// and a second Service claiming the same ClusterIP and port.
func drainingWeb(t *testing.T) *bed {
	b := newBed(t)
	affinity := func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptrTo(int32(600))}}
	}
	b.put(svc("web", "10.96.0.10", []string{"http/tcp/80"}, affinity), slice("web", webA(), webB()),
		svc("zweb", "10.96.0.10", []string{"http/tcp/80"}))
	a, bb := netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.244.2.2:8080")
	for _, err := range []error{
		b.ipvs.SetConns(webKey, bb, 1, 3),
		b.ipvs.SetStats(webKey, bb, ipvs.Stats{Conns: 4, PacketsIn: 40, PacketsOut: 30, BytesIn: 2_500_000, BytesOut: 12_000}),
		b.ipvs.SetStats(webKey, a, ipvs.Stats{Conns: 1, PacketsIn: 6, PacketsOut: 4, BytesIn: 412, BytesOut: 300}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b.put(slice("web", webA()))
	b.clock.Step(90 * time.Second)
	return b
}

func TestShow(t *testing.T) {
	b := drainingWeb(t)
	s := NewShow(b.p.View())
	if s.Node != thisNode || s.Family != "IPv4" || !s.Synced || !s.Stats || !s.At.Equal(start.Add(90*time.Second)) || len(s.Foreign) != 0 {
		t.Fatalf("show = %+v", s)
	}
	if len(s.VirtualServers) != 1 {
		t.Fatalf("virtual servers = %+v", s.VirtualServers)
	}
	vs := s.VirtualServers[0]
	if vs.Key != "-t 10.96.0.10:80" || vs.Address != "10.96.0.10:80" || vs.Protocol != "tcp" || vs.Kind != KindClusterIP ||
		vs.Service != "default/web" || vs.Port != "http" || vs.ServicePort != 80 || vs.Scheduler != "rr" ||
		vs.SessionAffinity != "ClientIP" || vs.SessionAffinityTimeout != 600 || vs.TrafficPolicy != "Cluster" || !vs.InKernel ||
		len(vs.AlsoClaimedBy) != 1 || vs.AlsoClaimedBy[0] != "default/zweb" {
		t.Fatalf("virtual server = %+v", vs)
	}
	if len(vs.RealServers) != 2 {
		t.Fatalf("real servers = %+v", vs.RealServers)
	}
	a, d := vs.RealServers[0], vs.RealServers[1]
	if a.Pod != "default/web-a" || a.Node != thisNode || !a.Local || !a.Ready || !a.InEndpointSlices || a.Weight != 1 ||
		a.DrainingSince != nil || a.Stats == nil || a.Stats.PacketsIn != 6 {
		t.Errorf("web-a = %+v", a)
	}
	if d.Address != "10.244.2.2:8080" || d.InEndpointSlices || d.Weight != 0 || d.DrainingSince == nil || !d.DrainingSince.Equal(start) ||
		d.ActiveConns != 1 || d.InactiveConns != 3 || d.Stats == nil || d.Stats.Conns != 4 || d.Stats.BytesIn != 2_500_000 {
		t.Errorf("draining web-b = %+v", d)
	}

	var out bytes.Buffer
	if err := WriteShow(&out, s); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	mustContain(t, "table", text,
		"kube-ipvs on node-a (IPv4, synced) at 2026-05-01T12:01:30Z: 1 virtual servers, 0 foreign",
		"Prot LocalAddress:Port", "  -> RemoteAddress:Port", "ActiveConn  InActConn",
		"TCP  10.96.0.10:80", "ClusterIP", "default/web:http", "ClientIP 600s", "also claimed by default/zweb",
		"  -> 10.244.1.2:8080", "default/web-a", "ready,local",
		"  -> 10.244.2.2:8080", "gone", "2.5M", "12.0K", "for 1m30s")
	// Every real server line has its columns under the header's.
	lines := strings.Split(text, "\n")
	col := strings.Index(lines[2], "ActiveConn")
	for _, l := range lines[3:] {
		if strings.HasPrefix(l, "  -> ") && (len(l) <= col || l[col-1] != ' ' || l[col] == ' ') {
			t.Errorf("real server line not aligned with its header at column %d:\n%s\n%s", col, lines[2], l)
		}
	}
}

// TestShowJSON pins the JSON field names: they are documented and scripts
// read them.
func TestShowJSON(t *testing.T) {
	b := drainingWeb(t)
	var out bytes.Buffer
	if err := WriteJSON(&out, NewShow(b.p.View())); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"node", "family", "synced", "at", "virtualServers", "foreign", "stats"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("no %q in %s", k, out.String())
		}
	}
	vs := raw["virtualServers"].([]any)[0].(map[string]any)
	for _, k := range []string{"key", "address", "protocol", "kind", "service", "port", "servicePort", "alsoClaimedBy", "scheduler",
		"sessionAffinity", "sessionAffinityTimeoutSeconds", "trafficPolicy", "inKernel", "realServers"} {
		if _, ok := vs[k]; !ok {
			t.Errorf("no %q in a virtual server: %v", k, vs)
		}
	}
	rs := vs["realServers"].([]any)[1].(map[string]any)
	for _, k := range []string{"address", "weight", "local", "inEndpointSlices", "ready", "serving", "terminating", "drainingSince",
		"inKernel", "activeConns", "inactiveConns", "stats"} {
		if _, ok := rs[k]; !ok {
			t.Errorf("no %q in a real server: %v", k, rs)
		}
	}
	st := rs["stats"].(map[string]any)
	for _, k := range []string{"conns", "packetsIn", "packetsOut", "bytesIn", "bytesOut"} {
		if _, ok := st[k]; !ok {
			t.Errorf("no %q in stats: %v", k, st)
		}
	}
}

func TestWriteExplanation(t *testing.T) {
	b := newBed(t)
	b.put(svc("local", "10.96.0.30", []string{"http/tcp/80/30081"}, nodePort, localETP), slice("local", bLocal()),
		svc("web", "10.96.0.10", []string{"http/tcp/80"}), slice("web", webA()))
	var out bytes.Buffer
	if err := WriteExplanation(&out, b.explain("192.168.60.11:30081")); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "Local NodePort", out.String(),
		"192.168.60.11:30081/tcp\nvirtual server -t 192.168.60.11:30081 -s rr: NodePort of default/local, port http",
		"traffic policy Local; 0 real server(s)",
		"from outside the cluster: REFUSED",
		"has none here; its endpoints: default/b-local on node-b",
		"from a pod: SERVED", "mangle KIPVS-SHORT-CIRCUIT-PODS", "IPVS", "-f 8192 rr",
		"    -> 10.244.2.3:8080  default/b-local  node-b  source kept: externalTrafficPolicy Local",
		"from this node (source 192.168.60.11): SERVED", "masqueraded: the node reaching a short circuit")

	out.Reset()
	if err := WriteExplanation(&out, b.explain("10.96.0.10:81")); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "not a Service port", out.String(), "no virtual server of kube-ipvs on 10.96.0.10:81/tcp",
		"from outside the cluster: REJECTED", "filter KIPVS-FILTER", "--reject-with icmp-port-unreachable",
		"notes:\n  - 10.96.0.10 is a Service address of default/web (80/tcp)")

	out.Reset()
	if err := WriteJSON(&out, b.explain("10.96.0.10:80")); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "JSON", out.String(), `"address": "10.96.0.10:80"`, `"protocol": "tcp"`, `"virtualServer": {`, `"paths": [`,
		`"from": "outside"`, `"verdict": "served"`, `"summary": `, `"endpoints": [`, `"masquerade": true`, `"why": `,
		`"choice": `, `"steps": [`, `"where": "nat KIPVS-SERVICES"`, `"rule": `, `"does": `, `"assumptions": [`)
}

func TestEndpointOfTheRightPort(t *testing.T) {
	// One pod behind two ports of one Service: each virtual server finds
	// its own port's endpoint.
	b := newBed(t)
	s := slice("two", ep("10.244.1.9", thisNode, "two-a"))
	s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptrTo("dns"), Protocol: ptrTo(v1.ProtocolUDP), Port: ptrTo(int32(5353))})
	b.put(svc("two", "10.96.0.11", []string{"http/tcp/80", "dns/udp/53"}), s)
	show := NewShow(b.p.View())
	if len(show.VirtualServers) != 2 {
		t.Fatalf("virtual servers = %+v", show.VirtualServers)
	}
	for _, vs := range show.VirtualServers {
		rs := vs.RealServers[0]
		if rs.Pod != "default/two-a" || !rs.InEndpointSlices {
			t.Errorf("%s: real server %+v", vs.Key, rs)
		}
		if (vs.Protocol == "udp") != (vs.Port == "dns") || (vs.Port == "dns") != (rs.Address == "10.244.1.9:5353") {
			t.Errorf("%s: port %q, real server %s", vs.Key, vs.Port, rs.Address)
		}
	}
}
