package proxier

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

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
	ChainCluster     = Prefix + "CLUSTER"
	ChainExternal    = Prefix + "EXTERNAL"
	ChainMarkMasq    = Prefix + "MARK-MASQ"
	ChainPostrouting = Prefix + "POSTROUTING"
	ChainFilter      = Prefix + "FILTER"
	ChainForward     = Prefix + "FORWARD"
	ChainFirewall    = Prefix + "FIREWALL"
	// ChainShortCircuit marks the packets the node sends to an external
	// address of a Service with externalTrafficPolicy Local (mangle
	// OUTPUT), ChainShortCircuitPods those pods send (mangle INPUT).
	ChainShortCircuit     = Prefix + "SHORT-CIRCUIT"
	ChainShortCircuitPods = Prefix + "SHORT-CIRCUIT-PODS"
	// ChainEgressMasq masquerades what pods send outside SetNonMasq
	// (egress.masquerade), ChainEgressFilter rejects what the node forwards
	// to SetEgressDeny (egress.denyCIDRs), and ChainIngressDeny drops what
	// SetDenySources sends to an external address (ingress.denySourceCIDRs).
	// Each exists only while its list is in use.
	ChainEgressMasq   = Prefix + "EGRESS-MASQ"
	ChainEgressFilter = Prefix + "EGRESS-FILTER"
	ChainIngressDeny  = Prefix + "INGRESS-DENY"

	// SetClusterIP holds VIP,proto:port of every ClusterIP virtual server.
	SetClusterIP = Prefix + "CLUSTER-IP"
	// SetNodePort holds nodeIP,proto:nodePort of every NodePort virtual
	// server.
	SetNodePort = Prefix + "NODE-PORT"
	// SetLoadBalancer holds IP,proto:port of every load-balancer ingress
	// IP virtual server.
	SetLoadBalancer = Prefix + "LOAD-BALANCER"
	// SetExternalIP holds IP,proto:port of every spec.externalIPs virtual
	// server.
	SetExternalIP = Prefix + "EXTERNAL-IP"
	// SetExternalLocal holds the members of NODE-PORT, LOAD-BALANCER and
	// EXTERNAL-IP whose Service has externalTrafficPolicy Local: their
	// clients keep their source address.
	SetExternalLocal = Prefix + "EXTERNAL-LOCAL"
	// SetFirewall holds the load-balancer virtual servers whose Service
	// has loadBalancerSourceRanges, and SetSourceRanges the sources each
	// lets through (IP,proto:port,CIDR).
	SetFirewall     = Prefix + "LB-FIREWALL"
	SetSourceRanges = Prefix + "LB-SOURCES"
	// SetShortCircuit holds the members of EXTERNAL-LOCAL again, each with
	// the firewall mark (ipset skbinfo) of its Service port's short-circuit
	// virtual server: the one pods and the node itself reach through that
	// address, with every endpoint of the Service as real servers, as if
	// their traffic had gone out to the load balancer and come back.
	SetShortCircuit = Prefix + "SHORT-CIRCUIT"
	// SetOwnedMark is the ownership record of the firewall-mark virtual
	// servers, as SetOwned is of the others: it holds the mark of each,
	// added before the virtual server and removed after it.
	SetOwnedMark = Prefix + "OWNED-MARK"
	// SetVIP holds every address bound on kipvs0: ClusterIPs, and the
	// external and load-balancer IPs that are not node addresses.
	SetVIP = Prefix + "VIP"
	// SetLoopBack holds endpoint,proto:port,endpoint of local endpoints,
	// to masquerade a pod reaching itself through its Service (hairpin).
	SetLoopBack = Prefix + "LOOP-BACK"
	// SetNonMasq, SetEgressDeny and SetDenySources are the node-wide lists
	// of the configuration (hash:net): egress.nonMasqueradeCIDRs,
	// egress.denyCIDRs and ingress.denySourceCIDRs.
	SetNonMasq     = Prefix + "NON-MASQ"
	SetEgressDeny  = Prefix + "EGRESS-DENY"
	SetDenySources = Prefix + "DENY-SOURCES"
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
	// EgressMasquerade masquerades what a source in ClusterCIDRs sends to
	// a destination outside NonMasqueradeCIDRs (egress.masquerade).
	EgressMasquerade   bool
	NonMasqueradeCIDRs []netip.Prefix
	// EgressDenyCIDRs are the destinations the node does not forward a new
	// connection to (egress.denyCIDRs), IngressDenySourceCIDRs the sources
	// whose packets to a NodePort, load-balancer or external IP are
	// dropped (ingress.denySourceCIDRs). Only those of Family are used.
	EgressDenyCIDRs        []netip.Prefix
	IngressDenySourceCIDRs []netip.Prefix
	// ServiceCIDRs (serviceCIDRs) are accepted whole by a local route on
	// kipvs0: a new connection to an address in one that is not a
	// ClusterIP virtual server is rejected, like one to a VIP's other
	// ports. Only those of Family are used.
	ServiceCIDRs []netip.Prefix
}

