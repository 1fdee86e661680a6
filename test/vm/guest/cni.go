//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/test/fixtures/cni"
)

// Calico's and Weave Net's rules and sets on a node (test/fixtures/cni):
// loaded into a node's namespace before kube-ipvs starts, and read back as
// iptables-save and ipset save print them, to show kube-ipvs leaves them
// as they were.

// CNITables are the tables the fixture has rules in, in the order it
// lists them.
var CNITables = []string{"raw", "mangle", "nat", "filter"}

// cniLine matches a line of theirs: it names a Calico chain, set or
// interface (cali…) or a Weave one (WEAVE…, weave…). No kube-ipvs line
// does.
var cniLine = regexp.MustCompile(`(?i)cali|weave`)

// counters are iptables-save's packet and byte counters.
var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// theirLines keeps the lines of text that are theirs, counters zeroed.
func theirLines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if cniLine.MatchString(l) {
			out = append(out, counters.ReplaceAllString(l, "[0:0]"))
		}
	}
	return out
}

// CNIFixtureRules is the fixture's lines of their own per table, as
// `iptables-save -t TABLE` prints them (CNIRules).
func CNIFixtureRules() map[string][]string {
	rules := map[string][]string{}
	table := ""
	for _, l := range strings.Split(cni.IPTablesSave, "\n") {
		if strings.HasPrefix(l, "*") {
			table = l[1:]
			continue
		}
		rules[table] = append(rules[table], theirLines(l)...)
	}
	return rules
}

// CNIRules is what iptables-save prints of theirs in namespace ns, per
// table: chain declarations and rules, counters zeroed.
func CNIRules(t testing.TB, ns string) map[string][]string {
	t.Helper()
	rules := map[string][]string{}
	for _, table := range CNITables {
		rules[table] = theirLines(Run(t, ns, "iptables-save", "-t", table))
	}
	return rules
}

// CNISets is what `ipset save` prints of their sets in namespace ns.
func CNISets(t testing.TB, ns string) []string {
	t.Helper()
	return theirLines(Run(t, ns, "ipset", "save"))
}

// CNIState is CNIRules and CNISets as one text, for a before-and-after
// comparison.
func CNIState(t testing.TB, ns string) string {
	t.Helper()
	var b strings.Builder
	rules := CNIRules(t, ns)
	for _, table := range CNITables {
		fmt.Fprintf(&b, "*%s\n", table)
		for _, l := range rules[table] {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("ipset save:\n")
	for _, l := range CNISets(t, ns) {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// CNIJumpPackets is the packet counter of the rule in built-in chain
// chain of table that jumps to their chain target, as `iptables-save -c`
// prints it; -1 if there is no such rule.
func CNIJumpPackets(t testing.TB, ns, table, chain, target string) int {
	t.Helper()
	jump := regexp.MustCompile(`^\[(\d+):\d+\] -A ` + regexp.QuoteMeta(chain) + ` .*-j ` + regexp.QuoteMeta(target) + `$`)
	for _, l := range strings.Split(Run(t, ns, "iptables-save", "-c", "-t", table), "\n") {
		if m := jump.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return -1
}

// execInput is Exec with input on the command's stdin.
func execInput(ns, input string, args ...string) (string, error) {
	cmd := command(ns, args...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// brNetfilterLoaded reports whether br_netfilter is loaded: xt_physdev
// (Weave's rules) asks the kernel for it the first time a rule uses it.
func brNetfilterLoaded() bool {
	_, err := os.Stat("/sys/module/br_netfilter")
	return err == nil
}

// LoadCNIRules loads the fixture into namespace ns, `ipset restore` then
// `iptables-restore --noflush`, and fails the test if either refuses it.
// At cleanup it removes all of theirs again (their rules in the built-in
// chains, their chains, their sets), unloads br_netfilter if loading them
// loaded it, and fails the test if anything of theirs is left.
func LoadCNIRules(t testing.TB, ns string) {
	t.Helper()
	hadBrNetfilter := brNetfilterLoaded()
	t.Cleanup(func() {
		removeCNIRules(t, ns)
		if !hadBrNetfilter && brNetfilterLoaded() {
			if out, err := Exec(Node, "modprobe", "-r", "br_netfilter"); err != nil {
				t.Errorf("unloading br_netfilter, which Weave's physdev rules loaded: %v\n%s", err, out)
			}
		}
	})
	if out, err := execInput(ns, cni.IPSetSave, "ipset", "restore"); err != nil {
		t.Fatalf("loading the CNI fixture's ipsets: %v\n%s", err, out)
	}
	if out, err := execInput(ns, cni.IPTablesSave, "iptables-restore", "--noflush"); err != nil {
		t.Fatalf("loading the CNI fixture's iptables: %v\n%s", err, out)
	}
	if !hadBrNetfilter && brNetfilterLoaded() {
		t.Logf("Weave's physdev rules loaded br_netfilter; it is unloaded at cleanup")
	}
}

// removeCNIRules deletes, in namespace ns, every rule of theirs in a
// built-in chain, then flushes and deletes their chains, then destroys their
// sets; it fails the test if anything of theirs is left.
func removeCNIRules(t testing.TB, ns string) {
	for _, table := range CNITables {
		out, _ := Exec(ns, "iptables-save", "-t", table)
		var chains []string
		for _, l := range theirLines(out) {
			switch {
			case strings.HasPrefix(l, ":"):
				chains = append(chains, strings.Fields(l[1:])[0])
			case strings.HasPrefix(l, "-A ") && !cniLine.MatchString(strings.Fields(l)[1]):
				// A rule of theirs in a built-in chain: one transaction each,
				// so that one already gone does not keep the others.
				_, _ = execInput(ns, "*"+table+"\n-D"+strings.TrimPrefix(l, "-A")+"\nCOMMIT\n", "iptables-restore", "--noflush")
			}
		}
		if len(chains) == 0 {
			continue
		}
		// Declaring a chain in iptables-restore --noflush flushes it.
		var flush, del strings.Builder
		for _, c := range chains {
			fmt.Fprintf(&flush, ":%s - [0:0]\n", c)
			fmt.Fprintf(&del, "-X %s\n", c)
		}
		_, _ = execInput(ns, "*"+table+"\n"+flush.String()+"COMMIT\n", "iptables-restore", "--noflush")
		_, _ = execInput(ns, "*"+table+"\n"+del.String()+"COMMIT\n", "iptables-restore", "--noflush")
	}
	out, _ := Exec(ns, "ipset", "list", "-n")
	for _, s := range strings.Fields(out) {
		if cniLine.MatchString(s) {
			_, _ = Exec(ns, "ipset", "destroy", s)
		}
	}
	var left []string
	for _, cmd := range [][]string{{"iptables-save"}, {"ipset", "save"}} {
		out, _ := Exec(ns, cmd...)
		left = append(left, theirLines(out)...)
	}
	if len(left) > 0 {
		t.Errorf("removing the CNI fixture from %q left:\n%s", ns, strings.Join(left, "\n"))
	}
}
