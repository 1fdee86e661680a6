package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// ParseTarget reads explain's argument, ADDR:PORT[/PROTO]: "10.96.0.10:80",
// "10.96.0.10:53/udp", "[fd00::a]:80/tcp". The protocol defaults to tcp.
func ParseTarget(s string) (netip.AddrPort, ipvs.Protocol, error) {
	addr, proto, hasProto := strings.Cut(s, "/")
	p := ipvs.TCP
	if hasProto {
		var err error
		if p, err = ParseProtocol(proto); err != nil {
			return netip.AddrPort{}, 0, err
		}
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.AddrPort{}, 0, fmt.Errorf("%q: want ADDR:PORT[/PROTO]: %w", s, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), p, nil
}

// Explain says what happens on this node to a new connection to dst over
// proto: which virtual server takes it, for which Service and port,
// whether it is masqueraded and by which rule, which endpoints it may
// reach and why those; or, when nothing serves it, why not. It traces the
// connection through the view's own rules and set members (see trace.go)
// from the client from, or, when from is the zero Addr, from each kind of
// client: one outside the cluster, a pod (when a clusterCIDR is known),
// and the node itself. It is pure.
func Explain(v *proxier.View, dst netip.AddrPort, proto ipvs.Protocol, from netip.Addr) Explanation {
	x := newIndex(v)
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	key := ipvs.ServiceKey{Addr: dst.Addr(), Proto: proto, Port: dst.Port()}
	ex := Explanation{Address: dst.String(), Protocol: proto.String()}
	if sv := x.servers[key]; sv != nil {
		vs := x.server(sv)
		ex.VirtualServer = &vs
	}
	nf := newNetfilter(v.Rules, v.Entries)
	for _, src := range x.sources(dst.Addr(), from) {
		ex.Paths = append(ex.Paths, x.trace(nf, src, dst, proto))
	}
	ex.Notes = x.notes(key)
	return ex
}

// sources are the clients to trace from.
func (x *index) sources(dst, from netip.Addr) []source {
	cidrs := x.desc.clusterCIDRs
	if from.IsValid() {
		from = from.Unmap()
		s := source{kind: FromOutside, addr: from, cidr: cidrs}
		switch {
		case x.isLocal(from) || slices.Contains(x.v.Build.NodeIPs, from):
			s.kind = FromNode
		case slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Contains(from) }):
			s.kind = FromPod
		}
		return []source{s}
	}
	out := []source{{kind: FromOutside, cidr: cidrs}}
	if len(cidrs) > 0 {
		out = append(out, source{kind: FromPod, pod: cidrs[0], cidr: cidrs})
	}
	return append(out, source{kind: FromNode, addr: x.nodeSource(dst), cidr: cidrs})
}

// nodeSource is the source address the node picks for dst: dst itself
// when it is local (the kernel's local routes say so), else its first
// primary address.
func (x *index) nodeSource(dst netip.Addr) netip.Addr {
	if x.isLocal(dst) {
		return dst
	}
	if len(x.v.Build.NodeIPs) > 0 {
		return x.v.Build.NodeIPs[0]
	}
	return netip.Addr{}
}

// isLocal reports whether the node accepts a as its own: bound on kipvs0,
// in a Service CIDR (its local route), one of its interfaces' addresses,
// or loopback.
func (x *index) isLocal(a netip.Addr) bool {
	_, bound := slices.BinarySearchFunc(x.v.Addrs, a, netip.Addr.Compare)
	_, inCIDR := x.serviceCIDR(a)
	return bound || inCIDR || x.v.Build.LocalAddrs[a] || a.IsLoopback()
}

