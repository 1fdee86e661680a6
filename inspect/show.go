package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// NewShow lists every virtual server of the view as Kubernetes sees it:
// which Service and port it is for, of which kind, and each real server
// with its pod, node, conditions and counters. It is pure.
func NewShow(v *proxier.View) Show {
	x := newIndex(v)
	out := Show{
		Node: v.NodeName, Family: string(v.Family), Synced: v.Synced, DryRun: v.DryRun, At: v.At,
		VirtualServers: make([]VirtualServer, 0, len(v.Servers)), Foreign: make([]ForeignServer, 0, len(v.Foreign)),
		Stats: v.HasStats, KernelError: v.KernelErr,
	}
	for i := range v.Servers {
		out.VirtualServers = append(out.VirtualServers, x.server(&v.Servers[i]))
	}
	for _, s := range v.Foreign {
		out.Foreign = append(out.Foreign, ForeignServer{Key: s.Key.String(), Scheduler: s.Scheduler})
	}
	return out
}

// index finds the parts of a view by key and name.
type index struct {
	v        *proxier.View
	servers  map[ipvs.ServiceKey]*proxier.ServerView
	services map[types.NamespacedName]*proxier.ServiceView
	desc     describer
}

func newIndex(v *proxier.View) *index {
	x := &index{v: v, servers: map[ipvs.ServiceKey]*proxier.ServerView{}, services: map[types.NamespacedName]*proxier.ServiceView{}}
	for i := range v.Servers {
		x.servers[v.Servers[i].Service.Key] = &v.Servers[i]
	}
	for i := range v.Services {
		x.services[v.Services[i].Name] = &v.Services[i]
	}
	x.desc = describer{family: v.Family, masqueradeAll: v.RuleConfig.MasqueradeAll}
	for _, p := range v.RuleConfig.ClusterCIDRs {
		if p.Addr().Is6() == (v.Family == v1.IPv6Protocol) {
			x.desc.clusterCIDRs = append(x.desc.clusterCIDRs, p.Masked())
		}
	}
	return x
}

func (x *index) set(base string) string { return proxier.SetName(base, x.v.Family) }

// server describes one virtual server.
func (x *index) server(sv *proxier.ServerView) VirtualServer {
	k := sv.Service.Key
	out := VirtualServer{
		Key: k.String(), Kind: x.kind(sv), Service: sv.Owner.String(), Scheduler: sv.Service.Scheduler,
		Flags: sv.Service.Flags.Names(sv.Service.Scheduler), SessionAffinity: string(v1.ServiceAffinityNone),
		InKernel: sv.InKernel, RealServers: make([]RealServer, 0, len(sv.Dests)),
	}
	if k.IsMark() {
		out.Mark = k.Mark
	} else {
		out.Address, out.Protocol = k.AddrPort().String(), k.Proto.String()
	}
	if sv.Service.Persistent {
		out.SessionAffinity, out.SessionAffinityTimeout = string(v1.ServiceAffinityClientIP), sv.Service.Timeout
	}
	for _, c := range sv.Claimants {
		out.AlsoClaimedBy = append(out.AlsoClaimedBy, c.String())
	}
	svc := x.services[sv.Owner]
	port := x.port(sv, out.Kind, svc)
	if port != nil {
		out.Port, out.ServicePort = port.Name, port.Port
	}
	out.TrafficPolicy = policy(out.Kind, svc)
	for _, e := range sv.Entries {
		switch e.Set() {
		case x.set(proxier.SetSourceRanges):
			out.SourceRanges = append(out.SourceRanges, prefixString(e.Entry().Net))
		case x.set(proxier.SetShortCircuit):
			out.ShortCircuitMark = e.Entry().Mark
		}
	}
	if k.IsMark() {
		for _, e := range x.v.Entries {
			if m := e.Entry(); e.Set() == x.set(proxier.SetShortCircuit) && m.Mark == k.Mark {
				out.ShortCircuitOf = append(out.ShortCircuitOf, netip.AddrPortFrom(m.Addr, m.Port).String()+"/"+m.Proto)
			}
		}
	}
	for _, d := range sv.Dests {
		out.RealServers = append(out.RealServers, x.realServer(d, svc, port))
	}
	return out
}

// kind tells a virtual server's kind by the set its key is a member of.
func (x *index) kind(sv *proxier.ServerView) string {
	k := sv.Service.Key
	if k.IsMark() {
		return KindShortCircuit
	}
	kinds := map[string]string{
		x.set(proxier.SetClusterIP): KindClusterIP, x.set(proxier.SetNodePort): KindNodePort,
		x.set(proxier.SetLoadBalancer): KindLoadBalancer, x.set(proxier.SetExternalIP): KindExternalIP,
	}
	for _, e := range sv.Entries {
		if kind, ok := kinds[e.Set()]; ok && e.Entry().Addr == k.Addr && e.Entry().Port == k.Port {
			return kind
		}
	}
	return ""
}

