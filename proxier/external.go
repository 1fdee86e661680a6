package proxier

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	netutils "k8s.io/utils/net"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// The north-south half of a Service: the addresses outside traffic reaches
// it on (spec.externalIPs, status.loadBalancer.ingress, the NodePort
// addresses), the load balancer's source ranges and the health-check node
// port.

// extKind tells the two kinds of external address apart: their set members
// differ.
type extKind int

const (
	extExternalIP extKind = iota
	extLoadBalancer
)

// extAddr is one external or load-balancer IP of a Service.
type extAddr struct {
	addr netip.Addr
	kind extKind
	bind bool // not a node address: bound on kipvs0
	// For a load-balancer IP with loadBalancerSourceRanges: firewall is
	// set, and ranges are the sources let through (the load-balancer IP
	// itself among them when the node may reach it).
	firewall bool
	ranges   []netip.Prefix
}

// entries are the set members of virtual server k on a: its kind's set,
// those of externalTrafficPolicy Local (localEntries, with the port's
// short-circuit mark; 0 for Cluster), and for a load-balancer IP with
// source ranges FIREWALL and one SOURCE-RANGES member per range.
func (a extAddr) entries(f v1.IPFamily, k ipvs.ServiceKey, mark uint32) []SetEntry {
	set := SetExternalIP
	if a.kind == extLoadBalancer {
		set = SetLoadBalancer
	}
	entries := append([]SetEntry{keyEntry(set, f, k)}, localEntries(f, k, mark)...)
	if a.firewall {
		entries = append(entries, keyEntry(SetFirewall, f, k))
		for _, r := range a.ranges {
			entries = append(entries, NewSetEntry(setName(SetSourceRanges, f), iptables.Entry{
				Addr: k.Addr, Proto: k.Proto.String(), Port: k.Port, Net: r,
			}))
		}
	}
	return entries
}

// externallyAccessible reports whether a Service takes traffic from outside
// the cluster, so that externalTrafficPolicy applies (as kube-proxy decides
// it).
func externallyAccessible(svc *v1.Service) bool {
	t := svc.Spec.Type
	return t == v1.ServiceTypeNodePort || t == v1.ServiceTypeLoadBalancer || len(svc.Spec.ExternalIPs) > 0
}

// dualStack reports whether the Service asks for both families, so that an
// address of the other family is normal (the other family's proxier serves
// it), not bad input.
func dualStack(svc *v1.Service) bool { return len(svc.Spec.IPFamilies) > 1 }

// externalAddrs collects the Service's external IPs and, for a
// LoadBalancer, its ingress IPs, of cfg.Family, sorted by address.
func externalAddrs(svc *v1.Service, cfg BuildConfig, skip func(Reason, string, ...any)) []extAddr {
	var out []extAddr
	add := func(a extAddr) {
		a.bind = !cfg.LocalAddrs[a.addr]
		out = append(out, a)
	}
	for _, s := range svc.Spec.ExternalIPs {
		if a, ok := usableAddr(svc, cfg, s, "externalIP", externalIPReasons, cfg.ExternalIPCIDRs, skip); ok {
			add(extAddr{addr: a, kind: extExternalIP})
		}
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer {
		firewall, ranges := sourceRanges(svc, cfg, skip)
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			switch {
			case ing.IP == "":
				skip(ReasonLoadBalancerHostname, "ingress hostname %q", ing.Hostname)
				continue
			case ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy:
				skip(NoteProxyIPMode, "ingress IP %s", ing.IP)
				continue
			}
			a, ok := usableAddr(svc, cfg, ing.IP, "ingress IP", lbIPReasons, cfg.LoadBalancerCIDRs, skip)
			if !ok {
				continue
			}
			e := extAddr{addr: a, kind: extLoadBalancer, firewall: firewall, ranges: ranges}
			if firewall && slices.ContainsFunc(ranges, func(r netip.Prefix) bool {
				return slices.ContainsFunc(cfg.NodeIPs, r.Contains)
			}) {
				// A request from the node to its own load-balancer IP
				// (bound here) comes from that IP, as kube-proxy allows.
				e.ranges = append(slices.Clone(ranges), netip.PrefixFrom(a, a.BitLen()))
			}
			add(e)
		}
	}
	slices.SortStableFunc(out, func(a, b extAddr) int { return a.addr.Compare(b.addr) })
	return slices.CompactFunc(out, func(a, b extAddr) bool { return a.addr == b.addr })
}

// addrReasons are the reasons an external or load-balancer IP is skipped:
// unparseable, of the other family, outside the allowed CIDRs.
type addrReasons struct{ bad, otherFamily, disallowed Reason }

var (
	externalIPReasons = addrReasons{ReasonBadExternalIP, ReasonOtherFamilyExternalIP, ReasonDisallowedExternalIP}
	lbIPReasons       = addrReasons{ReasonBadLoadBalancerIP, ReasonOtherFamilyLBIP, ReasonDisallowedLBIP}
)