// serviceCIDR returns the Service CIDR a is in, if any: the node accepts
// it by that CIDR's local route on kipvs0.
func (x *index) serviceCIDR(a netip.Addr) (netip.Prefix, bool) {
	for _, p := range x.v.Build.ServiceCIDRs {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// trace follows one client's connection (see Path).
func (x *index) trace(nf *netfilter, src source, dst netip.AddrPort, proto ipvs.Protocol) Path {
	p := &packet{src: src, dst: dst, proto: proto, local: src.kind == FromNode}
	t := &tracer{nf: nf, describe: x.desc.describe}
	path := x.walk(t, p)
	path.From = src.kind
	if src.known() {
		path.Source = src.addr.String()
	}
	if t.err != nil {
		path.Verdict, path.Summary = VerdictUnknown, "cannot trace: "+t.err.Error()
	}
	path.Steps = t.steps
	path.Assumptions = append(t.assumptions, path.Assumptions...)
	return path
}

// VerdictUnknown: a rule the tracer does not understand (a bug in
// kube-ipvs: every rule it makes is known).
const VerdictUnknown = "unknown"

// VerdictForeign: a virtual server someone else made takes the
// connection.
const VerdictForeign = "foreign"

// walk runs the hooks in packet order. From another host or a pod:
// mangle and nat PREROUTING, then, when the address is the node's, mangle
// and filter INPUT and IPVS (which hooks INPUT after the filter table).
// From the node: mangle and nat OUTPUT and IPVS (which hooks OUTPUT), and
// only what IPVS does not take goes on to INPUT.
func (x *index) walk(t *tracer, p *packet) Path {
	local := x.isLocal(p.dst.Addr())
	stop := func(v verdict) (Path, bool) {
		switch v {
		case vDrop:
			return Path{Verdict: VerdictDropped, Summary: "dropped: " + lastDoes(t)}, true
		case vReject:
			return Path{Verdict: VerdictRejected, Summary: "rejected: " + lastDoes(t)}, true
		}
		return Path{}, false
	}
	notLocal := Path{Verdict: VerdictNotLocal, Summary: p.dst.Addr().String() + " is not an address of this node: the packet is routed on, and kube-ipvs plays no part"}
	input := func() (Path, bool) {
		for _, h := range [][2]string{{"mangle", "INPUT"}, {"filter", "INPUT"}} {
			if path, done := stop(t.hook(h[0], h[1], p)); done {
				return path, true
			}
		}
		return Path{}, false
	}
	pre := [][2]string{{"mangle", "PREROUTING"}, {"nat", "PREROUTING"}}
	if p.local {
		pre = [][2]string{{"mangle", "OUTPUT"}, {"nat", "OUTPUT"}}
	}
	for _, h := range pre {
		if path, done := stop(t.hook(h[0], h[1], p)); done {
			return path
		}
	}
	if !p.local {
		if !local {
			return notLocal
		}
		if path, done := input(); done {
			return path
		}
	}
	sv, foreign := x.lookup(t, p)
	switch {
	case foreign != nil:
		return Path{Verdict: VerdictForeign, VirtualServer: foreign.Key.String(),
			Summary: "the virtual server " + foreign.Key.String() + " takes it; kube-ipvs did not make it"}
	case sv == nil && p.local && !local:
		return notLocal
	case sv == nil && p.local:
		if path, done := input(); done {
			return path
		}
		fallthrough
	case sv == nil:
		return Path{Verdict: VerdictHost, Summary: "no virtual server takes it: the node's own sockets get it (a host process answers, or the kernel refuses)"}
	}
	return x.reach(t, p, sv)
}

// lookup is IPVS' choice of a virtual server: a firewall-mark one of the
// packet's whole mark first, then one of its address, protocol and port.
// A virtual server kube-ipvs wants but the kernel does not hold takes
// nothing.
func (x *index) lookup(t *tracer, p *packet) (*proxier.ServerView, *ipvs.Service) {
	keys := []ipvs.ServiceKey{{Addr: p.dst.Addr(), Proto: p.proto, Port: p.dst.Port()}}
	if p.mark != 0 {
		keys = append([]ipvs.ServiceKey{ipvs.MarkKey(p.mark, x.v.Family == v1.IPv6Protocol)}, keys...)
	}
	for _, k := range keys {
		if sv := x.servers[k]; sv != nil && (sv.InKernel || x.v.KernelErr != "") {
			vs := x.server(sv)
			does := fmt.Sprintf("the virtual server of %s: %s of %s", kindPort(vs), vs.Kind, vs.Service)
			if k.IsMark() {
				does = fmt.Sprintf("the packet's mark %#x selects the short circuit of %s (IPVS looks marks up before addresses)", k.Mark, vs.Service)
			}
			t.steps = append(t.steps, Step{Where: "IPVS", Rule: k.String() + " " + vs.Scheduler, Does: does})
			return sv, nil
		}
		if i := slices.IndexFunc(x.v.Foreign, func(s ipvs.Service) bool { return s.Key == k }); i >= 0 {
			t.steps = append(t.steps, Step{Where: "IPVS", Rule: k.String(), Does: "a virtual server kube-ipvs did not make"})
			return nil, &x.v.Foreign[i]
		}
	}
	return nil, nil
}

// kindPort names a virtual server's Service port: "port http (80/tcp)".
func kindPort(vs VirtualServer) string {
	if vs.Port == "" && vs.ServicePort == 0 {
		return "an unknown port"
	}
	name := vs.Port
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Sprintf("port %s", name)
}

// reach is what IPVS does with the connection: pick a real server of
// weight above 0 (none: refuse it), and what nat POSTROUTING does on the
// way to each.
func (x *index) reach(t *tracer, p *packet, sv *proxier.ServerView) Path {
	vs := x.server(sv)
	svc := x.services[sv.Owner]
	port := x.port(sv, vs.Kind, svc)
	path := Path{VirtualServer: vs.Key}
	var usable []RealServer
	for _, rs := range vs.RealServers {
		if rs.Weight > 0 {
			usable = append(usable, rs)
		}
	}
	if len(usable) == 0 {
		path.Verdict = VerdictRefused
		path.Choice = x.whyNone(vs, svc, port)
		path.Summary = fmt.Sprintf("%s takes it and has no real server to give it to: refused (ICMP port unreachable)", vs.Key)
		return path
	}
	path.Verdict = VerdictServed
	path.Choice = x.choice(vs, usable)
	masq := 0
	for i, rs := range usable {
		q := *p
		q.dst = netip.MustParseAddrPort(rs.Address)
		sub := &tracer{nf: t.nf, describe: t.describe}
		v := sub.hook("nat", "POSTROUTING", &q)
		t.fail(sub.err)
		t.assume(sub.assumptions...)
		if i == 0 {
			t.steps = append(t.steps, sub.steps...)
		}
		pe := PathEndpoint{Address: rs.Address, Pod: rs.Pod, Node: rs.Node, Masquerade: v == vMasquerade, Why: decider(t.steps, sub)}
		if pe.Masquerade {
			masq++
		}
		path.Endpoints = append(path.Endpoints, pe)
	}
	how := "the endpoint sees the client's address"
	switch {
	case masq == len(usable):
		how = "masqueraded (the endpoint sees the node's address)"
	case masq > 0:
		how = fmt.Sprintf("masqueraded to %d of them", masq)
	}
	path.Summary = fmt.Sprintf("served by %s (%s of %s, %s): %d endpoint(s), %s", vs.Key, vs.Kind, vs.Service, kindPort(vs), len(usable), how)
	return path
}

// choice says why a virtual server has the real servers it has.
func (x *index) choice(vs VirtualServer, usable []RealServer) string {
	var why string
	switch {
	case vs.Kind == KindShortCircuit:
		why = "every endpoint of the Service port: pods and the node reaching a Local port's external address are not outside clients (short circuit)"
	case vs.TrafficPolicy == "Local":
		why = fmt.Sprintf("%s Local: only the endpoints on this node (%s)", policyName(vs.Kind), x.v.NodeName)
	default:
		why = "every endpoint of the Service port (traffic policy Cluster)"
	}
	if !slices.ContainsFunc(usable, func(rs RealServer) bool { return rs.Ready }) {
		why += "; none is ready, so the serving terminating ones take new connections (KEP-1669)"
	}
	var idle []string
	for _, rs := range vs.RealServers {
		switch {
		case rs.Weight > 0:
		case rs.DrainingSince != nil:
			idle = append(idle, fmt.Sprintf("%s drains (since %s)", rs.Address, rs.DrainingSince.UTC().Format(time.RFC3339)))
		case rs.Terminating:
			idle = append(idle, rs.Address+" is terminating (kept for its connections)")
		default:
			idle = append(idle, rs.Address+" is at weight 0")
		}
	}
	if len(idle) > 0 {
		why += "; no new connection to " + strings.Join(idle, ", ")
	}
	return why
}

// whyNone says why a virtual server has no real server to take a new
// connection.
func (x *index) whyNone(vs VirtualServer, svc *proxier.ServiceView, port *v1.ServicePort) string {
	eps := portEndpoints(svc, port)
	usable := slices.ContainsFunc(eps, func(e proxier.EndpointView) bool { return e.Ready || (e.Serving && e.Terminating) })
	switch {
	case svc == nil:
		return "its Service is gone"
	case len(eps) == 0:
		return vs.Service + " has no endpoint for this port: no EndpointSlice lists one"
	case !usable:
		return fmt.Sprintf("none of the %d endpoint(s) of %s for this port is ready, or serving and terminating", len(eps), vs.Service)
	case vs.TrafficPolicy == "Local" && vs.Kind != KindShortCircuit:
		var where []string
		for _, e := range eps {
			where = append(where, fmt.Sprintf("%s on %s", cmpOr(e.Pod, e.Addr.String()), cmpOr(e.Node, "no node")))
		}
		return fmt.Sprintf("%s Local: only endpoints on this node (%s) may take it, and %s has none here; its endpoints: %s",
			policyName(vs.Kind), x.v.NodeName, vs.Service, strings.Join(where, ", "))
	}
	return "no real server of weight above 0"
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// lastDoes is what the last rule the tracer matched did.
func lastDoes(t *tracer) string {
	if len(t.steps) == 0 {
		return "no rule of kube-ipvs matched"
	}
	return t.steps[len(t.steps)-1].Does
}

// decider is what decided whether a connection is masqueraded: the nat
// POSTROUTING rule when it decides by itself (hairpin, the node's short
// circuit), else the rule of KIPVS-CLUSTER or KIPVS-EXTERNAL that marked
// it for masquerade or let it keep its source.
func decider(pre []Step, post *tracer) string {
	last := lastDoes(post)
	if n := len(post.steps); n > 0 {
		r := post.steps[n-1].Rule
		if strings.Contains(r, "--match-set") || strings.Contains(r, "--src-type") {
			return last
		}
	}
	for i := len(pre) - 1; i >= 0; i-- {
		s := pre[i]
		if (s.Where == "nat "+proxier.ChainCluster || s.Where == "nat "+proxier.ChainExternal) && s.Rule != "-j ACCEPT" {
			return s.Does
		}
	}
	return last
}
