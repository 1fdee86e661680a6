package proxier

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	netutils "k8s.io/utils/net"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// BuildConfig is the part of the configuration Build depends on.
type BuildConfig struct {
	NodeName  string
	Scheduler string
	Family    v1.IPFamily // the family this proxier serves: v1.IPv4Protocol or v1.IPv6Protocol
}

// Fragment is what one Kubernetes Service contributes to the desired State:
// its virtual servers, each with the set members that exist because of it,
// the addresses the node must accept (bound on kipvs0), and the set members
// of the Service as a whole. Every list is sorted, so equal inputs give
// equal fragments. Nothing is derived from the server keys later: what a
// fragment needs bound or in a set, it says.
type Fragment struct {
	Servers []ServerPart
	Addrs   []netip.Addr
	Entries []SetEntry
}

// ServerPart is one virtual server of a Fragment and the set members that
// come with it. When two Services claim one virtual server, only the owner's
// members are programmed.
type ServerPart struct {
	VirtualServer
	Entries []SetEntry
}

// Equal reports whether two fragments program the same kernel state.
func (f *Fragment) Equal(o *Fragment) bool {
	if f == nil || o == nil {
		return f == o
	}
	return slices.EqualFunc(f.Servers, o.Servers, func(a, b ServerPart) bool {
		return a.Service == b.Service && slices.Equal(a.Dests, b.Dests) && slices.Equal(a.Entries, b.Entries)
	}) && slices.Equal(f.Addrs, o.Addrs) && slices.Equal(f.Entries, o.Entries)
}

// empty reports whether the fragment programs nothing.
func (f *Fragment) empty() bool {
	return f == nil || (len(f.Servers) == 0 && len(f.Addrs) == 0 && len(f.Entries) == 0)
}

// Reason says why part of an API object was not programmed.
type Reason string

// The reasons Build skips input. Each is counted; none stops the valid rest
// of the same object from being programmed.
const (
	ReasonBadClusterIP          Reason = "unparseable clusterIP"
	ReasonNilAffinityConfig     Reason = "nil sessionAffinityConfig"
	ReasonUnknownProtocol       Reason = "unsupported protocol"
	ReasonZeroServicePort       Reason = "service port 0"
	ReasonFQDNSlice             Reason = "FQDN EndpointSlice"
	ReasonNilSlicePort          Reason = "nil EndpointSlice port"
	ReasonZeroSlicePort         Reason = "EndpointSlice port 0 or out of range"
	ReasonBadEndpointAddress    Reason = "unparseable endpoint address"
	ReasonOtherFamilyEndpoint   Reason = "endpoint address of the other family"
	ReasonDuplicateInSlice      Reason = "same endpoint twice in one slice"
	ReasonSliceWithoutService   Reason = "EndpointSlice without kubernetes.io/service-name label"
	ReasonConflictingVIPAndPort Reason = "virtual server claimed by another Service"
)

// Input that is normal, not bad: a dual-stack Service's slice of the other
// family, and an endpoint in two slices while the EndpointSlice controller
// moves it (or a reused pod IP). It is reported for debugging only: never
// counted as skipped, never logged above debug.
const (
	NoteOtherFamilySlice  Reason = "EndpointSlice of the other family"
	NoteDuplicateEndpoint Reason = "same endpoint in two slices"
)

// Normal reports whether r is normal input (a Note…), not bad input.
func (r Reason) Normal() bool { return r == NoteOtherFamilySlice || r == NoteDuplicateEndpoint }

// Skip is one piece of input that was not programmed, and why.
type Skip struct {
	Reason Reason
	Detail string
}

// defaultAffinityTimeout is the apiserver's default for
// sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
const defaultAffinityTimeout = 10800

// weight is the weight of every real server that takes new connections;
// all endpoints are equal.
const weight = 1

