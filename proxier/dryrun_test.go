package proxier

import (
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// CleanupPlan lists what Cleanup removes, writing nothing; after Cleanup
// it lists nothing but the interface it cannot see.
func TestCleanupPlanListsWhatCleanupRemoves(t *testing.T) {
	n := newFakeNode()
	if err := n.ipvs.Load(handMade); err != nil {
		t.Fatal(err)
	}
	p := newTestProxier(t, n, testOptions())
	webAndDNS(p)
	mustSync(t, p, true)
	r := BuildRules(testOptions().Rules)
	n.resetCalls()
	plan, err := CleanupPlan(n.kernel(), r, testOptions().Build.Family)
	if err != nil {
		t.Fatal(err)
	}
	if _, writes := n.calls(); writes != 0 {
		t.Errorf("the plan wrote to the kernel: %v", n.callLog())
	}
	text := strings.Join(plan, "\n")
	for _, want := range []string{
		"ipvsadm -D -t 10.96.0.10:80", "ipvsadm -D -u 10.96.0.53:53",
		"ip link del kipvs0 (with its 2 addresses)",
		"iptables -t nat -D PREROUTING ", "iptables -t nat -F KIPVS-SERVICES; iptables -t nat -X KIPVS-SERVICES",
		"ipset destroy KIPVS-OWNED",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("plan lacks %q:\n%s", want, text)
		}
	}
	// Never another's: the hand-made virtual servers are not listed.
	for _, foreign := range []string{"192.168.1.10", "10.96.0.10:443", "172.16.0.1"} {
		if strings.Contains(text, foreign) {
			t.Errorf("plan lists the foreign %s:\n%s", foreign, text)
		}
	}
	chains := 0
	for _, table := range r.Tables() {
		chains += len(r.Chains[table])
	}
	if got, want := len(plan), 2+1+len(r.Jumps)+chains+len(r.Sets); got != want {
		t.Errorf("%d lines, want %d (2 virtual servers, the link, %d jumps, %d chains, %d sets):\n%s", got, want, len(r.Jumps), chains, len(r.Sets), text)
	}
	if err := Cleanup(n.kernel(), r, testOptions().Build.Family); err != nil {
		t.Fatal(err)
	}
	plan, err = CleanupPlan(n.kernel(), r, testOptions().Build.Family)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan, []string{"ip link del kipvs0 (if it exists; it holds no address)"}) {
		t.Errorf("after cleanup the plan is %q", plan)
	}
}

// In dry-run mode an operation is logged once, when it first becomes part
// of the plan, not again at every full sync that finds the kernel as it
// was; a change is logged as it comes.
func TestDryRunLogsEachChangeOnce(t *testing.T) {
	n := newFakeNode()
	core, logs := observer.New(zap.InfoLevel)
	opts := testOptions()
	opts.DryRun = true
	if err := Setup(zap.NewNop(), n.kernel(), n.sysctl, SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	p := New(zap.New(core), n.kernel(), opts)
	webAndDNS(p)
	dryRunOps := func() []string {
		var ops []string
		for _, e := range logs.TakeAll() {
			if e.Message == "dry-run" {
				ops = append(ops, e.ContextMap()["op"].(string))
			}
		}
		return ops
	}
	mustSync(t, p, true)
	first := dryRunOps()
	if len(first) == 0 || !slices.Contains(first, "ipvsadm -A -t 10.96.0.10:80 -s rr") {
		t.Fatalf("the first sync logged %q", first)
	}
	n.resetCalls()
	mustSync(t, p, true)
	mustSync(t, p, false)
	mustSync(t, p, true)
	if again := dryRunOps(); len(again) != 0 {
		t.Errorf("full syncs with nothing changed logged again: %q", again)
	}
	if _, writes := n.calls(); writes != 0 {
		t.Errorf("dry-run wrote to the kernel: %v", n.callLog())
	}
	p.OnServiceDelete(service(ns, "dns"))
	mustSync(t, p, false)
	// The change is planned against the pretend state, and logged.
	if got := dryRunOps(); !slices.Contains(got, "ipvsadm -D -u 10.96.0.53:53") {
		t.Errorf("deleting dns logged %q", got)
	}
	mustSync(t, p, true)
	if got := dryRunOps(); len(got) != 0 {
		t.Errorf("a full sync after dns went logged %q; its operations simply left the plan", got)
	}
	p.OnService(service(ns, "api", withClusterIP("10.96.0.20")))
	mustSync(t, p, false)
	if got := dryRunOps(); !slices.Contains(got, "ipvsadm -A -t 10.96.0.20:80 -s rr") {
		t.Errorf("a new Service logged %q", got)
	}
	mustSync(t, p, true)
	if got := dryRunOps(); len(got) != 0 {
		t.Errorf("the full sync after it logged %q again", got)
	}
}
