package proxier

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// Names of everything kube-ipvs creates in netfilter. All chains and sets
// start with the one prefix, which no kube-proxy mode or version uses
// (kube-proxy's are KUBE-…, its nftables mode a table named kube-proxy);
// nothing else is touched.
const (
	Prefix = "KIPVS-"

	ChainServices    = Prefix + "SERVICES"
	ChainMarkMasq    = Prefix + "MARK-MASQ"
	ChainPostrouting = Prefix + "POSTROUTING"
	ChainFilter      = Prefix + "FILTER"
	ChainForward     = Prefix + "FORWARD"

	// SetClusterIP holds VIP,proto:port of every Service virtual server.
	SetClusterIP = Prefix + "CLUSTER-IP"
	// SetVIP holds every bound VIP.
	SetVIP = Prefix + "VIP"
	// SetLoopBack holds endpoint,proto:port,endpoint of local endpoints,
	// to masquerade a pod reaching itself through its Service (hairpin).
	SetLoopBack = Prefix + "LOOP-BACK"
	// SetOwned is kube-ipvs' record of the IPVS virtual servers it owns,
	// address,proto:port: a key is added before its virtual server is
	// created and removed after it is deleted. A virtual server whose key
	// is not in it belongs to someone else.
	SetOwned = Prefix + "OWNED"
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
// nat: a packet to a Service virtual server (CLUSTER-IP set) is marked for
// masquerade when it comes from outside the cluster CIDRs (without any
// cluster CIDR: only what the node sends from a VIP), or always with
// masqueradeAll, and is then ACCEPTed, as kube-proxy does: no later nat rule
// (a CNI hostPort DNAT, Docker's DOCKER chain, both of which match any local
// address) can take it from IPVS. POSTROUTING masquerades what was marked,
// after IPVS picked a real server, and hairpin traffic (LOOP-BACK set).
//
// filter: FORWARD accepts what was marked for masquerade and conntrack
// RELATED,ESTABLISHED traffic, so that replies from pods are forwarded on a
// node whose FORWARD policy is DROP (kube-proxy's KUBE-FORWARD); INPUT
// rejects a new connection to a VIP on a port that is not a Service port, so
// host services do not answer on ClusterIPs (kubernetes#72236).
func BuildRules(c RuleConfig) Rules {
	v6 := c.Family == v1.IPv6Protocol
	clusterIP, vip := setName(SetClusterIP, c.Family), setName(SetVIP, c.Family)
	mark := fmt.Sprintf("%#x", uint32(1)<<c.MasqueradeBit)
	comment := func(text string) []string { return []string{"-m", "comment", "--comment", text} }
	icmp, reject := "icmp", "icmp-port-unreachable"
	if v6 {
		icmp, reject = "ipv6-icmp", "icmp6-port-unreachable"
	}
	jump := func(table, chain, text, target string) Jump {
		return Jump{Table: table, Chain: chain, Spec: append(comment(text), "-j", target)}
	}
	return Rules{
		Sets: []iptables.Set{
			{Name: setName(SetOwned, c.Family), Type: iptables.HashIPPort, IPv6: v6},
			{Name: clusterIP, Type: iptables.HashIPPort, IPv6: v6},
			{Name: vip, Type: iptables.HashIP, IPv6: v6},
			{Name: setName(SetLoopBack, c.Family), Type: iptables.HashIPPortIP, IPv6: v6},
		},
		Chains: map[string][]iptables.Chain{
			iptables.TableNAT: {
				{Name: ChainServices, Rules: servicesChain(c, clusterIP, vip)},
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
					{"-m", "set", "--match-set", vip, "dst", "-m", "conntrack", "--ctstate", "NEW",
						"-j", "REJECT", "--reject-with", reject},
				}},
				{Name: ChainForward, Rules: [][]string{
					append(comment("kube-ipvs masqueraded traffic"), "-m", "mark", "--mark", mark+"/"+mark, "-j", "ACCEPT"),
					append(comment("kube-ipvs replies and related traffic"), "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
				}},
			},
		},
		Jumps: []Jump{
			jump(iptables.TableNAT, "PREROUTING", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "OUTPUT", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "POSTROUTING", "kube-ipvs postrouting", ChainPostrouting),
			jump(iptables.TableFilter, "INPUT", "kube-ipvs VIP filter", ChainFilter),
			jump(iptables.TableFilter, "FORWARD", "kube-ipvs forwarding", ChainForward),
		},
	}
}

// servicesChain is the body of the nat chain every packet to a Service
// virtual server goes through: mark it for masquerade when it must be,
// then ACCEPT it.
func servicesChain(c RuleConfig, clusterIP, vip string) [][]string {
	rules := [][]string{{"-m", "set", "!", "--match-set", clusterIP, "dst,dst", "-j", "RETURN"}}
	var inside [][]string
	if !c.MasqueradeAll {
		for _, p := range c.ClusterCIDRs {
			if familyOf(p.Addr()) == c.Family {
				inside = append(inside, []string{"-s", p.Masked().String(), "-j", "ACCEPT"})
			}
		}
	}
	switch {
	case c.MasqueradeAll || len(inside) > 0:
		// From a pod: keep its source. From anywhere else: masquerade.
		rules = append(rules, inside...)
		rules = append(rules, []string{"-j", ChainMarkMasq})
	default:
		// No cluster CIDR: as kube-proxy, masquerade at least what the node
		// itself sends from a VIP (the source it picks for a local VIP),
		// which no endpoint could answer otherwise.
		rules = append(rules, []string{"-m", "set", "--match-set", vip, "src", "-j", ChainMarkMasq})
	}
	return append(rules, []string{"-j", "ACCEPT"})
}
