package iptables

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/test/fixtures/kubeproxy"
)

// The kube-proxy fixture (test/fixtures/kubeproxy) is what kube-proxy's
// IPVS mode leaves in iptables-nft and ipset on a node with a few
// Services; see its README.

// loadKubeProxy returns linked fakes holding the fixture.
func loadKubeProxy(t *testing.T) (*Fake, *FakeSets, string, string) {
	t.Helper()
	rules, sets := kubeproxy.IPTablesSave, kubeproxy.IPSetSave
	f, s := NewFakeKernel()
	if err := s.Load(sets); err != nil {
		t.Fatalf("FakeSets.Load: %v", err)
	}
	if err := f.Load(rules); err != nil {
		t.Fatalf("Fake.Load: %v", err)
	}
	return f, s, rules, sets
}

// saveWithoutCounters is iptables-save text as Fake.Dump prints it: no
// comment lines, no [packets:bytes] counters.
func saveWithoutCounters(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		b.WriteString(strings.Replace(line, " [0:0]", "", 1))
	}
	return b.String()
}

// sortedSave orders `ipset save` text for comparison: sets by name, each
// create line followed by its add lines sorted. The kernel prints sets in
// creation order and members in hash order; Dump sorts both.
func sortedSave(text string) string {
	blocks := map[string][]string{}
	var names []string
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if f[0] == "create" {
			names = append(names, f[1])
		}
		blocks[f[1]] = append(blocks[f[1]], strings.TrimSpace(line))
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		lines := blocks[n]
		slices.Sort(lines[1:])
		b.WriteString(strings.Join(lines, "\n") + "\n")
	}
	return b.String()
}

func TestKubeProxyFixtureLoads(t *testing.T) {
	f, s, rules, sets := loadKubeProxy(t)
	if got, want := f.Dump(), saveWithoutCounters(rules); got != want {
		t.Errorf("Fake.Dump:\n%s\nwant:\n%s", got, want)
	}
	if got, want := s.Dump(), sortedSave(sets); sortedSave(got) != want {
		t.Errorf("FakeSets.Dump:\n%s\nwant, sorted:\n%s", got, want)
	}
	got, err := s.ListEntries("KUBE-CLUSTER-IP")
	want := []Entry{
		{Addr: addr("10.96.0.1"), Proto: "tcp", Port: 443},
		{Addr: addr("10.96.0.10"), Proto: "tcp", Port: 53},
		{Addr: addr("10.96.0.10"), Proto: "udp", Port: 53},
		{Addr: addr("10.96.100.50"), Proto: "tcp", Port: 80},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ListEntries(KUBE-CLUSTER-IP) = %v, %v; want %v", got, err, want)
	}
	got, err = s.ListEntries("KUBE-NODE-PORT-TCP")
	if want := []Entry{{Port: 30080}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ListEntries of the bitmap:port set = %v, %v; want %v", got, err, want)
	}
	// kube-proxy's node-port sets take every port, so an out-of-range
	// port is one of no port range at all.
	if err := s.AddEntry("KUBE-NODE-PORT-TCP", Entry{Port: 30081}); err != nil {
		t.Errorf("AddEntry to the bitmap:port set: %v", err)
	}
}

// TestKubeProxyFixtureSurvives does what kube-ipvs does on a node kube-proxy
// ran on, and wants every kube-proxy chain, rule, set and member to stay.
func TestKubeProxyFixtureSurvives(t *testing.T) {
	f, s, rules, sets := loadKubeProxy(t)
	if err := s.CreateSet(Set{Name: "KIPVS-CLUSTER-IP", Type: HashIPPort}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEntry("KIPVS-CLUSTER-IP", Entry{Addr: addr("10.96.0.10"), Proto: "tcp", Port: 53}); err != nil {
		t.Fatal(err)
	}
	mustRestore(t, f, TableFilter, Chain{Name: "KIPVS-FORWARD", Rules: [][]string{
		{"-m", "set", "--match-set", "KIPVS-CLUSTER-IP", "dst,dst", "-j", "ACCEPT"},
	}})
	jump := []string{"-m", "comment", "--comment", "kube-ipvs forwarding", "-j", "KIPVS-FORWARD"}
	if _, err := f.EnsureRule(TableFilter, "FORWARD", jump); err != nil {
		t.Fatal(err)
	}
	if err := s.DestroySet("KUBE-CLUSTER-IP"); !errors.Is(err, ErrInUse) {
		t.Errorf("DestroySet of a set kube-proxy's rules match: %v, want ErrInUse", err)
	}

	dump := f.Dump()
	for line := range strings.Lines(saveWithoutCounters(rules)) {
		if !strings.Contains(dump, line) {
			t.Errorf("iptables lost %q", strings.TrimSpace(line))
		}
	}
	setDump := s.Dump()
	for line := range strings.Lines(sets) {
		if !strings.Contains(setDump, line) {
			t.Errorf("ipsets lost %q", strings.TrimSpace(line))
		}
	}

	if err := f.DeleteRule(TableFilter, "FORWARD", jump); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteChain(TableFilter, "KIPVS-FORWARD"); err != nil {
		t.Fatal(err)
	}
	if err := s.DestroySet("KIPVS-CLUSTER-IP"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Dump(), saveWithoutCounters(rules); got != want {
		t.Errorf("after cleanup, Fake.Dump:\n%s\nwant:\n%s", got, want)
	}
	if got, want := sortedSave(s.Dump()), sortedSave(sets); got != want {
		t.Errorf("after cleanup, FakeSets.Dump:\n%s\nwant:\n%s", got, want)
	}
}

func TestFakeFailOn(t *testing.T) {
	boom := errors.New("boom")
	f := NewFake()
	mustRestore(t, f, TableNAT, Chain{Name: "KIPVS-A"}, Chain{Name: "KIPVS-B"})
	f.FailOn(MethodRestoreChains, "KIPVS-B", boom)
	f.FailOn(MethodListRules, "", boom)
	hooked := false
	f.Hook = func(string, ...string) error { hooked = true; return nil }
	err := f.RestoreChains(TableNAT, []Chain{{Name: "KIPVS-A", Rules: [][]string{{"-j", "RETURN"}}}, {Name: "KIPVS-B"}})
	if !errors.Is(err, boom) || err.Error() != "restoring nat: boom" {
		t.Errorf("RestoreChains of a failing chain = %v, want the wrapped injected error", err)
	}
	if hooked {
		t.Error("Hook called after an injected failure")
	}
	if err := f.RestoreChains(TableNAT, []Chain{{Name: "KIPVS-A"}}); err != nil {
		t.Errorf("RestoreChains of another chain: %v", err)
	}
	if _, err := f.ListRules(TableNAT, "POSTROUTING"); err == nil || err.Error() != "listing nat/POSTROUTING: boom" {
		t.Errorf("ListRules = %v, want the wrapped injected error", err)
	}
	if got := f.Calls(); got[MethodRestoreChains] != 3 || got[MethodListRules] != 1 {
		t.Errorf("Calls = %v; failed calls must count", got)
	}
	f.FailOn(MethodListRules, "", nil)
	if _, err := f.ListRules(TableNAT, "POSTROUTING"); err != nil {
		t.Errorf("after FailOn(nil): %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("FailOn with a misspelt method did not panic")
		}
	}()
	f.FailOn("ListRule", "", boom)
}
