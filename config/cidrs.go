package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// Paths of the fields that are lists of CIDRs.
const (
	pathNodePortAddresses = "nodePortAddresses"
	pathExternalIPs       = "externalIPs.allowedCIDRs"
	pathLoadBalancerIPs   = "loadBalancerIPs.allowedCIDRs"
	pathExcludeCIDRs      = "ipvs.excludeCIDRs"
)

// The prefixes that hold every address of a family.
var (
	allIPv4 = netip.MustParsePrefix("0.0.0.0/0")
	allIPv6 = netip.MustParsePrefix("::/0")
)

// ClusterCIDRs returns the prefixes of ClusterCIDR, masked to their network
// address ("10.244.1.0/16" gives 10.244.0.0/16), in the order written and
// without duplicates. Entries that do not parse are skipped: call it after
// Validate has passed. An empty ClusterCIDR gives nil.
func (c *Configuration) ClusterCIDRs() []netip.Prefix {
	return parseClusterCIDR(c.ClusterCIDR).prefixes
}

// NodePortPrimary reports whether nodePortAddresses is ["primary"]: NodePorts
// are served on the Node object's InternalIP addresses of the family served,
// and NodePortCIDRs is nil.
func (c *Configuration) NodePortPrimary() bool {
	return parseNodePortAddresses(c.NodePortAddresses).primary
}

// NodePortCIDRs returns, unless NodePortPrimary, the prefixes that select the
// local addresses NodePorts are served on: those of nodePortAddresses,
// masked, in the order written and without duplicates, then 0.0.0.0/0 if
// the list has no IPv4 prefix and ::/0 if it has no IPv6 prefix, because
// kube-proxy serves a family the list does not mention on all its
// addresses (NewNodePortAddresses). An empty list thus gives
// [0.0.0.0/0 ::/0]. Loopback addresses are never NodePort addresses,
// whatever the prefixes hold. Entries that do not parse are skipped: call
// it after Validate has passed.
func (c *Configuration) NodePortCIDRs() []netip.Prefix {
	n := parseNodePortAddresses(c.NodePortAddresses)
	if n.primary {
		return nil
	}
	out := slices.Clone(n.prefixes)
	for _, all := range []netip.Prefix{allIPv4, allIPv6} {
		if !slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Addr().Is4() == all.Addr().Is4() }) {
			out = append(out, all)
		}
	}
	return out
}

// AllowedExternalIPCIDRs returns externalIPs.allowedCIDRs, masked, in the
// order written and without duplicates; nil when the list is empty, which
// allows every address. A Service's spec.externalIPs outside them are not
// programmed. Entries that do not parse are skipped: call it after Validate
// has passed.
func (c *Configuration) AllowedExternalIPCIDRs() []netip.Prefix {
	return parseCIDRs(pathExternalIPs, c.ExternalIPs.AllowedCIDRs).prefixes
}

// AllowedLoadBalancerIPCIDRs returns loadBalancerIPs.allowedCIDRs, masked,
// in the order written and without duplicates; nil when the list is empty,
// which allows every address. A Service's status.loadBalancer.ingress[].ip
// outside them are not programmed. Entries that do not parse are skipped:
// call it after Validate has passed.
func (c *Configuration) AllowedLoadBalancerIPCIDRs() []netip.Prefix {
	return parseCIDRs(pathLoadBalancerIPs, c.LoadBalancerIPs.AllowedCIDRs).prefixes
}

// ExcludedCIDRs returns ipvs.excludeCIDRs, masked, in the order written and
// without duplicates; nil when the list is empty. A virtual server whose
// address lies inside one of them is never adopted, changed or deleted by
// kube-ipvs, whoever made it. Entries that do not parse are skipped: call
// it after Validate has passed.
func (c *Configuration) ExcludedCIDRs() []netip.Prefix {
	return parseCIDRs(pathExcludeCIDRs, c.IPVS.ExcludeCIDRs).prefixes
}

