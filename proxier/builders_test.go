package proxier

import (
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Builders for API objects in tests: a sensible default, changed by
// mutator functions.

const testNode = "node-a"

var v4Build = BuildConfig{NodeName: testNode, Scheduler: "rr", Family: v1.IPv4Protocol}

func service(ns, name string, mut ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.ServiceSpec{
			Type:            v1.ServiceTypeClusterIP,
			ClusterIP:       "10.96.0.10",
			ClusterIPs:      []string{"10.96.0.10"},
			SessionAffinity: v1.ServiceAffinityNone,
			Ports:           []v1.ServicePort{svcPort("http", v1.ProtocolTCP, 80)},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func svcPort(name string, proto v1.Protocol, port int32) v1.ServicePort {
	return v1.ServicePort{Name: name, Protocol: proto, Port: port}
}

func withClusterIP(ips ...string) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.ClusterIP = ""
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
		s.Spec.ClusterIPs = ips
	}
}

func withPorts(ps ...v1.ServicePort) func(*v1.Service) {
	return func(s *v1.Service) { s.Spec.Ports = ps }
}

func withAffinity(timeout *int32) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

func slice(ns, name, svcName string, mut ...func(*discovery.EndpointSlice)) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{discovery.LabelServiceName: svcName},
		},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{slicePortOf("http", v1.ProtocolTCP, 8080)},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

func slicePortOf(name string, proto v1.Protocol, port int32) discovery.EndpointPort {
	return discovery.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(port)}
}

func withSlicePorts(ps ...discovery.EndpointPort) func(*discovery.EndpointSlice) {
	return func(s *discovery.EndpointSlice) { s.Ports = ps }
}

func withEndpoints(eps ...discovery.Endpoint) func(*discovery.EndpointSlice) {
	return func(s *discovery.EndpointSlice) { s.Endpoints = append(s.Endpoints, eps...) }
}

func withAddressType(t discovery.AddressType) func(*discovery.EndpointSlice) {
	return func(s *discovery.EndpointSlice) { s.AddressType = t }
}

func ep(addr string, mut ...func(*discovery.Endpoint)) discovery.Endpoint {
	e := discovery.Endpoint{
		Addresses:  []string{addr},
		Conditions: discovery.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To("node-b"),
	}
	for _, m := range mut {
		m(&e)
	}
	return e
}

func notReady(e *discovery.Endpoint) { e.Conditions.Ready = ptr.To(false) }

// terminating is an endpoint that is shutting down but still serving.
func terminating(e *discovery.Endpoint) {
	e.Conditions = discovery.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
}

func onNode(n string) func(*discovery.Endpoint) {
	return func(e *discovery.Endpoint) { e.NodeName = ptr.To(n) }
}

// fragmentDump renders a fragment the way State.Dump renders a state.
// fragmentDump renders what a fragment asks for as a State dump: its
// virtual servers, addresses and every set member, the servers' included.
func fragmentDump(f *Fragment) string {
	s := NewState()
	for _, p := range f.Servers {
		s.Servers[p.Service.Key] = p.VirtualServer
		for _, e := range p.Entries {
			s.Entries[e] = struct{}{}
		}
	}
	for _, a := range f.Addrs {
		s.Addrs[a] = struct{}{}
	}
	for _, e := range f.Entries {
		s.Entries[e] = struct{}{}
	}
	return s.Dump()
}

// lines joins lines with a trailing newline, for expected dumps.
func lines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

func nameOf(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
