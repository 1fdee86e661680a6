package proxier

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// Names of everything kube-ipvs creates in netfilter. All chains and sets
// start with the one prefix; nothing else is touched.
const (
	Prefix = "KUBE-IPVS-"

	ChainServices    = Prefix + "SERVICES"
	ChainMarkMasq    = Prefix + "MARK-MASQ"
	ChainPostrouting = Prefix + "POSTROUTING"
	ChainFilter      = Prefix + "FILTER"

	// SetClusterIP holds VIP,proto:port of every virtual server.
	SetClusterIP = Prefix + "CLUSTER-IP"
	// SetVIP holds every bound VIP.
	SetVIP = Prefix + "VIP"
	// SetLoopBack holds endpoint,proto:port,endpoint of local endpoints,
	// to masquerade a pod reaching itself through its Service (hairpin).
	SetLoopBack = Prefix + "LOOP-BACK"
)

// setName returns the family's name of a set: IPv6 sets end in "-6".
func setName(base string, f v1.IPFamily) string {
	if f == v1.IPv6Protocol {
		return base + "-6"
	}
	return base
}

// RuleConfig is the part of the configuration the rules depend on.
type RuleConfig struct {
	Family        v1.IPFamily
	ClusterCIDRs  []netip.Prefix // only those of Family are used
	MasqueradeAll bool
	MasqueradeBit int // the fwmark bit that asks for masquerade; 14 gives 0x4000
}

// Jump is a rule kube-ipvs keeps in a chain it does not own.
type Jump struct {
	Table, Chain string
	Spec         []string
}

// Rules is the whole, constant netfilter configuration of one family. Its
// specs are written the way `iptables -S` prints them back, so that
// comparing them with the kernel finds no difference when there is none.
type Rules struct {
	Sets   []iptables.Set
	Chains map[string][]iptables.Chain // by table
	Jumps  []Jump
}

// BuildRules computes the rules for a configuration. Like Build, it is pure.
//
// nat: traffic to a virtual server (CLUSTER-IP set) from outside the cluster
// CIDRs (without any cluster CIDR: only traffic the node sends from a VIP),
// or all of it with masqueradeAll, is marked in PREROUTING/OUTPUT and
// masqueraded in POSTROUTING after IPVS picked a real server; hairpin
// traffic (LOOP-BACK set) is masqueraded too. filter: a new connection to a
// VIP on a port that is not a Service port is rejected, so host services
// do not answer on ClusterIPs (kubernetes#72236).
func BuildRules(c RuleConfig) Rules {
	clusterIP := setName(SetClusterIP, c.Family)
	mark := fmt.Sprintf("%#x", uint32(1)<<c.MasqueradeBit)
	svc := [][]string{{"-m", "set", "!", "--match-set", clusterIP, "dst,dst", "-j", "RETURN"}}
	if !c.MasqueradeAll {
		for _, p := range c.ClusterCIDRs {
			if familyOf(p.Addr()) == c.Family {
				svc = append(svc, []string{"-s", p.Masked().String(), "-j", "RETURN"})
			}
		}
	}
	switch {
	case c.MasqueradeAll || len(svc) > 1:
		svc = append(svc, []string{"-j", ChainMarkMasq})
	default:
		// No cluster CIDR: as kube-proxy, masquerade at least what the node
		// itself sends from a VIP (the source it picks for a local VIP),
		// which no endpoint could answer otherwise.
		svc = append(svc, []string{"-m", "set", "--match-set", setName(SetVIP, c.Family), "src", "-j", ChainMarkMasq})
	}
	icmp, reject := "icmp", "icmp-port-unreachable"
	if c.Family == v1.IPv6Protocol {
		icmp, reject = "ipv6-icmp", "icmp6-port-unreachable"
	}
	comment := func(text string) []string { return []string{"-m", "comment", "--comment", text} }
	jump := func(table, chain, text, target string) Jump {
		return Jump{Table: table, Chain: chain, Spec: append(comment(text), "-j", target)}
	}
	return Rules{
		Sets: []iptables.Set{
			{Name: clusterIP, Type: iptables.HashIPPort, IPv6: c.Family == v1.IPv6Protocol},
			{Name: setName(SetVIP, c.Family), Type: iptables.HashIP, IPv6: c.Family == v1.IPv6Protocol},
			{Name: setName(SetLoopBack, c.Family), Type: iptables.HashIPPortIP, IPv6: c.Family == v1.IPv6Protocol},
		},
		Chains: map[string][]iptables.Chain{
			iptables.TableNAT: {
				{Name: ChainServices, Rules: svc},
				{Name: ChainMarkMasq, Rules: [][]string{{"-j", "MARK", "--set-xmark", mark + "/" + mark}}},
				{Name: ChainPostrouting, Rules: [][]string{
					{"-m", "set", "--match-set", setName(SetLoopBack, c.Family), "dst,dst,src", "-j", "MASQUERADE"},
					{"-m", "mark", "!", "--mark", mark + "/" + mark, "-j", "RETURN"},
					{"-j", "MARK", "--set-xmark", mark + "/0x0"},
					{"-j", "MASQUERADE", "--random-fully"},
				}},
			},
			iptables.TableFilter: {
				{Name: ChainFilter, Rules: [][]string{
					{"-m", "set", "--match-set", clusterIP, "dst,dst", "-j", "RETURN"},
					{"-p", icmp, "-j", "RETURN"},
					{"-m", "set", "--match-set", setName(SetVIP, c.Family), "dst", "-m", "conntrack", "--ctstate", "NEW",
						"-j", "REJECT", "--reject-with", reject},
				}},
			},
		},
		Jumps: []Jump{
			jump(iptables.TableNAT, "PREROUTING", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "OUTPUT", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "POSTROUTING", "kube-ipvs postrouting", ChainPostrouting),
			jump(iptables.TableFilter, "INPUT", "kube-ipvs VIP filter", ChainFilter),
		},
	}
}