// The firewall marks of short-circuit virtual servers are MarkFirst to
// MarkLast: bit 13 set, no bit above it. It keeps clear of kube-proxy's
// 0x4000 and 0x8000 and of the CNIs' bits (Calico 0xffff0000, Weave
// 0x20000 and 0x40000): a CNI reading its bits on a marked packet finds
// them clear.
const (
	MarkFirst uint32 = 0x2000
	MarkLast  uint32 = 0x3fff
)

// markTag matches the packets that carry a short-circuit mark, whatever
// bits above bit 15 a CNI set on them: bit 13 set, bits 14 and 15 (the
// masquerade and drop marks of kube-proxy) clear.
const markTag = "0x2000/0xe000"

// Jump is a rule kube-ipvs keeps in a chain it does not own.
type Jump struct {
	Table, Chain string
	Spec         []string
}

// Rules is the whole, constant netfilter configuration of one family. Its
// specs are written the way `iptables -S` prints them back, so that
// comparing them with the kernel finds no difference when there is none.
type Rules struct {
	Family v1.IPFamily
	Sets   []iptables.Set
	// Lists are the sets whose members come from the configuration, not
	// from Services: EnsureRules keeps their members, the planner never
	// sees them.
	Lists  []List
	Chains map[string][]iptables.Chain // by table
	Jumps  []Jump
}

// List is a node-wide set and its members.
type List struct {
	Set     iptables.Set
	Members []iptables.Entry
}

// AllSets are r's sets, those of its lists included.
func (r Rules) AllSets() []iptables.Set {
	sets := slices.Clone(r.Sets)
	for _, l := range r.Lists {
		sets = append(sets, l.Set)
	}
	return sets
}