// Warnings returns notes about values that are accepted but probably not
// what was meant, for an agent serving the IP families in served:
//   - when the file was a KubeProxyConfiguration, one note that names
//     every field set to a value kube-ipvs does not honour (see the
//     package documentation), first;
//   - a CIDR (of clusterCIDR, nodePortAddresses, ipvs.excludeCIDRs or an
//     allowedCIDRs list) with host bits set or listed twice;
//   - no clusterCIDR at all, or none of a served family (like kube-proxy's
//     "no cluster CIDR specified for primary IP family"); these two are
//     left out under masqueradeAll, which does not read clusterCIDR;
//   - a nodePortAddresses entry that holds only loopback addresses, where
//     NodePorts are never served;
//   - an empty nodePortAddresses (every local address, as kube-proxy warns
//     too), or one with CIDRs but none of a served family (that family is
//     served on every local address).
//
// They are meant to be logged at start-up; nil when there is nothing to say.
func (c *Configuration) Warnings(served []v1.IPFamily) []string {
	var warnings []string
	if w := c.kubeProxy.warning(); w != "" {
		warnings = append(warnings, w)
	}
	warnings = append(warnings, c.clusterCIDRWarnings(served)...)
	warnings = append(warnings, c.nodePortWarnings(served)...)
	warnings = append(warnings, parseCIDRs(pathExcludeCIDRs, c.IPVS.ExcludeCIDRs).warnings...)
	warnings = append(warnings, parseCIDRs(pathExternalIPs, c.ExternalIPs.AllowedCIDRs).warnings...)
	warnings = append(warnings, parseCIDRs(pathLoadBalancerIPs, c.LoadBalancerIPs.AllowedCIDRs).warnings...)
	return append(warnings, c.egressWarnings()...)
}

func (c *Configuration) clusterCIDRWarnings(served []v1.IPFamily) []string {
	l := parseClusterCIDR(c.ClusterCIDR)
	warnings := l.warnings
	if c.MasqueradeAll {
		return warnings
	}
	if len(l.prefixes) == 0 {
		return append(warnings, "clusterCIDR is empty: only traffic the node sends from a ClusterIP is masqueraded; "+
			"set clusterCIDR (or masqueradeAll) so clients outside the pod network get answers")
	}
	for _, family := range served {
		if !slices.ContainsFunc(l.prefixes, func(p netip.Prefix) bool { return prefixFamily(p) == family }) {
			warnings = append(warnings, fmt.Sprintf("clusterCIDR %q has no %s prefix, and kube-ipvs serves %s: "+
				"for %s Services it is as if clusterCIDR were empty (only traffic the node sends from a ClusterIP is masqueraded); "+
				"add the %s pod CIDR", c.ClusterCIDR, family, family, family, family))
		}
	}
	return warnings
}

func (c *Configuration) nodePortWarnings(served []v1.IPFamily) []string {
	n := parseNodePortAddresses(c.NodePortAddresses)
	warnings := n.warnings
	switch {
	case n.primary:
	case len(c.NodePortAddresses) == 0:
		warnings = append(warnings, "nodePortAddresses is empty: NodePorts are served on every local address; "+
			`consider "primary" (the Node's InternalIP addresses) or the CIDRs of the node's networks`)
	default:
		for _, family := range served {
			if !slices.ContainsFunc(n.prefixes, func(p netip.Prefix) bool { return prefixFamily(p) == family }) {
				warnings = append(warnings, fmt.Sprintf("nodePortAddresses has no %s CIDR, and kube-ipvs serves %s: "+
					"%s NodePorts are served on every local %s address, as kube-proxy does; add the %s CIDRs to serve",
					family, family, family, family, family))
			}
		}
	}
	return warnings
}