// port finds the Service port a virtual server is for: by port number and
// protocol, by nodePort for a NodePort, and for a short circuit that of
// an external virtual server whose SHORT-CIRCUIT member has its mark.
func (x *index) port(sv *proxier.ServerView, kind string, svc *proxier.ServiceView) *v1.ServicePort {
	if svc == nil {
		return nil
	}
	k := sv.Service.Key
	if kind == KindShortCircuit {
		for _, o := range x.v.Servers {
			if o.Owner != sv.Owner || o.Service.Key.IsMark() {
				continue
			}
			for _, e := range o.Entries {
				if e.Set() == x.set(proxier.SetShortCircuit) && e.Entry().Mark == k.Mark {
					return x.port(&o, x.kind(&o), svc)
				}
			}
		}
		return nil
	}
	for i, sp := range svc.Service.Spec.Ports {
		n := sp.Port
		if kind == KindNodePort {
			n = sp.NodePort
		}
		if ipvsProto(sp.Protocol) == k.Proto && n == int32(k.Port) {
			return &svc.Service.Spec.Ports[i]
		}
	}
	return nil
}

// policy is the traffic policy that chose a kind's real servers.
func policy(kind string, svc *proxier.ServiceView) string {
	if svc == nil {
		return ""
	}
	switch kind {
	case KindClusterIP:
		if p := svc.Service.Spec.InternalTrafficPolicy; p != nil && *p == v1.ServiceInternalTrafficPolicyLocal {
			return "Local"
		}
	case KindNodePort, KindLoadBalancer, KindExternalIP:
		if svc.Service.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
			return "Local"
		}
	}
	return "Cluster"
}

// policyName names the policy field a kind follows.
func policyName(kind string) string {
	if kind == KindClusterIP {
		return "internalTrafficPolicy"
	}
	return "externalTrafficPolicy"
}

// realServer describes one real server with its endpoint, if the
// Service's slices still have it.
func (x *index) realServer(d proxier.DestView, svc *proxier.ServiceView, port *v1.ServicePort) RealServer {
	rs := RealServer{
		Address: d.Addr.String(), Weight: d.Weight, InKernel: d.InKernel,
		ActiveConns: d.ActiveConns, InactiveConns: d.InactiveConns,
	}
	if ep, ok := x.endpoint(svc, port, d.Addr); ok {
		rs.Pod, rs.Node, rs.Local = ep.Pod, ep.Node, ep.Node != "" && ep.Node == x.v.NodeName
		rs.InEndpointSlices, rs.Ready, rs.Serving, rs.Terminating = true, ep.Ready, ep.Serving, ep.Terminating
	}
	if !d.DrainSince.IsZero() {
		since := d.DrainSince
		rs.DrainingSince = &since
	}
	if x.v.HasStats && d.InKernel {
		s := d.Stats
		rs.Stats = &Stats{Conns: s.Conns, PacketsIn: s.PacketsIn, PacketsOut: s.PacketsOut, BytesIn: s.BytesIn, BytesOut: s.BytesOut}
	}
	return rs
}

// endpoint finds the endpoint of a Service port at addr; of any port when
// the port is not known.
func (x *index) endpoint(svc *proxier.ServiceView, port *v1.ServicePort, addr netip.AddrPort) (proxier.EndpointView, bool) {
	if svc == nil {
		return proxier.EndpointView{}, false
	}
	i := slices.IndexFunc(svc.Endpoints, func(e proxier.EndpointView) bool {
		return e.Addr == addr && (port == nil || (e.Port == port.Name && ipvsProto(e.Protocol) == ipvsProto(port.Protocol)))
	})
	if i < 0 {
		return proxier.EndpointView{}, false
	}
	return svc.Endpoints[i], true
}

// portEndpoints are the endpoints of a Service port (every port's when it
// is not known).
func portEndpoints(svc *proxier.ServiceView, port *v1.ServicePort) []proxier.EndpointView {
	if svc == nil {
		return nil
	}
	var out []proxier.EndpointView
	for _, e := range svc.Endpoints {
		if port == nil || (e.Port == port.Name && ipvsProto(e.Protocol) == ipvsProto(port.Protocol)) {
			out = append(out, e)
		}
	}
	return out
}

// ipvsProto maps a Kubernetes protocol as the apiserver defaults it (unset
// is TCP); 0 for one IPVS does not carry.
func ipvsProto(p v1.Protocol) ipvs.Protocol {
	switch p {
	case v1.ProtocolTCP, "":
		return ipvs.TCP
	case v1.ProtocolUDP:
		return ipvs.UDP
	case v1.ProtocolSCTP:
		return ipvs.SCTP
	}
	return 0
}

// ParseProtocol reads "tcp", "udp" or "sctp" (any case).
func ParseProtocol(s string) (ipvs.Protocol, error) {
	for _, p := range []ipvs.Protocol{ipvs.TCP, ipvs.UDP, ipvs.SCTP} {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("protocol %q: want tcp, udp or sctp", s)
}
