package inspect

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// ruleConfigs are the configurations whose rules differ.
var ruleConfigs = map[string]proxier.RuleConfig{
	"clusterCIDR":    {Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{clusterCIDR}, MasqueradeBit: 14},
	"no clusterCIDR": {Family: v1.IPv4Protocol, MasqueradeBit: 14},
	"masqueradeAll":  {Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{clusterCIDR}, MasqueradeAll: true, MasqueradeBit: 14},
	"egress and ingress lists": {Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{clusterCIDR}, MasqueradeBit: 14,
		EgressMasquerade: true, NonMasqueradeCIDRs: []netip.Prefix{clusterCIDR, netip.MustParsePrefix("169.254.0.0/16")},
		EgressDenyCIDRs:        []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")},
		IngressDenySourceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	"serviceCIDRs": {Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{clusterCIDR}, MasqueradeBit: 14,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}},
	"serviceCIDRs, no clusterCIDR": {Family: v1.IPv4Protocol, MasqueradeBit: 14,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}},
	"IPv6": {Family: v1.IPv6Protocol, MasqueradeBit: 14,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56"), clusterCIDR}},
}

// TestTracerKnowsEveryRule: every rule BuildRules makes, in every
// configuration, parses with the options the tracer knows, has a target it
// knows, evaluates without error, and has a description. A rule added to
// BuildRules fails here until the tracer and describer learn it.
func TestTracerKnowsEveryRule(t *testing.T) {
	for name, c := range ruleConfigs {
		t.Run(name, func(t *testing.T) {
			r := proxier.BuildRules(c)
			nf := newNetfilter(r, nil)
			d := describer{family: c.Family, masqueradeAll: c.MasqueradeAll, clusterCIDRs: c.ClusterCIDRs}
			known := map[string]bool{"ACCEPT": true, "DROP": true, "REJECT": true, "RETURN": true, "MASQUERADE": true, "MARK": true, "SET": true}
			check := func(table, chain string, rule []string, jump bool) {
				t.Helper()
				_, target, _, err := parseRule(rule)
				if err != nil {
					t.Errorf("%s %s: %v", table, chain, err)
					return
				}
				if _, isChain := nf.chains[table][target]; !known[target] && !isChain {
					t.Errorf("%s %s %q: unknown target %s", table, chain, ruleString(rule), target)
				}
				if !jump && d.describe(table, chain, rule) == "" {
					t.Errorf("%s %s %q: no description", table, chain, ruleString(rule))
				}
				for _, src := range []source{{kind: FromOutside}, {kind: FromNode, addr: netip.MustParseAddr("192.0.2.1")}} {
					tr := &tracer{nf: nf, describe: d.describe}
					p := &packet{src: src, dst: netip.MustParseAddrPort("10.96.0.10:80"), proto: ipvs.TCP, mark: 0x4000}
					tr.rule(table, chain, rule, p, 0, !jump)
					if tr.err != nil {
						t.Errorf("%s %s %q: %v", table, chain, ruleString(rule), tr.err)
					}
				}
			}
			for table, chains := range r.Chains {
				for _, ch := range chains {
					for _, rule := range ch.Rules {
						check(table, ch.Name, rule, false)
					}
				}
			}
			for _, j := range r.Jumps {
				check(j.Table, j.Chain, j.Spec, true)
			}
		})
	}
}

func TestParseRuleRejectsWhatItDoesNotKnow(t *testing.T) {
	for _, r := range [][]string{
		{"-i", "eth0", "-j", "ACCEPT"},
		{"-m", "set", "--match-set", "X"},
		{"-s", "10.0.0.0/8"},
		{"!", "-j", "ACCEPT"},
	} {
		if _, _, _, err := parseRule(r); err == nil {
			t.Errorf("parseRule(%q) took it", r)
		}
	}
}

func TestMarkTargets(t *testing.T) {
	nf := newNetfilter(proxier.Rules{
		Sets: []iptables.Set{{Name: "SC", Type: iptables.HashIPPort, SkbInfo: true}},
		Chains: map[string][]iptables.Chain{"mangle": {{Name: "C", Rules: [][]string{
			{"-j", "MARK", "--set-xmark", "0x4000/0x4000"},
			{"-m", "set", "--match-set", "SC", "dst,dst", "-j", "SET", "--map-set", "SC", "dst,dst", "--map-mark"},
			{"-m", "mark", "--mark", "0x2001", "-j", "ACCEPT"},
		}}}},
	}, []proxier.SetEntry{proxier.NewSetEntry("SC", iptables.Entry{Addr: netip.MustParseAddr("10.0.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001})})
	tr := &tracer{nf: nf, describe: func(string, string, []string) string { return "" }}
	p := &packet{src: source{kind: FromOutside}, dst: netip.MustParseAddrPort("10.0.0.1:80"), proto: ipvs.TCP}
	if v := tr.chain("mangle", "C", p, 0); v != vAccept || p.mark != 0x2001 || tr.err != nil {
		t.Errorf("verdict %d, mark %#x, err %v; want ACCEPT with the member's mark 0x2001", v, p.mark, tr.err)
	}
	p = &packet{src: source{kind: FromOutside}, dst: netip.MustParseAddrPort("10.0.0.2:80"), proto: ipvs.TCP}
	if v := tr.chain("mangle", "C", p, 0); v != vContinue || p.mark != 0x4000 {
		t.Errorf("no member: verdict %d, mark %#x; want the chain's end with the MARK rule's 0x4000", v, p.mark)
	}
}
