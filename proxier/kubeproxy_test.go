package proxier

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/test/fixtures/kubeproxy"
)

// kubeProxyLines is every line of a dump that names something of
// kube-proxy's (its chains, sets and jumps are all KUBE-…), in order. None
// of kube-ipvs' names may contain KUBE-, or they would show here.
func kubeProxyLines(dump string) []string {
	var out []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.Contains(l, "KUBE-") {
			out = append(out, l)
		}
	}
	return out
}

func TestKubeProxyRulesSurviveSyncsAndCleanup(t *testing.T) {
	n := newFakeNode()
	loadKubeProxyRules(t, n)
	before := strings.Join(kubeProxyLines(n.ipt.Dump()+n.sets.Dump()), "\n")
	if strings.Count(before, "\n") < 40 {
		t.Fatalf("the fixture did not load:\n%s", before)
	}
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	for i := range 100 {
		// Services come and go between the syncs; every tenth is full.
		name := fmt.Sprintf("s%d", i%7)
		if i%3 == 0 {
			p.OnService(service(ns, name, withClusterIP(fmt.Sprintf("10.96.9.%d", i%7+1))))
		} else {
			p.OnServiceDelete(service(ns, name))
		}
		mustSync(t, p, i%10 == 0)
	}
	if err := Cleanup(n.kernel(), BuildRules(testOptions().Rules), testOptions().Build.Family); err != nil {
		t.Fatal(err)
	}
	after := strings.Join(kubeProxyLines(n.ipt.Dump()+n.sets.Dump()), "\n")
	checkDump(t, "kube-proxy's lines after 100 syncs and a cleanup", after, before)
	if d := n.ipt.Dump() + n.sets.Dump(); strings.Contains(d, Prefix) {
		t.Errorf("cleanup left kube-ipvs' own:\n%s", d)
	}
}

// loadKubeProxyRules puts what kube-proxy's IPVS mode leaves in iptables
// and ipsets (test/fixtures/kubeproxy) into the fake node.
func loadKubeProxyRules(t *testing.T, n *fakeNode) {
	t.Helper()
	if err := n.sets.Load(kubeproxy.IPSetSave); err != nil {
		t.Fatal(err)
	}
	if err := n.ipt.Load(kubeproxy.IPTablesSave); err != nil {
		t.Fatal(err)
	}
}
