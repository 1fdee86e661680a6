package proxier

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	netutils "k8s.io/utils/net"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// BuildConfig is the part of the configuration Build depends on. Its
// node-wide fields (the addresses) change at run time: every Service that
// depends on them is rebuilt then.
type BuildConfig struct {
	NodeName  string
	Scheduler string
	Family    v1.IPFamily // the family this proxier serves: v1.IPv4Protocol or v1.IPv6Protocol

	// NodePortAddrs are the node addresses NodePorts are served on, sorted
	// (see NodePortAddrs); none: no NodePort is served.
	NodePortAddrs []netip.Addr
	// NodeIPs are the node's primary addresses (its Node's InternalIPs of
	// Family): a load balancer's source ranges that contain one let the
	// node reach the load-balancer IP itself.
	NodeIPs []netip.Addr
	// LocalAddrs are every address of the node but kipvs0's. An external or
	// load-balancer IP that is one of them is not bound on kipvs0 (the node
	// accepts it already) and stays out of the VIP set.
	LocalAddrs map[netip.Addr]bool
	// ExternalIPCIDRs and LoadBalancerCIDRs, when not empty, are the only
	// ranges spec.externalIPs and status.loadBalancer.ingress IPs are
	// programmed from (CVE-2020-8554).
	ExternalIPCIDRs   []netip.Prefix
	LoadBalancerCIDRs []netip.Prefix
	// ServiceCIDRs are the cluster's Service CIDRs of Family
	// (serviceCIDRs). The node accepts each whole by one local route on
	// kipvs0, so a ClusterIP inside one is not bound on its own and stays
	// out of the VIP set.
	ServiceCIDRs []netip.Prefix
}

// Fragment is what one Kubernetes Service contributes to the desired State:
// its virtual servers, each with the set members that exist because of it,
// the addresses the node must accept (bound on kipvs0), and the set members
// of the Service as a whole. Every list is sorted, so equal inputs give
// equal fragments. Nothing is derived from the server keys later: what a
// fragment needs bound or in a set, it says. Health is its health-check
// node port, for a Service with externalTrafficPolicy Local. NoLocal, for
// the metrics, says which Local policies find endpoints but none here; it
// programs nothing.
type Fragment struct {
	Servers []ServerPart
	Addrs   []netip.Addr
	Entries []SetEntry
	Health  *Health
	NoLocal NoLocal
}

// Health is what a Service's health-check node port answers from: the
// number of its ready endpoints on this node.
type Health struct {
	Port           uint16
	LocalEndpoints int
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
	}) && slices.Equal(f.Addrs, o.Addrs) && slices.Equal(f.Entries, o.Entries) &&
		(f.Health == o.Health || (f.Health != nil && o.Health != nil && *f.Health == *o.Health))
}

// empty reports whether the fragment programs nothing.
func (f *Fragment) empty() bool {
	return f == nil || (len(f.Servers) == 0 && len(f.Addrs) == 0 && len(f.Entries) == 0 && f.Health == nil)
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

	ReasonBadNodePort            Reason = "nodePort out of range"
	ReasonBadHealthCheckNodePort Reason = "healthCheckNodePort 0 or out of range on a Local Service"
	ReasonBadExternalIP          Reason = "unparseable externalIP"
	ReasonOtherFamilyExternalIP  Reason = "externalIP of the other family"
	ReasonDisallowedExternalIP   Reason = "externalIP outside externalIPs.allowedCIDRs"
	ReasonLoadBalancerHostname   Reason = "load-balancer ingress without an IP"
	ReasonBadLoadBalancerIP      Reason = "unparseable load-balancer ingress IP"
	ReasonOtherFamilyLBIP        Reason = "load-balancer ingress IP of the other family"
	ReasonDisallowedLBIP         Reason = "load-balancer ingress IP outside loadBalancerIPs.allowedCIDRs"
	ReasonBadSourceRange         Reason = "loadBalancerSourceRanges entry that is not a CIDR"
)

// Input that is normal, not bad: a dual-stack Service's slice of the other
// family, and an endpoint in two slices while the EndpointSlice controller
// moves it (or a reused pod IP). It is reported for debugging only: never
// counted as skipped, never logged above debug.
const (
	NoteOtherFamilySlice   Reason = "EndpointSlice of the other family"
	NoteDuplicateEndpoint  Reason = "same endpoint in two slices"
	NoteOtherFamilyAddress Reason = "external or load-balancer IP of a dual-stack Service's other family"
	NoteProxyIPMode        Reason = "load-balancer ingress with ipMode Proxy (traffic goes through the load balancer)"
	NoteNoNodePortAddress  Reason = "no node address to serve NodePorts on"
)

