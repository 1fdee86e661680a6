package proxier

import (
	"cmp"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// endpoint is one usable address:port of a Service port, with the
// conditions that decide whether traffic goes to it.
type endpoint struct {
	addr        netip.AddrPort
	ready       bool
	serving     bool
	terminating bool
	nodeName    string
}

// local reports whether the endpoint runs on the named node.
func (e endpoint) local(node string) bool { return node != "" && e.nodeName == node }

// portKey names a Service port as EndpointSlices do: by name and protocol.
type portKey struct {
	name  string
	proto v1.Protocol
}

// endpoints are a Service's endpoints grouped by port, deduplicated.
type endpoints map[portKey][]endpoint

// forPort returns the endpoints of one Service port and their weights.
// New connections go to the ready ones; when none is ready, to the
// serving-but-terminating ones (KEP-1669). While ready ones exist, the
// serving-but-terminating ones stay as real servers with weight 0, so the
// connections they still hold drain instead of being reset.
func (es endpoints) forPort(name string, proto v1.Protocol) []weighted {
	return es.choose(name, proto, "")
}

// localForPort is forPort restricted to the endpoints on node: what a
// traffic policy of Local sends to. The KEP-1669 fallback applies among the
// local endpoints alone: a node whose local endpoints all terminate sends
// to them, never to another node's.
func (es endpoints) localForPort(name string, proto v1.Protocol, node string) []weighted {
	if node == "" {
		return nil
	}
	return es.choose(name, proto, node)
}

// choose implements forPort and localForPort; node "" means every node.
func (es endpoints) choose(name string, proto v1.Protocol, node string) []weighted {
	if proto == "" {
		proto = v1.ProtocolTCP
	}
	var ready, terminating []weighted
	for _, e := range es[portKey{name, proto}] {
		if node != "" && !e.local(node) {
			continue
		}
		switch {
		case e.ready:
			ready = append(ready, weighted{e, weight})
		case e.serving && e.terminating:
			terminating = append(terminating, weighted{e, weight})
		}
	}
	if len(ready) == 0 {
		return terminating
	}
	for _, t := range terminating {
		ready = append(ready, weighted{t.endpoint, 0})
	}
	return ready
}

// weighted is an endpoint with the IPVS weight it gets.
type weighted struct {
	endpoint
	weight int
}

// collectEndpoints gathers the endpoints of all slices of one Service.
//
// The same address:port may be in two slices: while the EndpointSlice
// controller moves an endpoint between slices, or when the pod network
// reuses a terminating pod's IP for a new pod. As kube-proxy does, a
// non-terminating endpoint wins over a terminating one, so a reused IP does
// not drop the new ready pod. Between two of the same kind the first slice
// by name wins, so the result never depends on event order.
func collectEndpoints(eps []*discovery.EndpointSlice, family v1.IPFamily, skip func(Reason, string, ...any)) endpoints {
	sorted := slices.Clone(eps)
	slices.SortFunc(sorted, func(a, b *discovery.EndpointSlice) int {
		return cmp.Compare(sliceName(a), sliceName(b))
	})
	es := endpoints{}
	at := map[portKey]map[netip.AddrPort]int{} // index in es[key]
	for _, s := range sorted {
		if !sliceUsable(s, family, skip) {
			continue
		}
		for _, p := range s.Ports {
			key, port, ok := slicePort(s, p, skip)
			if !ok {
				continue
			}
			if at[key] == nil {
				at[key] = map[netip.AddrPort]int{}
			}
			inSlice := map[netip.AddrPort]bool{}
			for _, ep := range s.Endpoints {
				e, ok := toEndpoint(s, ep, port, family, skip)
				if !ok {
					continue
				}
				if inSlice[e.addr] {
					skip(ReasonDuplicateInSlice, "slice %s: %s", s.Name, e.addr)
					continue
				}
				inSlice[e.addr] = true
				i, seen := at[key][e.addr]
				if !seen {
					at[key][e.addr] = len(es[key])
					es[key] = append(es[key], e)
					continue
				}
				skip(NoteDuplicateEndpoint, "slice %s: %s", s.Name, e.addr)
				if es[key][i].terminating && !e.terminating {
					es[key][i] = e
				}
			}
		}
	}
	return es
}

func sliceName(s *discovery.EndpointSlice) string {
	if s == nil {
		return ""
	}
	return s.Name
}

// sliceUsable reports whether a slice carries addresses of our family.
func sliceUsable(s *discovery.EndpointSlice, family v1.IPFamily, skip func(Reason, string, ...any)) bool {
	if s == nil {
		return false
	}
	switch s.AddressType {
	case discovery.AddressTypeFQDN:
		skip(ReasonFQDNSlice, "slice %s", s.Name)
		return false
	case discovery.AddressType(family):
		return true
	}
	skip(NoteOtherFamilySlice, "slice %s has %s", s.Name, s.AddressType)
	return false
}

// slicePort validates one port of a slice.
func slicePort(s *discovery.EndpointSlice, p discovery.EndpointPort, skip func(Reason, string, ...any)) (portKey, uint16, bool) {
	key := portKey{proto: v1.ProtocolTCP}
	if p.Name != nil {
		key.name = *p.Name
	}
	if p.Protocol != nil {
		key.proto = *p.Protocol
	}
	if p.Port == nil {
		skip(ReasonNilSlicePort, "slice %s port %q", s.Name, key.name)
		return key, 0, false
	}
	if *p.Port <= 0 || *p.Port > 65535 {
		skip(ReasonZeroSlicePort, "slice %s port %q is %d", s.Name, key.name, *p.Port)
		return key, 0, false
	}
	return key, uint16(*p.Port), true
}

// toEndpoint reads one endpoint's first address (the API allows clients to
// use only the first) and its conditions. Unset Ready and Serving mean
// true, as the API documents; unset Terminating means false.
func toEndpoint(s *discovery.EndpointSlice, ep discovery.Endpoint, port uint16, family v1.IPFamily, skip func(Reason, string, ...any)) (endpoint, bool) {
	if len(ep.Addresses) == 0 {
		skip(ReasonBadEndpointAddress, "slice %s: endpoint without address", s.Name)
		return endpoint{}, false
	}
	a, ok := parseIP(ep.Addresses[0])
	if !ok {
		skip(ReasonBadEndpointAddress, "slice %s: %q", s.Name, ep.Addresses[0])
		return endpoint{}, false
	}
	if familyOf(a) != family {
		skip(ReasonOtherFamilyEndpoint, "slice %s: %s", s.Name, a)
		return endpoint{}, false
	}
	e := endpoint{addr: netip.AddrPortFrom(a, port), ready: true, serving: true}
	if c := ep.Conditions.Ready; c != nil {
		e.ready = *c
	}
	if c := ep.Conditions.Serving; c != nil {
		e.serving = *c
	}
	if c := ep.Conditions.Terminating; c != nil {
		e.terminating = *c
	}
	if ep.NodeName != nil {
		e.nodeName = *ep.NodeName
	}
	return e, true
}

// localReady counts the distinct addresses of ready endpoints on node, over
// every port: what a health-check node port reports as localEndpoints.
func (es endpoints) localReady(node string) int {
	seen := map[netip.Addr]bool{}
	for _, list := range es {
		for _, e := range list {
			if e.ready && e.local(node) {
				seen[e.addr.Addr()] = true
			}
		}
	}
	return len(seen)
}
