package proxier

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// What kube-proxy's IPVS mode (v1.37, pkg/proxy/ipvs) leaves on a node,
// as its own cleanup (CleanupLeftovers) knows it: its dummy interface, its
// chains (KUBE-NODE-PORT is in both tables) and its sets. kubelet's
// KUBE-FIREWALL, KUBE-KUBELET-CANARY and KUBE-MARK-DROP are not
// kube-proxy's and are left alone.
const KubeProxyLink = "kube-ipvs0"

var (
	kubeProxyChains = map[string][]string{
		"nat": {"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ"},
		"filter": {"KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL",
			"KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER"},
	}
	kubeProxySets = []string{
		"KUBE-LOOP-BACK", "KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL",
		"KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER-FW", "KUBE-LOAD-BALANCER-LOCAL",
		"KUBE-LOAD-BALANCER-SOURCE-IP", "KUBE-LOAD-BALANCER-SOURCE-CIDR",
		"KUBE-NODE-PORT-TCP", "KUBE-NODE-PORT-LOCAL-TCP", "KUBE-NODE-PORT-UDP", "KUBE-NODE-PORT-LOCAL-UDP",
		"KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
		"KUBE-HEALTH-CHECK-NODE-PORT", "KUBE-IPVS-IPS",
	}
	// kubeProxyNodePortSets hold the NodePorts of each protocol.
	kubeProxyNodePortSets = map[ipvs.Protocol]string{
		ipvs.TCP: "KUBE-NODE-PORT-TCP", ipvs.UDP: "KUBE-NODE-PORT-UDP", ipvs.SCTP: "KUBE-NODE-PORT-SCTP-HASH",
	}
)

// TakeOver is how a proxier takes a node over from a stopped kube-proxy in
// IPVS mode without a cut: its first full syncs adopt kube-proxy's virtual
// servers for the Services kube-ipvs serves (their connections, counters
// and real servers stay; a different scheduler or flag is edited in
// place), bind their VIPs on kipvs0 beside kube-ipvs0, and install
// kube-ipvs' rules ahead of kube-proxy's. Once a full sync has programmed
// every Service, kube-proxy's other virtual servers, the jumps to its
// chains, its chains, its sets and kube-ipvs0 are removed, in that order.
type TakeOver struct {
	// Link is kube-proxy's dummy interface (KubeProxyLink).
	Link netif.Addrs
	// IP6Tables is ip6tables, where kube-proxy on a dual-stack node left
	// the same chains (and its KUBE-6-* sets); nil: not looked at.
	IP6Tables iptables.Interface
}

// kubeProxyState is what the take-over reads of kube-proxy's: the
// addresses on kube-ipvs0, and the NodePorts in its sets.
type kubeProxyState struct {
	addrs     map[netip.Addr]bool
	nodePorts map[ipvs.Protocol]map[uint16]bool
}

// owns reports whether virtual server k is kube-proxy's: on an address
// kube-ipvs0 holds, or on one of its NodePorts.
func (s *kubeProxyState) owns(k ipvs.ServiceKey) bool {
	return s != nil && !k.IsMark() && (s.addrs[k.Addr] || s.nodePorts[k.Proto][k.Port])
}

// takingOver reports whether virtual server k is kube-proxy's and the
// take-over is not done.
func (p *Proxier) takingOver(k ipvs.ServiceKey) bool {
	return p.opts.TakeOver != nil && !p.tookOver && p.kubeProxy.owns(k)
}

// excluded reports whether addr is in ipvs.excludeCIDRs.
func (p *Proxier) excluded(addr netip.Addr) bool {
	return slices.ContainsFunc(p.opts.ExcludeCIDRs, func(c netip.Prefix) bool { return c.Contains(addr) })
}

// readKubeProxy reads kube-proxy's addresses and NodePorts for the next
// full sync of a take-over.
func (p *Proxier) readKubeProxy() {
	if p.opts.TakeOver == nil || p.tookOver {
		return
	}
	s := &kubeProxyState{addrs: map[netip.Addr]bool{}, nodePorts: map[ipvs.Protocol]map[uint16]bool{}}
	addrs, err := p.opts.TakeOver.Link.ListAddrs()
	if err != nil {
		p.log.Warn("taking over from kube-proxy: reading "+KubeProxyLink, zap.Error(err))
	}
	for _, a := range addrs {
		s.addrs[a] = true
	}
	for proto, set := range kubeProxyNodePortSets {
		entries, err := p.kernel.Sets.ListEntries(set)
		if err != nil && !errors.Is(err, iptables.ErrNotFound) {
			p.log.Warn("taking over from kube-proxy: reading its NodePorts", zap.String("set", set), zap.Error(err))
		}
		for _, e := range entries {
			if s.nodePorts[proto] == nil {
				s.nodePorts[proto] = map[uint16]bool{}
			}
			s.nodePorts[proto][e.Port] = true
		}
	}
	p.kubeProxy = s
}