func prefixFamily(p netip.Prefix) v1.IPFamily {
	if p.Addr().Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

// cidrList is a list of CIDRs as parsed: the valid ones, what is wrong with
// the others, and what is odd about some.
type cidrList struct {
	prefixes []netip.Prefix // masked, in order, without duplicates
	errs     []error
	warnings []string
}

// add parses entry, the value at path, as Kubernetes validates new CIDR
// fields: no leading zeros ("010.0.0.0/8"), no IPv4-mapped IPv6, no zone.
// Host bits beyond the prefix length are accepted and cleared, with a
// warning, and so is a duplicate. It returns the masked prefix and whether
// it was added: false for an invalid entry or a duplicate.
func (l *cidrList) add(path, entry string) (netip.Prefix, bool) {
	if entry == "" {
		l.errs = append(l.errs, fieldErrorf(path, "empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)"))
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(entry)
	if err != nil {
		l.errs = append(l.errs, fieldErrorf(path, "invalid CIDR %q: %s", entry, cidrReason(entry, err)))
		return netip.Prefix{}, false
	}
	if p.Addr().Is4In6() {
		l.errs = append(l.errs, fieldErrorf(path, "invalid CIDR %q: must not have an IPv4-mapped IPv6 address", entry))
		return netip.Prefix{}, false
	}
	masked := p.Masked()
	if masked != p {
		l.warnings = append(l.warnings, fmt.Sprintf("%s: CIDR %q has bits set beyond the prefix length; using %q", path, entry, masked))
	}
	if slices.Contains(l.prefixes, masked) {
		l.warnings = append(l.warnings, fmt.Sprintf("%s: %q is listed more than once", path, masked))
		return masked, false
	}
	l.prefixes = append(l.prefixes, masked)
	return masked, true
}

// parseCIDRs parses a list field; each entry is named path[i].
func parseCIDRs(path string, entries []string) cidrList {
	var l cidrList
	for i, e := range entries {
		l.add(fmt.Sprintf("%s[%d]", path, i), e)
	}
	return l
}

// parseClusterCIDR splits the comma-separated list (spaces around entries
// are ignored) and parses each entry with cidrList.add.
func parseClusterCIDR(s string) cidrList {
	const path = "clusterCIDR"
	var l cidrList
	if strings.TrimSpace(s) == "" {
		return l
	}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			l.errs = append(l.errs, fieldErrorf(path, "invalid value %q: empty entry in the list", s))
			continue
		}
		l.add(path, entry)
	}
	return l
}

// nodePortList is nodePortAddresses as parsed.
type nodePortList struct {
	primary bool // the list is ["primary"]
	cidrList
}

// parseNodePortAddresses checks the list as kube-proxy's
// validateKubeProxyNodePortAddress does: "primary" alone, or CIDRs. It
// reports every bad entry, where kube-proxy stops at "primary", and warns
// about loopback entries.
func parseNodePortAddresses(entries []string) nodePortList {
	var n nodePortList
	mixed := false
	for i, e := range entries {
		path := fmt.Sprintf("%s[%d]", pathNodePortAddresses, i)
		switch {
		case e == NodePortAddressesPrimary && len(entries) == 1:
			n.primary = true
		case e == NodePortAddressesPrimary:
			if !mixed {
				n.errs = append(n.errs, fieldErrorf(path, "invalid value %q: must be the only entry (can't use both %q and CIDRs)", e, e))
			}
			mixed = true
		case strings.EqualFold(e, NodePortAddressesPrimary):
			n.errs = append(n.errs, fieldErrorf(path, "invalid value %q: must be %q, in lower case, or a CIDR", e, NodePortAddressesPrimary))
		default:
			if p, added := n.add(path, e); added && isLoopback(p) {
				n.warnings = append(n.warnings, fmt.Sprintf("%s: %q holds only loopback addresses, and NodePorts are never served on loopback: "+
					"this entry selects no address", path, p))
			}
		}
	}
	return n
}

// isLoopback reports whether every address of p is a loopback address: p
// lies inside 127.0.0.0/8, or is ::1/128.
func isLoopback(p netip.Prefix) bool {
	if !p.Addr().IsLoopback() {
		return false
	}
	if p.Addr().Is4() {
		return p.Bits() >= 8
	}
	return p.Bits() == 128
}

// cidrReason explains why netip.ParsePrefix refused entry, in fewer words
// than its error, which repeats the input twice.
func cidrReason(entry string, err error) string {
	i := strings.LastIndexByte(entry, '/')
	if i < 0 {
		return "missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)"
	}
	addrPart, bitsPart := entry[:i], entry[i+1:]
	addr, aerr := netip.ParseAddr(addrPart)
	if aerr != nil {
		return strings.TrimPrefix(aerr.Error(), "ParseAddr("+strconv.Quote(addrPart)+"): ")
	}
	if addr.Zone() != "" {
		return "must not have an IPv6 zone"
	}
	bitLen := addr.BitLen()
	if bits, berr := strconv.Atoi(bitsPart); berr != nil || bits < 0 || bits > bitLen || bitsPart != strconv.Itoa(bits) {
		return fmt.Sprintf("prefix length %q must be a number from 0 to %d", bitsPart, bitLen)
	}
	return err.Error()
}
