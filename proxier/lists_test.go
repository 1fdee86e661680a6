package proxier

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// listOptions turns on every node-wide list.
func listOptions(deny ...string) Options {
	o := testOptions()
	o.Rules.EgressMasquerade = true
	o.Rules.NonMasqueradeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fd00::/8")}
	for _, d := range append([]string{"169.254.169.254/32"}, deny...) {
		o.Rules.EgressDenyCIDRs = append(o.Rules.EgressDenyCIDRs, netip.MustParsePrefix(d))
	}
	o.Rules.IngressDenySourceCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	return o
}

// linesWith keeps the lines of a dump that hold one of the words.
func linesWith(dump string, words ...string) string {
	var b strings.Builder
	for line := range strings.Lines(dump) {
		for _, w := range words {
			if strings.Contains(line, w) {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}

var listWords = []string{ChainEgressMasq, ChainEgressFilter, ChainIngressDeny, SetNonMasq, SetEgressDeny, SetDenySources}

func TestListsProgramConstantRulesAndTheirSets(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, listOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	checkDump(t, "iptables", linesWith(n.ipt.Dump(), listWords...), `:KIPVS-EGRESS-FILTER -
-A FORWARD -m comment --comment "kube-ipvs egress deny list" -j KIPVS-EGRESS-FILTER
-A OUTPUT -m comment --comment "kube-ipvs egress deny list" -j KIPVS-EGRESS-FILTER
-A KIPVS-EGRESS-FILTER -m conntrack --ctstate NEW -m set --match-set KIPVS-EGRESS-DENY dst -m addrtype ! --src-type LOCAL -j REJECT --reject-with icmp-admin-prohibited
:KIPVS-INGRESS-DENY -
-A PREROUTING -m comment --comment "kube-ipvs ingress deny list" -j KIPVS-INGRESS-DENY
-A KIPVS-INGRESS-DENY -m set ! --match-set KIPVS-DENY-SOURCES src -j RETURN
-A KIPVS-INGRESS-DENY -m set --match-set KIPVS-NODE-PORT dst,dst -j DROP
-A KIPVS-INGRESS-DENY -m set --match-set KIPVS-LOAD-BALANCER dst,dst -j DROP
-A KIPVS-INGRESS-DENY -m set --match-set KIPVS-EXTERNAL-IP dst,dst -j DROP
:KIPVS-EGRESS-MASQ -
-A POSTROUTING -m comment --comment "kube-ipvs egress masquerade" -j KIPVS-EGRESS-MASQ
-A KIPVS-EGRESS-MASQ -m mark --mark 0x4000/0x4000 -j RETURN
-A KIPVS-EGRESS-MASQ -m set --match-set KIPVS-NON-MASQ dst -j RETURN
-A KIPVS-EGRESS-MASQ -s 10.244.0.0/16 -j MASQUERADE --random-fully
`)
	// Only the IPv4 prefixes go into the IPv4 sets.
	checkDump(t, "ipsets", linesWith(n.sets.Dump(), listWords...), `create KIPVS-DENY-SOURCES hash:net family inet hashsize 1024 maxelem 65536
add KIPVS-DENY-SOURCES 198.51.100.0/24
create KIPVS-EGRESS-DENY hash:net family inet hashsize 1024 maxelem 65536
add KIPVS-EGRESS-DENY 169.254.169.254/32
create KIPVS-NON-MASQ hash:net family inet hashsize 1024 maxelem 65536
add KIPVS-NON-MASQ 10.244.0.0/16
add KIPVS-NON-MASQ 169.254.0.0/16
`)
	n.resetCalls()
	mustSync(t, p, true)
	if w := n.ipt.Writes() + n.sets.Writes(); w != 0 {
		t.Errorf("a full sync with nothing changed wrote %d times: %v %v", w, n.ipt.Calls(), n.sets.Calls())
	}
}

// A restart with a list changed edits its members; one without a list
// leaves nothing of it: no chain, no jump, no set.
func TestListsFollowTheConfigurationAcrossRestarts(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, listOptions())
	webAndDNS(p)
	mustSync(t, p, false)

	changed := listOptions()
	changed.Rules.EgressDenyCIDRs = []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("100.100.100.200/32")}
	n.resetCalls()
	p = newTestProxier(t, n, changed)
	webAndDNS(p)
	mustSync(t, p, false)
	if got := n.sets.Calls()[iptables.MethodAddEntry]; got < 1 {
		t.Errorf("the added deny CIDR was not added: %v", n.sets.Calls())
	}
	checkDump(t, "deny list", linesWith(n.sets.Dump(), "add "+SetEgressDeny+" "), `add KIPVS-EGRESS-DENY 100.100.100.200/32
add KIPVS-EGRESS-DENY 169.254.169.254/32
`)

	p = newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	if left := linesWith(n.ipt.Dump()+n.sets.Dump(), listWords...); left != "" {
		t.Errorf("lists turned off, yet left:\n%s", left)
	}
	full := newFakeNode()
	q := newTestProxier(t, full, testOptions())
	webAndDNS(q)
	mustSync(t, q, false)
	checkDump(t, "iptables after the lists went", n.ipt.Dump(), full.ipt.Dump())
	checkDump(t, "ipsets after the lists went", n.sets.Dump(), full.sets.Dump())
}

// Thousands of CIDRs are set members: the rules are the same as for one.
func TestThousandsOfCIDRsKeepTheRuleCount(t *testing.T) {
	count := func(deny []string) int {
		n := newFakeNode()
		p := newTestProxier(t, n, listOptions(deny...))
		webAndDNS(p)
		mustSync(t, p, false)
		return strings.Count(n.ipt.Dump(), "\n-A ")
	}
	var many []string
	for i := range 5000 {
		many = append(many, fmt.Sprintf("100.%d.%d.0/24", 64+i/256, i%256))
	}
	if one, thousands := count(nil), count(many); one != thousands {
		t.Errorf("%d rules with one deny CIDR, %d with 5001", one, thousands)
	}
}

// A CNI that flushes a built-in chain on restart takes kube-ipvs' jumps
// with it; the next full sync puts them back.
func TestFullSyncRestoresJumpsAFlushTook(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, listOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	want := n.ipt.Dump()
	for _, j := range p.rules.Jumps {
		if j.Table == iptables.TableNAT && j.Chain == "POSTROUTING" {
			if err := n.ipt.DeleteRule(j.Table, j.Chain, j.Spec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if strings.Contains(n.ipt.Dump(), "-A POSTROUTING") {
		t.Fatal("POSTROUTING still holds a jump")
	}
	mustSync(t, p, true)
	checkDump(t, "iptables", n.ipt.Dump(), want)
}

// What an older version or another configuration left under kube-ipvs'
// prefix goes at the next full sync: its jumps, its chains (even one that
// jumps to another), its sets. The IPv6 sets, which the IPv6 proxier
// owns, and everyone else's chains and sets stay.
func TestFullSyncSweepsWhatNoConfigurationWants(t *testing.T) {
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, false)
	want := n.ipt.Dump()
	wantSets := n.sets.Dump()
	for _, s := range []iptables.Set{{Name: "KIPVS-OLD", Type: iptables.HashIP}, {Name: "KIPVS-VIP-6", Type: iptables.HashIP, IPv6: true}, {Name: "cali40all-hosts", Type: iptables.HashNet}} {
		if err := n.sets.CreateSet(s); err != nil {
			t.Fatal(err)
		}
	}
	err := n.ipt.RestoreChains("filter", []iptables.Chain{
		{Name: "KIPVS-OLD", Rules: [][]string{{"-m", "set", "--match-set", "KIPVS-OLD", "src", "-j", "KIPVS-OLDER"}}},
		{Name: "KIPVS-OLDER", Rules: [][]string{{"-j", "RETURN"}}},
		{Name: "CNI-OWN", Rules: [][]string{{"-j", "RETURN"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range [][]string{{"-j", "KIPVS-OLD"}, {"-j", "CNI-OWN"}} {
		if _, err := n.ipt.EnsureRule("filter", "INPUT", spec); err != nil {
			t.Fatal(err)
		}
	}
	// A second copy of kube-ipvs' jump, behind the CNI's.
	if err := n.ipt.Load(strings.Replace(n.ipt.Dump(), "-A INPUT -j CNI-OWN\n", "-A INPUT -j CNI-OWN\n-A INPUT -m comment --comment \"kube-ipvs VIP filter\" -j KIPVS-FILTER\n", 1)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(n.ipt.Dump(), "-j KIPVS-FILTER"); got != 2 {
		t.Fatalf("the second copy of the jump is not there:\n%s", n.ipt.Dump())
	}
	mustSync(t, p, true)
	got := n.ipt.Dump()
	for _, line := range []string{":CNI-OWN -", "-A INPUT -j CNI-OWN", "-A CNI-OWN -j RETURN"} {
		if !strings.Contains(got, line+"\n") {
			t.Errorf("someone else's %q went:\n%s", line, got)
		}
	}
	others := strings.NewReplacer(":CNI-OWN -\n", "", "-A INPUT -j CNI-OWN\n", "", "-A CNI-OWN -j RETURN\n", "")
	checkDump(t, "iptables without the CNI's lines", others.Replace(got), want)
	kept := []string{"create KIPVS-VIP-6 hash:ip family inet6 hashsize 1024 maxelem 65536\n", "create cali40all-hosts hash:net family inet hashsize 1024 maxelem 65536\n"}
	sets := n.sets.Dump()
	for _, line := range kept {
		if !strings.Contains(sets, line) {
			t.Errorf("%q went:\n%s", line, sets)
		}
		sets = strings.Replace(sets, line, "", 1)
	}
	checkDump(t, "ipsets without the kept ones", sets, wantSets)
}