// BuildRules computes the rules for a configuration. Like Build, it is pure.
//
// nat: a packet to a ClusterIP virtual server (CLUSTER-IP set) is marked
// for masquerade when it comes from outside the cluster CIDRs (without any
// cluster CIDR: only what the node sends from a VIP), or always with
// masqueradeAll. A packet to a NodePort, load-balancer or external IP
// virtual server is marked unless its Service has externalTrafficPolicy
// Local (EXTERNAL-LOCAL set), whose clients keep their address. Either is
// then ACCEPTed, as kube-proxy does: no later nat rule (a CNI hostPort
// DNAT, Docker's DOCKER chain, both of which match any local address) can
// take it from IPVS. POSTROUTING masquerades what was marked, after IPVS
// picked a real server, and hairpin traffic (LOOP-BACK set).
//
// filter: FORWARD accepts what was marked for masquerade and conntrack
// RELATED,ESTABLISHED traffic, so that replies from pods are forwarded on a
// node whose FORWARD policy is DROP (kube-proxy's KUBE-FORWARD); INPUT
// rejects a new connection to an address bound on kipvs0 on a port that is
// not one of its virtual servers, and one to an address of a Service CIDR
// (accepted whole by its local route) on any port that is not a ClusterIP
// virtual server, so host services do not answer on ClusterIPs,
// unallocated Service addresses or load-balancer IPs (kubernetes#72236).
//
// mangle: PREROUTING and OUTPUT drop a packet to a load-balancer virtual
// server with source ranges (FIREWALL set) whose source is not in them
// (SOURCE-RANGES set). This runs before IPVS sees the packet in both
// directions: from outside (IPVS hooks INPUT after the filter table) and
// from the node itself (IPVS hooks OUTPUT before it), which
// kube-proxy's IPVS mode needs a rule per load-balancer IP for.
//
// Short circuit: a pod (source in the cluster CIDRs) or the node itself
// reaching an external address of a Service with externalTrafficPolicy
// Local goes to all of its endpoints, as in kube-proxy's iptables and
// nftables modes: the policy is for clients outside the cluster. The packet
// gets the mark SHORT-CIRCUIT maps its destination to, and IPVS, which
// looks firewall marks up before addresses, gives it to that mark's
// virtual server. Pods are marked in mangle INPUT (the SET target maps
// marks in mangle only), the node in mangle OUTPUT, each before IPVS on
// its path. IPVS compares the whole mark: a filter INPUT rule that sets
// bits of its own on a pod's packet (a CNI's policy bits, such as
// Calico's) makes it miss the short circuit, and the pod is served as an
// outside client. What the node sends this way is masqueraded in
// POSTROUTING, whatever bits a CNI set on it since (markTag): its source
// may be a VIP on kipvs0, which no endpoint could answer. What pods send
// keeps their address.
//
// Node-wide lists (see BuildLists): each of egress.masquerade,
// egress.denyCIDRs and ingress.denySourceCIDRs adds a set, a chain and its
// jumps while it is in use, and nothing otherwise.
//
// Every rule names a set; none depends on a Service.
func BuildRules(c RuleConfig) Rules {
	r := buildServiceRules(c)
	addLists(&r, c)
	return r
}

