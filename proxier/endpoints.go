package proxier

import (
	"cmp"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
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

// endpoints are a Service's endpoints grouped by port, deduplicated, one
// entry per port key (a Service has few: a list is cheaper than a map).
type endpoints []portEndpoints

// of returns the endpoints of one port key.
func (es endpoints) of(key portKey) []endpoint {
	for i := range es {
		if es[i].key == key {
			return es[i].list
		}
	}
	return nil
}

// realServers are the real servers of a Service port's virtual servers:
// their Dests, sorted by address, and the addresses of those that run on
// this node (each gets a LOOP-BACK member). Every virtual server of the
// port that sends to the same endpoints shares the one Dests slice: a
// VirtualServer is replaced, never modified in place.
type realServers struct {
	dests []ipvs.Destination
	local []netip.AddrPort
}

// forPort returns the real servers of one Service port; self is this
// node's name. New connections go to the ready endpoints; when none is
// ready, to the serving-but-terminating ones (KEP-1669). While ready ones
// exist, the serving-but-terminating ones stay as real servers with weight
// 0, so the connections they still hold drain instead of being reset.
func (es endpoints) forPort(name string, proto v1.Protocol, self string) realServers {
	return es.choose(name, proto, "", self)
}

// localForPort is forPort restricted to the endpoints on node (this one):
// what a traffic policy of Local sends to. The KEP-1669 fallback applies
// among the local endpoints alone: a node whose local endpoints all
// terminate sends to them, never to another node's.
func (es endpoints) localForPort(name string, proto v1.Protocol, node string) realServers {
	if node == "" {
		return realServers{}
	}
	return es.choose(name, proto, node, node)
}

// choose implements forPort and localForPort; node "" means every node.
// It counts first, so the lists are allocated once at their exact size.
func (es endpoints) choose(name string, proto v1.Protocol, node, self string) realServers {
	if proto == "" {
		proto = v1.ProtocolTCP
	}
	list := es.of(portKey{name, proto})
	use := func(e endpoint) bool { return node == "" || e.local(node) }
	isTerminating := func(e endpoint) bool { return !e.ready && e.serving && e.terminating }
	ready, terminating, local := 0, 0, 0
	for _, e := range list {
		switch {
		case !use(e):
			continue
		case e.ready:
			ready++
		case isTerminating(e):
			terminating++
		default:
			continue
		}
		if e.local(self) {
			local++
		}
	}
	if ready+terminating == 0 {
		return realServers{}
	}
	rs := realServers{dests: make([]ipvs.Destination, 0, ready+terminating)}
	if local > 0 {
		rs.local = make([]netip.AddrPort, 0, local)
	}
	add := func(e endpoint, w int) {
		rs.dests = append(rs.dests, ipvs.Destination{Addr: e.addr, Weight: w, Forward: ipvs.Masquerade})
		if e.local(self) {
			rs.local = append(rs.local, e.addr)
		}
	}
	// The ready ones take new connections; the terminating ones only
	// when none is ready.
	drainWeight := 0
	if ready == 0 {
		drainWeight = weight
	}
	for _, e := range list {
		if use(e) && e.ready {
			add(e, weight)
		}
	}
	for _, e := range list {
		if use(e) && isTerminating(e) {
			add(e, drainWeight)
		}
	}
	slices.SortFunc(rs.dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
	return rs
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
	sorted := eps
	if len(eps) > 1 {
		sorted = slices.Clone(eps)
		slices.SortFunc(sorted, func(a, b *discovery.EndpointSlice) int {
			return cmp.Compare(sliceName(a), sliceName(b))
		})
	}
	var ports endpoints
	var pass int32 // numbers each (slice, port): an address seen twice in one pass is a duplicate in the slice
	for _, s := range sorted {
		if !sliceUsable(s, family, skip) {
			continue
		}
		for _, p := range s.Ports {
			key, port, ok := slicePort(s, p, skip)
			if !ok {
				continue
			}
			pass++
			pe := portEndpointsOf(&ports, key, len(s.Endpoints))
			for _, ep := range s.Endpoints {
				e, ok := toEndpoint(s, ep, port, family, skip)
				if !ok {
					continue
				}
				i, seen := pe.find(e.addr)
				switch {
				case !seen:
					pe.add(e, pass)
				case pe.pass[i] == pass:
					skip(ReasonDuplicateInSlice, "slice %s: %s", s.Name, e.addr)
				default:
					pe.pass[i] = pass
					skip(NoteDuplicateEndpoint, "slice %s: %s", s.Name, e.addr)
					if pe.list[i].terminating && !e.terminating {
						pe.list[i] = e
					}
				}
			}
		}
	}
	return ports
}

// portEndpoints are the endpoints of one port key and, for
// collectEndpoints while it gathers them, the last pass that listed each
// and, once the list outgrows a linear scan, an index by address.
type portEndpoints struct {
	key  portKey
	list []endpoint
	pass []int32
	at   map[netip.AddrPort]int
}

// scanLimit is the longest list searched by a linear scan, which for so
// few endpoints is faster than a map and allocates nothing.
const scanLimit = 16

// portEndpointsOf returns the entry of key in *ports, adding one with room
// for hint endpoints when there is none. A Service has few port keys.
func portEndpointsOf(ports *endpoints, key portKey, hint int) *portEndpoints {
	for i := range *ports {
		if (*ports)[i].key == key {
			return &(*ports)[i]
		}
	}
	*ports = append(*ports, portEndpoints{key: key, list: make([]endpoint, 0, hint), pass: make([]int32, 0, hint)})
	return &(*ports)[len(*ports)-1]
}

// find returns the index in the list of the endpoint with address a.
func (pe *portEndpoints) find(a netip.AddrPort) (int, bool) {
	if pe.at != nil {
		i, ok := pe.at[a]
		return i, ok
	}
	for i, e := range pe.list {
		if e.addr == a {
			return i, true
		}
	}
	return 0, false
}

// add appends e, first listed in pass.
func (pe *portEndpoints) add(e endpoint, pass int32) {
	pe.list = append(pe.list, e)
	pe.pass = append(pe.pass, pass)
	switch {
	case pe.at != nil:
		pe.at[e.addr] = len(pe.list) - 1
	case len(pe.list) > scanLimit:
		pe.at = make(map[netip.AddrPort]int, 2*len(pe.list))
		for i, x := range pe.list {
			pe.at[x.addr] = i
		}
	}
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
	for _, pe := range es {
		for _, e := range pe.list {
			if e.ready && e.local(node) {
				seen[e.addr.Addr()] = true
			}
		}
	}
	return len(seen)
}
