package proxier

import (
	"net/netip"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// fakeNode is a whole fake kernel: IPVS, the dummy interface, iptables,
// ipsets and sysctls, with the sysctls IPVS provides already present.
type fakeNode struct {
	ipvs   *ipvs.Fake
	addrs  *netif.FakeAddrs
	ipt    *iptables.Fake
	sets   *iptables.FakeSets
	ct     *conntrack.Fake
	sysctl *netif.FakeSysctl
}

func newFakeNode() *fakeNode {
	ipt, sets := iptables.NewFakeKernel()
	seed := map[string]string{sysctlOSRelease: "6.1.0-57-cloud-amd64", sysctlConnReuseMode: "1", sysctlBridgeNF: "1"}
	for _, s := range Sysctls {
		seed[s.Key] = "0"
	}
	return &fakeNode{ipvs: ipvs.NewFake(), addrs: netif.NewFakeAddrs(netif.DefaultLink), ipt: ipt, sets: sets,
		ct: conntrack.NewFake(), sysctl: netif.NewFakeSysctl(seed)}
}

func (n *fakeNode) kernel() Kernel {
	return Kernel{IPVS: n.ipvs, Addrs: n.addrs, IPTables: n.ipt, Sets: n.sets, Conntrack: n.ct}
}

func (n *fakeNode) resetCalls() {
	n.ipvs.ResetCalls()
	n.addrs.ResetCalls()
	n.ipt.ResetCalls()
	n.sets.ResetCalls()
}

// calls is every kernel call (reads and writes) since the last reset.
func (n *fakeNode) calls() (reads, writes int) {
	return n.ipvs.Reads() + n.addrs.Reads() + n.ipt.Reads() + n.sets.Reads(),
		n.ipvs.Writes() + n.addrs.Writes() + n.ipt.Writes() + n.sets.Writes()
}

func (n *fakeNode) callLog() map[string]int {
	all := map[string]int{}
	for _, m := range []map[string]int{n.ipvs.Calls(), n.addrs.Calls(), n.ipt.Calls(), n.sets.Calls()} {
		for k, v := range m {
			all[k] += v
		}
	}
	return all
}

// ipvsDump is the IPVS table plus the VIPs, the way an operator checks a node.
func (n *fakeNode) ipvsDump() string { return n.ipvs.Dump() + n.addrs.Dump() }

// testOptions is a proxier for node-a with cluster CIDR 10.244.0.0/16.
func testOptions() Options {
	return Options{
		Build: v4Build,
		Rules: RuleConfig{
			Family:        v1.IPv4Protocol,
			ClusterCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			MasqueradeBit: 14,
		},
	}
}

// newTestProxier sets the fake node up and returns a proxier on it.
func newTestProxier(t testing.TB, n *fakeNode, opts Options) *Proxier {
	t.Helper()
	if err := Setup(zap.NewNop(), n.kernel(), n.sysctl, SetupOptions{}); err != nil {
		t.Fatalf("setup: %v", err)
	}
	return New(zap.NewNop(), n.kernel(), opts)
}

func mustSync(t testing.TB, p *Proxier, full bool) {
	t.Helper()
	if err := p.Sync(full); err != nil {
		t.Fatalf("sync(full=%v): %v", full, err)
	}
}

func checkDump(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n%s\nwant:\n%s", what, got, want)
	}
}

func key(addr string, p ipvs.Protocol, port uint16) ipvs.ServiceKey {
	return ipvs.ServiceKey{Addr: netip.MustParseAddr(addr), Proto: p, Port: port}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// testLogger logs through the test, so a failing test shows what happened.
func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t)
}
