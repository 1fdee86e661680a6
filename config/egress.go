package config

import (
	"fmt"
	"net/netip"
	"slices"
)

// Paths of the CIDR lists of the egress and ingress sections, and of the
// Service CIDRs.
const (
	pathServiceCIDRs       = "serviceCIDRs"
	pathNonMasqueradeCIDRs = "egress.nonMasqueradeCIDRs"
	pathEgressDenyCIDRs    = "egress.denyCIDRs"
	pathIngressDenyCIDRs   = "ingress.denySourceCIDRs"
)

// The link-local prefixes, part of the default egress.nonMasqueradeCIDRs.
var (
	linkLocalIPv4 = netip.MustParsePrefix("169.254.0.0/16")
	linkLocalIPv6 = netip.MustParsePrefix("fe80::/10")
)

// ServiceCIDRPrefixes returns serviceCIDRs, masked, in the order written
// and without duplicates; nil when the list is empty. Entries that do not
// parse are skipped: call it after Validate has passed.
func (c *Configuration) ServiceCIDRPrefixes() []netip.Prefix {
	return parseCIDRs(pathServiceCIDRs, c.ServiceCIDRs).prefixes
}

// EgressNonMasqueradeCIDRs returns the destinations whose traffic from pods
// keeps its source under egress.masquerade: egress.nonMasqueradeCIDRs as
// written (masked, without duplicates), or, when the field is left out,
// the cluster CIDRs, the Service CIDRs and link-local (169.254.0.0/16,
// fe80::/10). A /0 is given as its two halves (0.0.0.0/1 and 128.0.0.0/1),
// which an ipset of networks can hold. Entries that do not parse are
// skipped: call it after Validate has passed.
func (c *Configuration) EgressNonMasqueradeCIDRs() []netip.Prefix {
	if c.Egress.NonMasqueradeCIDRs == nil {
		out := slices.Concat(c.ClusterCIDRs(), c.ServiceCIDRPrefixes(), []netip.Prefix{linkLocalIPv4, linkLocalIPv6})
		return splitAll(dedupe(out))
	}
	return splitAll(parseCIDRs(pathNonMasqueradeCIDRs, c.Egress.NonMasqueradeCIDRs).prefixes)
}

// EgressDenyCIDRs returns egress.denyCIDRs, masked, without duplicates, a
// /0 as its two halves; nil when the list is empty. Entries that do not
// parse are skipped: call it after Validate has passed.
func (c *Configuration) EgressDenyCIDRs() []netip.Prefix {
	return splitAll(parseCIDRs(pathEgressDenyCIDRs, c.Egress.DenyCIDRs).prefixes)
}

// IngressDenySourceCIDRs returns ingress.denySourceCIDRs, masked, without
// duplicates, a /0 as its two halves; nil when the list is empty. Entries
// that do not parse are skipped: call it after Validate has passed.
func (c *Configuration) IngressDenySourceCIDRs() []netip.Prefix {
	return splitAll(parseCIDRs(pathIngressDenyCIDRs, c.Ingress.DenySourceCIDRs).prefixes)
}

// validateEgress checks the egress and ingress sections and serviceCIDRs.
func (c *Configuration) validateEgress() []error {
	var errs []error
	errs = append(errs, parseCIDRs(pathServiceCIDRs, c.ServiceCIDRs).errs...)
	errs = append(errs, parseCIDRs(pathNonMasqueradeCIDRs, c.Egress.NonMasqueradeCIDRs).errs...)
	errs = append(errs, parseCIDRs(pathEgressDenyCIDRs, c.Egress.DenyCIDRs).errs...)
	errs = append(errs, parseCIDRs(pathIngressDenyCIDRs, c.Ingress.DenySourceCIDRs).errs...)
	if c.Egress.Masquerade && len(parseClusterCIDR(c.ClusterCIDR).prefixes) == 0 {
		errs = append(errs, fieldErrorf("egress.masquerade",
			"invalid value true: needs clusterCIDR, the pod CIDRs whose traffic is masqueraded"))
	}
	return errs
}

// egressWarnings notes CIDRs with host bits or listed twice, a
// non-masquerade list that leaves out a cluster CIDR (under
// egress.masquerade pod-to-pod traffic between nodes is then
// masqueraded), and deny lists that take in the cluster's own addresses: a
// denied destination inside a cluster or Service CIDR cuts pods off from
// pods or Services, and a denied source inside a cluster CIDR cuts pods
// off from the NodePorts.
func (c *Configuration) egressWarnings() []string {
	var warnings []string
	for _, path := range []string{pathServiceCIDRs, pathNonMasqueradeCIDRs, pathEgressDenyCIDRs, pathIngressDenyCIDRs} {
		warnings = append(warnings, parseCIDRs(path, c.listAt(path)).warnings...)
	}
	if c.Egress.Masquerade {
		keep := c.EgressNonMasqueradeCIDRs()
		for _, p := range c.ClusterCIDRs() {
			if !slices.ContainsFunc(keep, func(k netip.Prefix) bool { return k.Bits() <= p.Bits() && k.Contains(p.Addr()) }) {
				warnings = append(warnings, fmt.Sprintf("%s does not hold the cluster CIDR %s: with egress.masquerade, pods reaching pods on other nodes are masqueraded", pathNonMasqueradeCIDRs, p))
			}
		}
	}
	inside := slices.Concat(c.ClusterCIDRs(), c.ServiceCIDRPrefixes())
	for _, d := range c.EgressDenyCIDRs() {
		for _, p := range inside {
			if d.Overlaps(p) {
				warnings = append(warnings, fmt.Sprintf("%s: %s overlaps the cluster's %s: pods cannot reach what lies in both", pathEgressDenyCIDRs, d, p))
			}
		}
	}
	for _, d := range c.IngressDenySourceCIDRs() {
		for _, p := range c.ClusterCIDRs() {
			if d.Overlaps(p) {
				warnings = append(warnings, fmt.Sprintf("%s: %s overlaps the cluster CIDR %s: those pods cannot reach this node's NodePorts, load-balancer IPs and external IPs", pathIngressDenyCIDRs, d, p))
			}
		}
	}
	return warnings
}

// listAt returns the list field at one of the paths above.
func (c *Configuration) listAt(path string) []string {
	switch path {
	case pathServiceCIDRs:
		return c.ServiceCIDRs
	case pathNonMasqueradeCIDRs:
		return c.Egress.NonMasqueradeCIDRs
	case pathEgressDenyCIDRs:
		return c.Egress.DenyCIDRs
	case pathIngressDenyCIDRs:
		return c.Ingress.DenySourceCIDRs
	}
	return nil
}

// dedupe drops the prefixes listed before, keeping the order.
func dedupe(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// splitAll replaces a /0 by its two halves: an ipset hash:net member has a
// prefix length of at least 1.
func splitAll(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Bits() != 0 {
			out = append(out, p)
			continue
		}
		low := netip.PrefixFrom(p.Addr(), 1)
		high := netip.PrefixFrom(highHalf(p.Addr()), 1)
		out = append(out, low, high)
	}
	return out
}

// highHalf is the first address with the top bit set, of a's family.
func highHalf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{0x80})
	}
	return netip.AddrFrom16([16]byte{0x80})
}