func buildServiceRules(c RuleConfig) Rules {
	v6 := c.Family == v1.IPv6Protocol
	name := func(base string) string { return setName(base, c.Family) }
	mark := fmt.Sprintf("%#x", uint32(1)<<c.MasqueradeBit)
	comment := func(text string) []string { return []string{"-m", "comment", "--comment", text} }
	match := func(set, dir string) []string { return []string{"-m", "set", "--match-set", name(set), dir} }
	icmp, reject := "icmp", "icmp-port-unreachable"
	if v6 {
		icmp, reject = "ipv6-icmp", "icmp6-port-unreachable"
	}
	jump := func(table, chain, text, target string) Jump {
		return Jump{Table: table, Chain: chain, Spec: append(comment(text), "-j", target)}
	}
	set := func(base string, t iptables.SetType) iptables.Set {
		return iptables.Set{Name: name(base), Type: t, IPv6: v6}
	}
	rule := func(parts ...[]string) []string { return slices.Concat(parts...) }
	return Rules{
		Family: c.Family,
		Sets: []iptables.Set{
			set(SetOwned, iptables.HashIPPort),
			set(SetClusterIP, iptables.HashIPPort),
			set(SetNodePort, iptables.HashIPPort),
			set(SetLoadBalancer, iptables.HashIPPort),
			set(SetExternalIP, iptables.HashIPPort),
			set(SetExternalLocal, iptables.HashIPPort),
			set(SetFirewall, iptables.HashIPPort),
			set(SetSourceRanges, iptables.HashIPPortNet),
			set(SetVIP, iptables.HashIP),
			set(SetLoopBack, iptables.HashIPPortIP),
			{Name: name(SetShortCircuit), Type: iptables.HashIPPort, IPv6: v6, SkbInfo: true},
			{Name: name(SetOwnedMark), Type: iptables.BitmapPort, Ports: [2]uint16{uint16(MarkFirst), uint16(MarkLast)}},
		},
		Chains: map[string][]iptables.Chain{
			iptables.TableNAT: {
				{Name: ChainServices, Rules: [][]string{
					rule(match(SetClusterIP, "dst,dst"), []string{"-j", ChainCluster}),
					rule(match(SetNodePort, "dst,dst"), []string{"-j", ChainExternal}),
					rule(match(SetLoadBalancer, "dst,dst"), []string{"-j", ChainExternal}),
					rule(match(SetExternalIP, "dst,dst"), []string{"-j", ChainExternal}),
				}},
				{Name: ChainCluster, Rules: clusterChain(c, name(SetVIP))},
				{Name: ChainExternal, Rules: [][]string{
					rule(match(SetExternalLocal, "dst,dst"), []string{"-j", "ACCEPT"}),
					{"-j", ChainMarkMasq},
					{"-j", "ACCEPT"},
				}},
				{Name: ChainMarkMasq, Rules: [][]string{{"-j", "MARK", "--set-xmark", mark + "/" + mark}}},
				{Name: ChainPostrouting, Rules: [][]string{
					rule(match(SetLoopBack, "dst,dst,src"), []string{"-j", "MASQUERADE"}),
					{"-m", "addrtype", "--src-type", "LOCAL", "-m", "mark", "--mark", markTag,
						"-j", "MASQUERADE", "--random-fully"},
					{"-m", "mark", "!", "--mark", mark + "/" + mark, "-j", "RETURN"},
					{"-j", "MARK", "--set-xmark", mark + "/0x0"},
					{"-j", "MASQUERADE", "--random-fully"},
				}},
			},
			iptables.TableFilter: {
				{Name: ChainFilter, Rules: append([][]string{
					rule(match(SetClusterIP, "dst,dst"), []string{"-j", "RETURN"}),
					rule(match(SetLoadBalancer, "dst,dst"), []string{"-j", "RETURN"}),
					rule(match(SetExternalIP, "dst,dst"), []string{"-j", "RETURN"}),
					{"-p", icmp, "-j", "RETURN"},
					rule(match(SetVIP, "dst"), []string{"-m", "conntrack", "--ctstate", "NEW",
						"-j", "REJECT", "--reject-with", reject}),
				}, toServiceCIDRs(c, []string{"-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with", reject})...)},
				{Name: ChainForward, Rules: [][]string{
					append(comment("kube-ipvs masqueraded traffic"), "-m", "mark", "--mark", mark+"/"+mark, "-j", "ACCEPT"),
					append(comment("kube-ipvs replies and related traffic"), "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
				}},
			},
			iptables.TableMangle: {
				{Name: ChainFirewall, Rules: [][]string{
					rule(match(SetFirewall, "dst,dst"), []string{"-m", "set", "!", "--match-set", name(SetSourceRanges), "dst,dst,src", "-j", "DROP"}),
				}},
				{Name: ChainShortCircuit, Rules: [][]string{shortCircuit(name(SetShortCircuit))}},
				{Name: ChainShortCircuitPods, Rules: fromPods(c, shortCircuit(name(SetShortCircuit)))},
			},
		},
		Jumps: []Jump{
			jump(iptables.TableNAT, "PREROUTING", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "OUTPUT", "kube-ipvs service portals", ChainServices),
			jump(iptables.TableNAT, "POSTROUTING", "kube-ipvs postrouting", ChainPostrouting),
			jump(iptables.TableFilter, "INPUT", "kube-ipvs VIP filter", ChainFilter),
			jump(iptables.TableFilter, "FORWARD", "kube-ipvs forwarding", ChainForward),
			jump(iptables.TableMangle, "PREROUTING", "kube-ipvs load-balancer source ranges", ChainFirewall),
			jump(iptables.TableMangle, "OUTPUT", "kube-ipvs load-balancer source ranges", ChainFirewall),
			jump(iptables.TableMangle, "OUTPUT", "kube-ipvs short-circuit of the node", ChainShortCircuit),
			jump(iptables.TableMangle, "INPUT", "kube-ipvs short-circuit of pods", ChainShortCircuitPods),
		},
	}
}

// shortCircuit is the rule that gives a packet to an external address in
// SHORT-CIRCUIT the mark of its short-circuit virtual server. The mark
// replaces the packet's whole mark: IPVS looks a firewall mark up by
// equality.
func shortCircuit(set string) []string {
	return []string{"-m", "set", "--match-set", set, "dst,dst", "-j", "SET", "--map-set", set, "dst,dst", "--map-mark"}
}

// fromPods restricts rule to sources in the cluster CIDRs of c's family:
// kube-proxy's "pod traffic for external destinations". Without a cluster
// CIDR no pod is known, and only the node is short-circuited, as in
// kube-proxy.
func fromPods(c RuleConfig, rule []string) [][]string {
	var rules [][]string
	for _, p := range c.ClusterCIDRs {
		if familyOf(p.Addr()) == c.Family {
			rules = append(rules, append([]string{"-s", p.Masked().String()}, rule...))
		}
	}
	return rules
}

// toServiceCIDRs restricts rule to destinations in the Service CIDRs of
// c's family, one rule per CIDR.
func toServiceCIDRs(c RuleConfig, rule []string) [][]string {
	var rules [][]string
	for _, p := range c.ServiceCIDRs {
		if familyOf(p.Addr()) == c.Family {
			rules = append(rules, append([]string{"-d", p.Masked().String()}, rule...))
		}
	}
	return rules
}

// Tables are the tables r has chains in, sorted.
func (r Rules) Tables() []string { return slices.Sorted(maps.Keys(r.Chains)) }

// clusterChain is the body of the nat chain every packet to a ClusterIP
// virtual server goes through: mark it for masquerade when it must be,
// then ACCEPT it.
func clusterChain(c RuleConfig, vip string) [][]string {
	var inside [][]string
	if !c.MasqueradeAll {
		for _, p := range c.ClusterCIDRs {
			if familyOf(p.Addr()) == c.Family {
				inside = append(inside, []string{"-s", p.Masked().String(), "-j", "ACCEPT"})
			}
		}
	}
	var rules [][]string
	switch {
	case c.MasqueradeAll || len(inside) > 0:
		// From a pod: keep its source. From anywhere else: masquerade.
		rules = append(rules, inside...)
		rules = append(rules, []string{"-j", ChainMarkMasq})
	default:
		// No cluster CIDR: as kube-proxy, masquerade at least what the node
		// itself sends from a VIP (the source it picks for a local VIP, or
		// for a ClusterIP a Service CIDR's route accepts: the ClusterIP),
		// which no endpoint could answer otherwise.
		rules = append(rules, []string{"-m", "set", "--match-set", vip, "src", "-j", ChainMarkMasq})
		for _, p := range c.ServiceCIDRs {
			if familyOf(p.Addr()) == c.Family {
				rules = append(rules, []string{"-s", p.Masked().String(), "-j", ChainMarkMasq})
			}
		}
	}
	return append(rules, []string{"-j", "ACCEPT"})
}

// addLists adds the node-wide lists of c to r: for each one in use, its
// set (hash:net, of c's family), its chain and the jumps to it.
//
// egress.masquerade: nat POSTROUTING, after IPVS and the node's routing:
// what a pod (a source in the cluster CIDRs) sends to a destination
// outside SetNonMasq leaves with the node's address. A packet marked for
// masquerade is left to ChainPostrouting, which also clears the mark.
//
// egress.denyCIDRs: filter FORWARD and OUTPUT reject a new connection to a
// destination in SetEgressDeny whose source is not the node's: in FORWARD,
// what the node routes for a pod; in OUTPUT, what IPVS sends on for a pod
// or an outside client (IPVS hands its packets to OUTPUT, with the
// client's source). The node's own processes send from a local address
// and are not affected. Replies (not NEW) pass, so a client in a denied
// range still gets answers from a pod it reached.
//
// ingress.denySourceCIDRs: mangle PREROUTING, before IPVS and before the
// load-balancer source ranges, drops what a source in SetDenySources sends
// to a NodePort, load-balancer or external IP virtual server. ClusterIPs
// and what the node itself sends (mangle OUTPUT) are not affected.
func addLists(r *Rules, c RuleConfig) {
	v6 := c.Family == v1.IPv6Protocol
	name := func(base string) string { return setName(base, c.Family) }
	comment := func(text string) []string { return []string{"-m", "comment", "--comment", text} }
	list := func(base string, cidrs []netip.Prefix) {
		l := List{Set: iptables.Set{Name: name(base), Type: iptables.HashNet, IPv6: v6}}
		for _, p := range cidrs {
			if familyOf(p.Addr()) == c.Family {
				l.Members = append(l.Members, iptables.Entry{Net: p.Masked()})
			}
		}
		r.Lists = append(r.Lists, l)
	}
	jump := func(table, chain, text, target string) {
		r.Jumps = append(r.Jumps, Jump{Table: table, Chain: chain, Spec: append(comment(text), "-j", target)})
	}
	mark := fmt.Sprintf("%#x", uint32(1)<<c.MasqueradeBit)
	if pods := fromPods(c, []string{"-j", "MASQUERADE", "--random-fully"}); c.EgressMasquerade && len(pods) > 0 {
		list(SetNonMasq, c.NonMasqueradeCIDRs)
		rules := [][]string{
			{"-m", "mark", "--mark", mark + "/" + mark, "-j", "RETURN"},
			{"-m", "set", "--match-set", name(SetNonMasq), "dst", "-j", "RETURN"},
		}
		r.Chains[iptables.TableNAT] = append(r.Chains[iptables.TableNAT], iptables.Chain{Name: ChainEgressMasq, Rules: append(rules, pods...)})
		jump(iptables.TableNAT, "POSTROUTING", "kube-ipvs egress masquerade", ChainEgressMasq)
	}
	if ofFamily(c.EgressDenyCIDRs, c.Family) {
		list(SetEgressDeny, c.EgressDenyCIDRs)
		reject := "icmp-admin-prohibited"
		if v6 {
			reject = "icmp6-adm-prohibited"
		}
		r.Chains[iptables.TableFilter] = append(r.Chains[iptables.TableFilter], iptables.Chain{Name: ChainEgressFilter, Rules: [][]string{
			{"-m", "conntrack", "--ctstate", "NEW", "-m", "set", "--match-set", name(SetEgressDeny), "dst",
				"-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "REJECT", "--reject-with", reject},
		}})
		jump(iptables.TableFilter, "FORWARD", "kube-ipvs egress deny list", ChainEgressFilter)
		jump(iptables.TableFilter, "OUTPUT", "kube-ipvs egress deny list", ChainEgressFilter)
	}
	if ofFamily(c.IngressDenySourceCIDRs, c.Family) {
		list(SetDenySources, c.IngressDenySourceCIDRs)
		dst := func(set string) []string {
			return []string{"-m", "set", "--match-set", name(set), "dst,dst", "-j", "DROP"}
		}
		r.Chains[iptables.TableMangle] = append(r.Chains[iptables.TableMangle], iptables.Chain{Name: ChainIngressDeny, Rules: [][]string{
			{"-m", "set", "!", "--match-set", name(SetDenySources), "src", "-j", "RETURN"},
			dst(SetNodePort), dst(SetLoadBalancer), dst(SetExternalIP),
		}})
		jump(iptables.TableMangle, "PREROUTING", "kube-ipvs ingress deny list", ChainIngressDeny)
	}
}

// ofFamily reports whether ps holds a prefix of family f.
func ofFamily(ps []netip.Prefix, f v1.IPFamily) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return familyOf(p.Addr()) == f })
}
