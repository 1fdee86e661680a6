//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/iptables/iptablestest"
)

// The backend tests put a node's rules (a CNI's) in iptables-legacy or in
// iptables-nft, start the agent with the default iptablesBackend "auto"
// and check that it detects that backend as kube-proxy's iptables-wrapper
// would, writes its chains there and nowhere else, and serves a ClusterIP.
// They also run the chains contract against iptables-legacy, which the
// other contract tests (the plain `iptables`, nft here) do not reach.
//
// The VM's /init loads only nft's modules; the legacy tables' modules
// (ip_tables, iptable_nat, …) are in the tree, and loadLegacy loads them for
// a test and unloads them after it, so other tests never see legacy tables.

// legacyModules are the legacy tables kube-ipvs and the tests use, loaded
// in this order and unloaded in the reverse one.
var legacyModules = []string{
	"ip_tables", "iptable_filter", "iptable_nat", "iptable_mangle",
	"ip6_tables", "ip6table_filter", "ip6table_nat", "ip6table_mangle",
}

// loadedModules returns the names in /proc/modules.
func loadedModules(t testing.TB) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	loaded := map[string]bool{}
	for l := range strings.SplitSeq(string(data), "\n") {
		if name, _, ok := strings.Cut(l, " "); ok {
			loaded[name] = true
		}
	}
	return loaded
}

// loadLegacy loads the legacy tables (modprobe fails the test when a module
// is missing from the VM) and, at cleanup, once their chains are gone,
// unloads those it loaded.
func loadLegacy(t testing.TB) {
	t.Helper()
	before := loadedModules(t)
	t.Cleanup(func() {
		loaded := loadedModules(t)
		for _, m := range slices.Backward(legacyModules) {
			if loaded[m] && !before[m] {
				if _, err := Exec(Node, "rmmod", m); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})
	for _, m := range legacyModules {
		Run(t, Node, "modprobe", m)
	}
}

// saveCommands are the save commands of a backend, IPv4 then IPv6.
func saveCommands(b iptables.Backend) []string {
	return []string{"iptables-" + string(b) + "-save", "ip6tables-" + string(b) + "-save"}
}

// otherBackend is the backend that is not b.
func otherBackend(b iptables.Backend) iptables.Backend {
	if b == iptables.BackendLegacy {
		return iptables.BackendNFT
	}
	return iptables.BackendLegacy
}

// saved is one save command's output, failing the test when it fails
// (a missing binary among others).
func saved(t testing.TB, cmd string) string {
	t.Helper()
	return Run(t, Node, cmd)
}

// ruleLine matches the rule lines of a save output.
var ruleLine = regexp.MustCompile(`(?m)^-A .*$`)

// savedChains returns, by table, the chains a save output declares.
func savedChains(out string) map[string][]string {
	chains := map[string][]string{}
	table := ""
	for l := range strings.SplitSeq(out, "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			chains[table] = append(chains[table], name)
		}
	}
	return chains
}

// keepBackendsClean fails the test unless neither backend holds a rule,
// and at cleanup (after the agent's) fails it if a KIPVS- chain is left in
// either, then flushes every chain of both (iptables-nft's tables
// included), deletes the chains that were not there before and fails the
// test if a rule is left.
func keepBackendsClean(t *testing.T) {
	t.Helper()
	before := map[string]map[string][]string{}
	for _, b := range []iptables.Backend{iptables.BackendLegacy, iptables.BackendNFT} {
		for _, cmd := range saveCommands(b) {
			out := saved(t, cmd)
			if rules := ruleLine.FindAllString(out, -1); len(rules) > 0 {
				t.Fatalf("%s holds rules before the test; it needs both backends empty:\n%s", cmd, out)
			}
			before[cmd] = savedChains(out)
		}
	}
	t.Cleanup(func() {
		for cmd, was := range before {
			bin := strings.TrimSuffix(cmd, "-save")
			out, _ := Exec(Node, cmd)
			if strings.Contains(out, "KIPVS-") {
				t.Errorf("kube-ipvs --cleanup left its chains in %s:\n%s", cmd, out)
			}
			for table, chains := range savedChains(out) {
				if _, err := Exec(Node, bin, "-t", table, "-F"); err != nil {
					t.Errorf("cleanup: %v", err)
				}
				for _, c := range chains {
					if !slices.Contains(was[table], c) && !isBuiltinChain(c) {
						if _, err := Exec(Node, bin, "-t", table, "-X", c); err != nil {
							t.Errorf("cleanup: %v", err)
						}
					}
				}
			}
			if out, _ := Exec(Node, cmd); ruleLine.MatchString(out) || strings.Contains(out, "KIPVS-") {
				t.Errorf("cleanup: %s still holds rules or KIPVS- chains:\n%s", cmd, out)
			}
		}
	})
}

func isBuiltinChain(c string) bool {
	return slices.Contains([]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}, c)
}