// usableAddr parses an external or load-balancer IP (what names it in
// messages) and reports whether it is programmed in cfg.Family; when not,
// it says why. The other family's address of a dual-stack Service is
// normal: the other family's proxier serves it.
func usableAddr(svc *v1.Service, cfg BuildConfig, s, what string, r addrReasons, cidrs []netip.Prefix, skip func(Reason, string, ...any)) (netip.Addr, bool) {
	a, ok := parseIP(s)
	switch {
	case !ok:
		skip(r.bad, "%s %q", what, s)
	case a.IsLoopback() || a.IsUnspecified():
		// Bound on kipvs0, it would capture the node's own traffic.
		skip(r.bad, "%s %s is a loopback or unspecified address", what, a)
	case familyOf(a) != cfg.Family && dualStack(svc):
		skip(NoteOtherFamilyAddress, "%s %s", what, a)
	case familyOf(a) != cfg.Family:
		skip(r.otherFamily, "%s %s", what, a)
	case !allowed(a, cidrs):
		skip(r.disallowed, "%s %s", what, a)
	default:
		return a, true
	}
	return netip.Addr{}, false
}

// allowed reports whether a is inside one of cidrs; no cidrs allow all.
func allowed(a netip.Addr, cidrs []netip.Prefix) bool {
	return len(cidrs) == 0 || slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Contains(a) })
}

// sourceRanges returns whether the Service restricts the sources of its
// load-balancer IPs, and the ranges of cfg.Family it lets through, masked
// and sorted. A Service that lists ranges is restricted even when none of
// them is usable in this family: a typo never opens a load balancer to
// everyone.
func sourceRanges(svc *v1.Service, cfg BuildConfig, skip func(Reason, string, ...any)) (bool, []netip.Prefix) {
	if len(svc.Spec.LoadBalancerSourceRanges) == 0 {
		return false, nil
	}
	var out []netip.Prefix
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		p, ok := parseCIDR(s)
		if !ok {
			skip(ReasonBadSourceRange, "loadBalancerSourceRanges %q", s)
			continue
		}
		if familyOf(p.Addr()) == cfg.Family {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return true, slices.Compact(out)
}

// parseCIDR parses a CIDR the way Kubernetes does (IPv4 with leading
// zeros read as decimal) and returns it masked.
func parseCIDR(s string) (netip.Prefix, bool) {
	_, n, err := netutils.ParseCIDRSloppy(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	if !ok {
		return netip.Prefix{}, false
	}
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), true
}

// nodePort returns a port's NodePort when the Service has NodePorts (type
// NodePort, or LoadBalancer with node ports allocated).
func nodePort(svc *v1.Service, sp v1.ServicePort, skip func(Reason, string, ...any)) (uint16, bool) {
	if svc.Spec.Type != v1.ServiceTypeNodePort && svc.Spec.Type != v1.ServiceTypeLoadBalancer || sp.NodePort == 0 {
		return 0, false
	}
	if sp.NodePort < 0 || sp.NodePort > 65535 {
		skip(ReasonBadNodePort, "port %q nodePort %d", sp.Name, sp.NodePort)
		return 0, false
	}
	return uint16(sp.NodePort), true
}

// health returns the health-check node port of a LoadBalancer Service with
// externalTrafficPolicy Local, and its ready endpoints on node.
func health(svc *v1.Service, ends endpoints, node string, skip func(Reason, string, ...any)) *Health {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
		return nil
	}
	p := svc.Spec.HealthCheckNodePort
	if p <= 0 || p > 65535 {
		skip(ReasonBadHealthCheckNodePort, "healthCheckNodePort %d", p)
		return nil
	}
	return &Health{Port: uint16(p), LocalEndpoints: ends.localReady(node)}
}

// NodePortAddrs resolves the nodePortAddresses configuration: with primary,
// the node's primary addresses (its Node's InternalIPs of family); else
// every local address inside one of cidrs. Loopback addresses are never
// used (CVE-2020-8558: a NodePort on 127.0.0.1 needs route_localnet, which
// exposes every localhost service to the node's neighbours). The result is
// sorted and free of duplicates.
func NodePortAddrs(primary bool, cidrs []netip.Prefix, nodeIPs, local []netip.Addr, family v1.IPFamily) []netip.Addr {
	var out []netip.Addr
	pick := func(a netip.Addr) {
		if a.IsValid() && !a.IsLoopback() && familyOf(a) == family {
			out = append(out, a)
		}
	}
	if primary {
		for _, a := range nodeIPs {
			pick(a)
		}
	} else {
		for _, a := range local {
			if slices.ContainsFunc(cidrs, func(p netip.Prefix) bool { return p.Contains(a) }) {
				pick(a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// NodeIPs returns the InternalIP addresses of a Node of one family, in the
// Node's order; none for a nil Node.
func NodeIPs(n *v1.Node, family v1.IPFamily) []netip.Addr {
	if n == nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		if ip, ok := parseIP(a.Address); ok && familyOf(ip) == family {
			out = append(out, ip)
		}
	}
	return out
}