// Normal reports whether r is normal input (a Note…), not bad input.
func (r Reason) Normal() bool {
	switch r {
	case NoteOtherFamilySlice, NoteDuplicateEndpoint, NoteOtherFamilyAddress, NoteProxyIPMode, NoteNoNodePortAddress:
		return true
	}
	return false
}

// Skip is one piece of input that was not programmed, and why.
type Skip struct {
	Reason Reason
	Detail string
	// About is the Service the skip concerns when it is not the one being
	// built (the loser of a conflict found while building the winner).
	About types.NamespacedName
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
//
// Every port gets a virtual server on the ClusterIP and, when the Service
// is reachable from outside, one on each external IP, each load-balancer
// ingress IP and each NodePort address (see external.go). The ClusterIP's
// real servers follow internalTrafficPolicy, the others
// externalTrafficPolicy: with Local, only this node's endpoints, and none
// when it has none (IPVS then refuses the connection: it is never sent to
// another node, whose reply could not come back through this one). Pods
// and the node itself are not outside clients: for each Local port they
// can reach here, a firewall-mark virtual server with every endpoint takes
// their traffic to the external addresses (the short circuit, see
// BuildRules). Build numbers these marks 1, 2, … in port order; the
// proxier swaps them for node-wide marks (marks.go) before the fragment
// joins the desired state.
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
	ext := externalAddrs(svc, cfg, skip)
	var shortCircuits uint32
	internalLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal
	externalLocal := externallyAccessible(svc) && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
	f.Servers = make([]ServerPart, 0, maxParts(svc, cfg, len(ext), externalLocal))
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
		// all is every endpoint of the port; the parts only read it, so
		// the ClusterIP, the external addresses and a short circuit share
		// its Dests.
		all := ends.forPort(sp.Name, sp.Protocol, cfg.NodeName)
		cluster, external := all, all
		if internalLocal || externalLocal {
			local := ends.localForPort(sp.Name, sp.Protocol, cfg.NodeName)
			none := len(local.dests) == 0 && len(cluster.dests) > 0
			if internalLocal {
				cluster = local
				f.NoLocal.Internal = f.NoLocal.Internal || none
			}
			if externalLocal {
				external = local
				f.NoLocal.External = f.NoLocal.External || none
			}
		}
		b := &partBuilder{cfg: cfg, base: base, proto: proto}
		f.Servers = append(f.Servers, b.part(ipvs.ServiceKey{Addr: vip, Proto: proto, Port: uint16(sp.Port)}, cluster,
			clusterIPEntry(cfg.Family, ipvs.ServiceKey{Addr: vip, Proto: proto, Port: uint16(sp.Port)})))
		var short realServers // for a short circuit
		if externalLocal {
			short = all
		}
		f.Servers = b.externalParts(f.Servers, svc, sp, ext, external, externalLocal, short, &shortCircuits, skip)
	}
	// Equal keys (an external IP listed twice, or equal to a NodePort
	// address) keep the first part, deterministically.
	slices.SortStableFunc(f.Servers, func(a, b ServerPart) int { return a.Service.Key.Compare(b.Service.Key) })
	f.Servers = slices.CompactFunc(f.Servers, func(a, b ServerPart) bool { return a.Service.Key == b.Service.Key })
	if len(f.Servers) > 0 {
		// A ClusterIP, external IP or load-balancer IP is accepted on the
		// node by binding it on kipvs0, unless the node has it already or
		// (a ClusterIP) a Service CIDR's local route covers it.
		if !inPrefixes(cfg.ServiceCIDRs, vip) {
			f.Addrs = append(f.Addrs, vip)
		}
		for _, a := range ext {
			if a.bind {
				f.Addrs = append(f.Addrs, a.addr)
			}
		}
		slices.SortFunc(f.Addrs, netip.Addr.Compare)
		f.Addrs = slices.Compact(f.Addrs)
		for _, a := range f.Addrs {
			f.Entries = append(f.Entries, vipEntry(cfg.Family, a))
		}
		f.Health = health(svc, ends, cfg.NodeName, skip)
	}
	return f, skips
}

// maxParts is the most virtual servers a Service can have here: per port
// its ClusterIP, its short circuit, its external addresses and its
// NodePort addresses.
func maxParts(svc *v1.Service, cfg BuildConfig, ext int, local bool) int {
	per := 1 + ext
	if svc.Spec.Type == v1.ServiceTypeNodePort || svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		per += len(cfg.NodePortAddrs)
	}
	if local {
		per++
	}
	return per * len(svc.Spec.Ports)
}