// finishTakeOver removes what is left of kube-proxy once a full sync has
// programmed every Service; until then kube-proxy's rules stay behind
// kube-ipvs' and it is tried again at the next full sync.
func (p *Proxier) finishTakeOver() {
	if p.opts.TakeOver == nil || p.tookOver || p.opts.DryRun {
		return
	}
	if len(p.failures) > 0 {
		p.log.Info("taking over from kube-proxy: its rules stay until every Service is programmed",
			zap.Int("failingServices", len(p.failures)))
		return
	}
	done, err := removeKubeProxy(p.kernel, p.opts.TakeOver, p.kubeProxy, func(k ipvs.ServiceKey) bool {
		_, ours := p.applied.Servers[k]
		return ours || p.excluded(k.Addr)
	})
	for _, d := range done {
		p.log.Info("taking over from kube-proxy: removed", zap.String("op", d))
	}
	if err != nil {
		p.log.Error("taking over from kube-proxy: not all of its state could be removed; retrying at the next full sync", zap.Error(err))
		return
	}
	p.tookOver, p.kubeProxy = true, nil
	p.log.Info("took over from kube-proxy: nothing of it is left on this node", zap.Int("removed", len(done)))
}

// removeKubeProxy deletes kube-proxy's virtual servers that keep (kube-ipvs'
// own, adopted ones among them, and those in ipvs.excludeCIDRs) does not
// claim, then the rules in built-in chains that jump to its chains, its
// chains (all flushed first, as they jump to each other), in iptables and
// ip6tables, its sets of both families and its link. It reports what it
// removed, as commands.
func removeKubeProxy(k Kernel, to *TakeOver, kp *kubeProxyState, keep func(ipvs.ServiceKey) bool) ([]string, error) {
	var done []string
	var errs []error
	note := func(what string, err error) {
		if err == nil {
			done = append(done, what)
		} else if !errors.Is(err, iptables.ErrNotFound) && !errors.Is(err, ipvs.ErrNotFound) && !errors.Is(err, netif.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	if k.IPVS != nil {
		svcs, err := k.IPVS.ListServices()
		if err != nil {
			return nil, err
		}
		for _, s := range svcs {
			if kp.owns(s.Key) && !keep(s.Key) {
				note(Op{Kind: OpDelService, Service: s}.String(), k.IPVS.DeleteService(s.Key))
			}
		}
	}
	removeChains := func(ipt iptables.Interface, cmd string, note func(string, error)) {
		theirs := func(table, target string) bool { return slices.Contains(kubeProxyChains[table], target) }
		for _, table := range slices.Sorted(maps.Keys(kubeProxyChains)) {
			for _, chain := range builtinChains[table] {
				rules, err := ipt.ListRules(table, chain)
				if err != nil {
					note(cmd+" listing "+table+" "+chain, err)
					continue
				}
				for _, r := range rules {
					if i := slices.Index(r, "-j"); i >= 0 && i+1 < len(r) && theirs(table, r[i+1]) {
						note(fmt.Sprintf("%s -t %s -D %s %s", cmd, table, chain, strings.Join(r, " ")), ipt.DeleteRule(table, chain, r))
					}
				}
			}
		}
		for _, table := range slices.Sorted(maps.Keys(kubeProxyChains)) {
			var present []iptables.Chain
			for _, c := range kubeProxyChains[table] {
				if _, err := ipt.ListRules(table, c); err == nil {
					present = append(present, iptables.Chain{Name: c})
				}
			}
			if len(present) == 0 {
				continue
			}
			if err := ipt.RestoreChains(table, present); err != nil {
				note(cmd+" flushing kube-proxy's chains in "+table, err)
				continue
			}
			for _, c := range present {
				note(fmt.Sprintf("%s -t %s -X %s", cmd, table, c.Name), ipt.DeleteChain(table, c.Name))
			}
		}
	}
	removeChains(k.IPTables, "iptables", note)
	if to.IP6Tables != nil {
		// A node without IPv6 (or ip6tables) has nothing of kube-proxy's
		// there, and must not hold the take-over up.
		removeChains(to.IP6Tables, "ip6tables", func(what string, err error) {
			if err == nil {
				done = append(done, what)
			}
		})
	}
	for _, s := range kubeProxySets {
		note("ipset destroy "+s, k.Sets.DestroySet(s))
		note("ipset destroy "+kubeProxySet6(s), k.Sets.DestroySet(kubeProxySet6(s)))
	}
	note("ip link del "+KubeProxyLink, to.Link.DeleteLink())
	return done, errors.Join(errs...)
}

// kubeProxySet6 is the name kube-proxy gives the IPv6 twin of set name:
// KUBE-6-… for KUBE-…, cut to ipset's 31 characters.
func kubeProxySet6(name string) string {
	n := strings.Replace(name, "KUBE-", "KUBE-6-", 1)
	return n[:min(len(n), 31)]
}

// builtinChains are the built-in chains kube-proxy's IPVS mode jumps from.
var builtinChains = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
}