// BuildService computes what one Service and its EndpointSlices program on
// this node. It is pure: no clock, no I/O, and the same inputs always give
// the same Fragment. Headless, ExternalName and Services without a
// ClusterIP of cfg.Family give an empty fragment. Input the apiserver would
// have defaulted or rejected is skipped with a Skip, never a panic.
func BuildService(svc *v1.Service, eps []*discovery.EndpointSlice, cfg BuildConfig) (*Fragment, []Skip) {
	f := &Fragment{}
	if svc == nil || svc.Spec.Type == v1.ServiceTypeExternalName {
		return f, nil
	}
	var skips []Skip
	skip := func(r Reason, format string, args ...any) {
		skips = append(skips, Skip{Reason: r, Detail: fmt.Sprintf(format, args...)})
	}
	vip, ok := clusterIP(svc, cfg.Family, skip)
	if !ok {
		return f, skips
	}
	base := ipvs.Service{Scheduler: cfg.Scheduler, Flags: schedFlags(cfg.Scheduler)}
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		base.Persistent, base.Timeout = true, affinityTimeout(svc, skip)
	}
	ends := collectEndpoints(eps, cfg.Family, skip)
	for _, sp := range svc.Spec.Ports {
		proto, ok := protocol(sp.Protocol)
		if !ok {
			skip(ReasonUnknownProtocol, "port %q protocol %q", sp.Name, sp.Protocol)
			continue
		}
		if sp.Port <= 0 || sp.Port > 65535 {
			skip(ReasonZeroServicePort, "port %q is %d", sp.Name, sp.Port)
			continue
		}
		part := ServerPart{VirtualServer: VirtualServer{Service: base}}
		part.Service.Key = ipvs.ServiceKey{Addr: vip, Proto: proto, Port: uint16(sp.Port)}
		part.Entries = append(part.Entries, clusterIPEntry(cfg.Family, part.Service.Key))
		for _, ep := range ends.forPort(sp.Name, sp.Protocol) {
			part.Dests = append(part.Dests, ipvs.Destination{Addr: ep.addr, Weight: ep.weight, Forward: ipvs.Masquerade})
			if ep.local(cfg.NodeName) {
				part.Entries = append(part.Entries, loopBackEntry(cfg.Family, ep.addr, proto))
			}
		}
		slices.SortFunc(part.Dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
		slices.SortFunc(part.Entries, compareEntries)
		part.Entries = slices.Compact(part.Entries)
		f.Servers = append(f.Servers, part)
	}
	slices.SortFunc(f.Servers, func(a, b ServerPart) int { return a.Service.Key.Compare(b.Service.Key) })
	f.Servers = slices.CompactFunc(f.Servers, func(a, b ServerPart) bool { return a.Service.Key == b.Service.Key })
	if len(f.Servers) > 0 {
		// A ClusterIP is accepted on the node by binding it on kipvs0.
		f.Addrs = []netip.Addr{vip}
		f.Entries = []SetEntry{vipEntry(cfg.Family, vip)}
	}
	return f, skips
}

// schedFlags are the scheduler flags kube-ipvs sets, as kube-proxy does:
// mh hashes the source port too (mh-port), so that the connections of one
// client spread over the real servers.
func schedFlags(scheduler string) ipvs.SchedFlags {
	if scheduler == "mh" {
		return ipvs.SchedFlag2
	}
	return 0
}

// clusterIP returns the Service's ClusterIP of the given family. Headless
// and address-less Services have none; that is not a skip.
func clusterIP(svc *v1.Service, family v1.IPFamily, skip func(Reason, string, ...any)) (netip.Addr, bool) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if s == "" || s == v1.ClusterIPNone {
			return netip.Addr{}, false
		}
		a, ok := parseIP(s)
		if !ok {
			skip(ReasonBadClusterIP, "clusterIP %q", s)
			continue
		}
		if familyOf(a) == family {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// affinityTimeout returns the ClientIP affinity timeout, defaulting a nil
// config the way the apiserver does.
func affinityTimeout(svc *v1.Service, skip func(Reason, string, ...any)) uint32 {
	c := svc.Spec.SessionAffinityConfig
	if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil {
		skip(ReasonNilAffinityConfig, "using %ds", defaultAffinityTimeout)
		return defaultAffinityTimeout
	}
	t := *c.ClientIP.TimeoutSeconds
	if t <= 0 {
		skip(ReasonNilAffinityConfig, "timeoutSeconds %d, using %ds", t, defaultAffinityTimeout)
		return defaultAffinityTimeout
	}
	return uint32(t)
}

// protocol maps a Kubernetes protocol to IPVS'. An unset protocol is TCP,
// as the apiserver defaults it.
func protocol(p v1.Protocol) (ipvs.Protocol, bool) {
	switch p {
	case v1.ProtocolTCP, "":
		return ipvs.TCP, true
	case v1.ProtocolUDP:
		return ipvs.UDP, true
	case v1.ProtocolSCTP:
		return ipvs.SCTP, true
	}
	return 0, false
}

// parseIP parses an IP address the way Kubernetes does: IPv4 with leading
// zeros is read as decimal ("010.001.002.003" is 10.1.2.3, CVE-2021-29923),
// and IPv4-mapped IPv6 becomes IPv4.
func parseIP(s string) (netip.Addr, bool) {
	ip := netutils.ParseIPSloppy(strings.TrimSpace(s))
	if ip == nil {
		return netip.Addr{}, false
	}
	if v4 := ip.To4(); v4 != nil && strings.Contains(s, ".") {
		ip = net.IP(v4)
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func familyOf(a netip.Addr) v1.IPFamily {
	if a.Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

func clusterIPEntry(f v1.IPFamily, k ipvs.ServiceKey) SetEntry {
	return SetEntry{Set: setName(SetClusterIP, f), Entry: iptables.Entry{Addr: k.Addr, Proto: k.Proto.String(), Port: k.Port}}
}

func vipEntry(f v1.IPFamily, a netip.Addr) SetEntry {
	return SetEntry{Set: setName(SetVIP, f), Entry: iptables.Entry{Addr: a}}
}

func loopBackEntry(f v1.IPFamily, ep netip.AddrPort, p ipvs.Protocol) SetEntry {
	return SetEntry{Set: setName(SetLoopBack, f), Entry: iptables.Entry{
		Addr: ep.Addr(), Proto: p.String(), Port: ep.Port(), Addr2: ep.Addr(),
	}}
}