// partBuilder makes the ServerParts of one Service port.
type partBuilder struct {
	cfg   BuildConfig
	base  ipvs.Service
	proto ipvs.Protocol
}

// externalParts appends to parts the virtual servers of Service port sp on
// the external and load-balancer IPs ext and on the NodePort addresses,
// with real servers ws. A port with externalTrafficPolicy Local (local)
// that has an external address here also gets its short circuit, numbered
// *shortCircuits+1, whose real servers are all, its every endpoint.
func (b *partBuilder) externalParts(parts []ServerPart, svc *v1.Service, sp v1.ServicePort, ext []extAddr, ws realServers, local bool, all realServers,
	shortCircuits *uint32, skip func(Reason, string, ...any)) []ServerPart {
	f := b.cfg.Family
	np, hasNodePort := nodePort(svc, sp, skip)
	if hasNodePort && len(b.cfg.NodePortAddrs) == 0 {
		skip(NoteNoNodePortAddress, "port %q nodePort %d", sp.Name, np)
	}
	var mark uint32
	if local && (len(ext) > 0 || (hasNodePort && len(b.cfg.NodePortAddrs) > 0)) {
		*shortCircuits++
		mark = *shortCircuits
		parts = append(parts, b.part(ipvs.MarkKey(mark, f == v1.IPv6Protocol), all))
	}
	for _, a := range ext {
		k := ipvs.ServiceKey{Addr: a.addr, Proto: b.proto, Port: uint16(sp.Port)}
		parts = append(parts, b.part(k, ws, a.entries(f, k, mark)...))
	}
	if hasNodePort {
		for _, a := range b.cfg.NodePortAddrs {
			k := ipvs.ServiceKey{Addr: a, Proto: b.proto, Port: np}
			parts = append(parts, b.part(k, ws, append([]SetEntry{keyEntry(SetNodePort, f, k)}, localEntries(f, k, mark)...)...))
		}
	}
	return parts
}

// part is virtual server k with real servers ws (their Dests slice shared)
// and the given set members, plus a LOOP-BACK member for each local
// endpoint, so that a pod reaching itself through the virtual server is
// masqueraded (hairpin).
func (b *partBuilder) part(k ipvs.ServiceKey, ws realServers, entries ...SetEntry) ServerPart {
	part := ServerPart{VirtualServer: VirtualServer{Service: b.base, Dests: ws.dests}}
	part.Service.Key = k
	part.Entries = make([]SetEntry, 0, len(entries)+len(ws.local))
	part.Entries = append(part.Entries, entries...)
	for _, a := range ws.local {
		part.Entries = append(part.Entries, loopBackEntry(b.cfg.Family, a, b.proto))
	}
	slices.SortFunc(part.Entries, compareEntries)
	part.Entries = slices.Compact(part.Entries)
	return part
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
		if a.IsLoopback() || a.IsUnspecified() {
			// The apiserver allocates neither; bound on kipvs0 they would
			// capture the node's own traffic.
			skip(ReasonBadClusterIP, "clusterIP %s is a loopback or unspecified address", a)
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

func clusterIPEntry(f v1.IPFamily, k ipvs.ServiceKey) SetEntry { return keyEntry(SetClusterIP, f, k) }

// keyEntry is virtual server k as a member of hash:ip,port set base.
func keyEntry(base string, f v1.IPFamily, k ipvs.ServiceKey) SetEntry {
	return NewSetEntry(setName(base, f), iptables.Entry{Addr: k.Addr, Proto: k.Proto.String(), Port: k.Port})
}

// localEntries are the members that external virtual server k of a Local
// Service port has because of its policy: EXTERNAL-LOCAL (clients keep
// their address), and SHORT-CIRCUIT with the mark of the port's
// short-circuit virtual server. None when mark is 0 (policy Cluster).
func localEntries(f v1.IPFamily, k ipvs.ServiceKey, mark uint32) []SetEntry {
	if mark == 0 {
		return nil
	}
	return []SetEntry{keyEntry(SetExternalLocal, f, k), keyEntry(SetShortCircuit, f, k).withMark(mark)}
}

func vipEntry(f v1.IPFamily, a netip.Addr) SetEntry {
	return NewSetEntry(setName(SetVIP, f), iptables.Entry{Addr: a})
}

func loopBackEntry(f v1.IPFamily, ep netip.AddrPort, p ipvs.Protocol) SetEntry {
	return NewSetEntry(setName(SetLoopBack, f), iptables.Entry{
		Addr: ep.Addr(), Proto: p.String(), Port: ep.Port(), Addr2: ep.Addr(),
	})
}

// inPrefixes reports whether a is in one of ps.
func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}