// cniRules are what a CNI (Flannel, the bridge plugin) puts in the node's
// iptables, in `iptables -t TABLE …` form.
var cniRules = [][]string{
	{"-t", "nat", "-N", "CNI-BT-MASQ"},
	{"-t", "nat", "-A", "POSTROUTING", "-s", ClusterCIDR, "-m", "comment", "--comment", "cni masquerade", "-j", "CNI-BT-MASQ"},
	{"-t", "nat", "-A", "CNI-BT-MASQ", "-d", ClusterCIDR, "-j", "ACCEPT"},
	{"-t", "nat", "-A", "CNI-BT-MASQ", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully"},
	{"-t", "filter", "-A", "FORWARD", "-s", ClusterCIDR, "-m", "comment", "--comment", "cni forward", "-j", "ACCEPT"},
	{"-t", "filter", "-A", "FORWARD", "-d", ClusterCIDR, "-m", "comment", "--comment", "cni forward", "-j", "ACCEPT"},
}

// TestAgentDetectsTheIPTablesBackend runs the ClusterIP scenario once with
// the node's rules in iptables-legacy and once with them in iptables-nft;
// the legacy tables are loaded in both cases, empty in the nft one (so
// iptables-nft warns that they exist, as on many real nodes).
func TestAgentDetectsTheIPTablesBackend(t *testing.T) {
	for _, b := range []iptables.Backend{iptables.BackendLegacy, iptables.BackendNFT} {
		t.Run(string(b), func(t *testing.T) {
			// Cleanups run last first: the agent's (kube-ipvs --cleanup,
			// which detects the same backend while the CNI's rules are
			// still there), then both backends', then the legacy modules.
			loadLegacy(t)
			keepBackendsClean(t)
			for _, r := range cniRules {
				Run(t, Node, append([]string{"iptables-" + string(b)}, r...)...)
			}
			bed := newAgentBed(t)
			bed.web(bed.pods...)
			agent := StartAgent(t, bed.objs)
			out := WaitIPVS(t, VSLine("TCP", webVS(), "rr"), RSLine(rs(bed.pods[0])), RSLine(rs(bed.pods[1])), RSLine(rs(bed.pods[2])))
			t.Logf("ipvsadm -Ln:\n%s", out)

			// (1) The ClusterIP spreads over the pods.
			wantEven(t, CountTCP("client", webVS(), 150), bed.pods, 50)

			// (2) kube-ipvs' chains are in the backend of the node's rules only.
			mine := saved(t, "iptables-"+string(b)+"-save")
			for _, want := range []string{":KIPVS-", "-j KIPVS-", "CNI-BT-MASQ"} {
				if !strings.Contains(mine, want) {
					t.Errorf("iptables-%s-save lacks %q:\n%s", b, want, mine)
				}
			}
			for _, cmd := range saveCommands(otherBackend(b)) {
				if other := saved(t, cmd); strings.Contains(other, "KIPVS-") {
					t.Errorf("%s holds kube-ipvs' chains, which belong in %s:\n%s", cmd, b, other)
				}
			}

			// (3) The agent said which backend it chose, and why.
			logged := regexp.MustCompile(`iptables backend detected\s+\{"backend": "` + string(b) + `", "why": "[^"]*more rules[^"]*"`)
			if line := logged.FindString(agent.Output()); line == "" {
				t.Errorf("the agent did not log %q:\n%s", logged, agent.Output())
			} else {
				t.Logf("agent: %s", line)
			}
		})
	}
}

// TestContractIPTablesLegacy runs the chains contract (iptablestest)
// against iptables-legacy, IPv4 and IPv6, as TestContractIPTables runs it
// against the plain iptables (nft in the VM).
func TestContractIPTablesLegacy(t *testing.T) {
	loadLegacy(t)
	for _, ipv6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", ipv6), func(t *testing.T) {
			save := saveCommands(iptables.BackendLegacy)[0]
			if ipv6 {
				save = saveCommands(iptables.BackendLegacy)[1]
			}
			dumpOnFailure(t, []string{save}, []string{"ipset", "list", "-n"})
			iptablestest.RunChains(t, func(t *testing.T) iptablestest.Kernel {
				k := kernelTables(ipv6)(t)
				k.IPTables = iptables.NewKernelFor(iptables.BackendLegacy, ipv6)
				return k
			})
		})
	}
	// The legacy tables are empty again before they are unloaded.
	for _, cmd := range saveCommands(iptables.BackendLegacy) {
		if out := saved(t, cmd); ruleLine.MatchString(out) || strings.Contains(out, "KIPVS-") {
			t.Errorf("%s after the contract:\n%s", cmd, out)
		}
	}
}
