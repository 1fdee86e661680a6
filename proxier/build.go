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

// Fragment is what one Kubernetes Service contributes to the desired State.
// Servers are sorted by key and Entries by text, so equal inputs give
// equal fragments.
type Fragment struct {
	Servers []VirtualServer
	Entries []SetEntry
}

// Equal reports whether two fragments program the same kernel state.
func (f *Fragment) Equal(o *Fragment) bool {
	if f == nil || o == nil {
		return f == o
	}
	return slices.EqualFunc(f.Servers, o.Servers, func(a, b VirtualServer) bool {
		return a.Service == b.Service && slices.Equal(a.Dests, b.Dests)
	}) && slices.Equal(f.Entries, o.Entries)
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
	ReasonOtherFamilySlice      Reason = "EndpointSlice of the other family"
	ReasonNilSlicePort          Reason = "nil EndpointSlice port"
	ReasonZeroSlicePort         Reason = "EndpointSlice port 0 or out of range"
	ReasonBadEndpointAddress    Reason = "unparseable endpoint address"
	ReasonOtherFamilyEndpoint   Reason = "endpoint address of the other family"
	ReasonDuplicateEndpoint     Reason = "same endpoint in two slices"
	ReasonSliceWithoutService   Reason = "EndpointSlice without kubernetes.io/service-name label"
	ReasonConflictingVIPAndPort Reason = "virtual server claimed by another Service"
)

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
	base := ipvs.Service{Scheduler: cfg.Scheduler}
	if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
		base.Persistent, base.Timeout = true, affinityTimeout(svc, skip)
	}
	ends := collectEndpoints(eps, cfg.Family, skip)
	entries := map[SetEntry]struct{}{}
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
		vs := VirtualServer{Service: base}
		vs.Service.Key = ipvs.ServiceKey{Addr: vip, Proto: proto, Port: uint16(sp.Port)}
		for _, ep := range ends.forPort(sp.Name, sp.Protocol) {
			vs.Dests = append(vs.Dests, ipvs.Destination{Addr: ep.addr, Weight: ep.weight, Forward: ipvs.Masquerade})
			if ep.local(cfg.NodeName) {
				entries[loopBackEntry(cfg.Family, ep.addr, proto)] = struct{}{}
			}
		}
		slices.SortFunc(vs.Dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
		f.Servers = append(f.Servers, vs)
		entries[clusterIPEntry(cfg.Family, vs.Service.Key)] = struct{}{}
		entries[vipEntry(cfg.Family, vip)] = struct{}{}
	}
	slices.SortFunc(f.Servers, func(a, b VirtualServer) int { return a.Service.Key.Compare(b.Service.Key) })
	f.Servers = slices.CompactFunc(f.Servers, func(a, b VirtualServer) bool { return a.Service.Key == b.Service.Key })
	for e := range entries {
		f.Entries = append(f.Entries, e)
	}
	slices.SortFunc(f.Entries, compareEntries)
	return f, skips
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
