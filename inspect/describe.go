package inspect

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// describer says in words what each rule of proxier.BuildRules does. The
// trace decides by the rules themselves; this is only their reading, and
// a test checks every rule BuildRules makes has one.
type describer struct {
	family        v1.IPFamily
	masqueradeAll bool
	clusterCIDRs  []netip.Prefix
}

func (d describer) set(base string) string { return proxier.SetName(base, d.family) }

// describe is what rule r of chain does; "" for a rule it does not know.
func (d describer) describe(_, chain string, r []string) string {
	has := func(set string) bool { return slices.Contains(r, d.set(set)) }
	target := ""
	if i := slices.Index(r, "-j"); i >= 0 && i+1 < len(r) {
		target = r[i+1]
	}
	switch chain {
	case proxier.ChainServices:
		switch {
		case has(proxier.SetClusterIP):
			return "the destination is a ClusterIP virtual server (" + d.set(proxier.SetClusterIP) + ")"
		case has(proxier.SetNodePort):
			return "the destination is a NodePort virtual server (" + d.set(proxier.SetNodePort) + ")"
		case has(proxier.SetLoadBalancer):
			return "the destination is a load-balancer IP virtual server (" + d.set(proxier.SetLoadBalancer) + ")"
		case has(proxier.SetExternalIP):
			return "the destination is an external IP virtual server (" + d.set(proxier.SetExternalIP) + ")"
		}
	case proxier.ChainCluster:
		switch {
		case slices.Contains(r, "-s") && target == "ACCEPT":
			return "the source is in clusterCIDR " + r[slices.Index(r, "-s")+1] + " (a pod): its address is kept"
		case slices.Contains(r, "-s"):
			return "the node sends from a ClusterIP of serviceCIDR " + r[slices.Index(r, "-s")+1] + " (no clusterCIDR is configured): masquerade"
		case has(proxier.SetVIP):
			return "the node sends from a VIP (" + d.set(proxier.SetVIP) + "; no clusterCIDR is configured): masquerade"
		case target == proxier.ChainMarkMasq && d.masqueradeAll:
			return "masqueradeAll is set: masquerade"
		case target == proxier.ChainMarkMasq:
			return "the source is outside clusterCIDR " + prefixesString(d.clusterCIDRs) + ": masquerade"
		case target == "ACCEPT":
			return "accepted, so that no later nat rule (a hostPort DNAT, Docker's) takes it from IPVS"
		}
	case proxier.ChainExternal:
		switch {
		case has(proxier.SetExternalLocal):
			return "externalTrafficPolicy Local (" + d.set(proxier.SetExternalLocal) + "): the client's address is kept"
		case target == proxier.ChainMarkMasq:
			return "externalTrafficPolicy Cluster: masquerade"
		case target == "ACCEPT":
			return "accepted, so that no later nat rule (a hostPort DNAT, Docker's) takes it from IPVS"
		}
	case proxier.ChainMarkMasq:
		return "sets the masquerade mark"
	case proxier.ChainPostrouting:
		switch {
		case has(proxier.SetLoopBack):
			return "hairpin: a pod reaching itself through its Service (" + d.set(proxier.SetLoopBack) + "): masqueraded"
		case slices.Contains(r, "--src-type"):
			return "the node reaching a short circuit: masqueraded (its source may be a VIP no endpoint could answer)"
		case target == "RETURN":
			return "not marked for masquerade: the endpoint sees the client's address"
		case target == "MARK":
			return "clears the masquerade mark"
		case target == "MASQUERADE":
			return "marked for masquerade: the endpoint sees the node's address"
		}
	case proxier.ChainFilter:
		switch {
		case target == "RETURN" && slices.Contains(r, "-p"):
			return "ICMP to a VIP is let through"
		case target == "RETURN":
			return "a virtual server's port: IPVS takes it after the filter"
		case target == "REJECT" && slices.Contains(r, "-d"):
			return "the address is in serviceCIDR " + r[slices.Index(r, "-d")+1] +
				" (accepted whole by its local route on kipvs0) and is no ClusterIP virtual server on this port: new connections are rejected (kubernetes#72236)"
		case target == "REJECT":
			return "the address is bound on kipvs0 (" + d.set(proxier.SetVIP) +
				") and the port is none of its virtual servers: new connections are rejected (kubernetes#72236)"
		}
	case proxier.ChainForward:
		if slices.Contains(r, "--ctstate") {
			return "replies and related traffic are forwarded"
		}
		return "masqueraded traffic is forwarded"
	case proxier.ChainFirewall:
		return "a load-balancer IP with loadBalancerSourceRanges (" + d.set(proxier.SetFirewall) +
			") and a source outside them (" + d.set(proxier.SetSourceRanges) + "): dropped"
	case proxier.ChainShortCircuit:
		return "the node reaching an external address of a Local port: the mark of its short circuit (" + d.set(proxier.SetShortCircuit) + ")"
	case proxier.ChainShortCircuitPods:
		return "a pod reaching an external address of a Local port: the mark of its short circuit (" + d.set(proxier.SetShortCircuit) + ")"
	case proxier.ChainEgressMasq:
		switch {
		case slices.Contains(r, "--mark"):
			return "marked for masquerade: left to " + proxier.ChainPostrouting
		case has(proxier.SetNonMasq):
			return "the destination is in egress.nonMasqueradeCIDRs (" + d.set(proxier.SetNonMasq) + "): the pod's address is kept"
		case target == "MASQUERADE":
			return "a pod (clusterCIDR " + r[slices.Index(r, "-s")+1] + ") reaching outside: egress masquerade"
		}
	case proxier.ChainEgressFilter:
		return "a new connection the node forwards to egress.denyCIDRs (" + d.set(proxier.SetEgressDeny) + "): rejected"
	case proxier.ChainIngressDeny:
		if target == "RETURN" {
			return "the source is not in ingress.denySourceCIDRs (" + d.set(proxier.SetDenySources) + ")"
		}
		return "a source in ingress.denySourceCIDRs reaching a NodePort, load-balancer or external IP: dropped"
	}
	return ""
}

// prefixesString joins prefixes with ", "; "(none)" without.
func prefixesString(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "(none)"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
