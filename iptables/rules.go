package iptables

import (
	"bytes"
	"fmt"
	"strings"
)

// maxChainName is the longest chain name iptables accepts
// (XT_EXTENSION_MAXNAMELEN - 1).
const maxChainName = 28

// builtinOrder lists the built-in chains in the order iptables-save prints
// them (netfilter hook order).
var builtinOrder = map[string]int{
	"PREROUTING":  0,
	"INPUT":       1,
	"FORWARD":     2,
	"OUTPUT":      3,
	"POSTROUTING": 4,
}

// isBuiltinName reports whether name is one of the built-in chain names.
// kube-ipvs never declares such a chain in restore input (that would flush
// it) nor deletes one.
func isBuiltinName(name string) bool {
	_, ok := builtinOrder[name]
	return ok
}

// validateChains checks what RestoreChains is given before anything is
// written: non-empty names no longer than iptables allows, no built-in chain
// (declaring one with --noflush would flush it), no chain twice, and no
// argument with a line break (it would split the restore input).
func validateChains(table string, chains []Chain) error {
	if table == "" {
		return fmt.Errorf("empty table name")
	}
	seen := make(map[string]bool, len(chains))
	for _, c := range chains {
		if err := validateChainName(c.Name); err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("chain %s given twice", c.Name)
		}
		seen[c.Name] = true
		for _, r := range c.Rules {
			if len(r) == 0 {
				return fmt.Errorf("chain %s: empty rule", c.Name)
			}
			for _, a := range r {
				if strings.ContainsAny(a, "\n\r") {
					return fmt.Errorf("chain %s: argument %q has a line break", c.Name, a)
				}
			}
		}
	}
	return nil
}

// validateChainName rejects names that cannot be a kube-ipvs user chain.
func validateChainName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty chain name")
	case len(name) > maxChainName:
		return fmt.Errorf("chain name %s longer than %d characters", name, maxChainName)
	case isBuiltinName(name):
		return fmt.Errorf("chain %s is built-in", name)
	case strings.ContainsAny(name, " \t\n\r\"'"):
		return fmt.Errorf("chain name %q has a blank or a quote", name)
	}
	return nil
}

// validateInserts checks rules to insert: into a chain of any name
// iptables-restore takes, built-in ones included, each one line.
func validateInserts(inserts []Insert) error {
	for _, in := range inserts {
		if err := validateChainName(in.Chain); err != nil && !isBuiltinName(in.Chain) {
			return fmt.Errorf("insert: %w", err)
		}
		if len(in.Spec) == 0 {
			return fmt.Errorf("insert into %s: empty rule", in.Chain)
		}
		for _, a := range in.Spec {
			if strings.ContainsAny(a, "\n\r") {
				return fmt.Errorf("insert into %s: argument %q has a line break", in.Chain, a)
			}
		}
	}
	return nil
}

// renderRestore renders the `iptables-restore --noflush` input that replaces
// the body of each chain: the table header, one `:NAME - [0:0]` declaration
// per chain (which creates the chain, or flushes it when it exists), every
// rule as `-A NAME args…` in the given order, and COMMIT.
func renderRestore(table string, chains []Chain, inserts ...Insert) []byte {
	var b bytes.Buffer
	b.WriteString("*" + table + "\n")
	for _, c := range chains {
		b.WriteString(":" + c.Name + " - [0:0]\n")
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			b.WriteString(ruleLine(c.Name, r))
			b.WriteByte('\n')
		}
	}
	for _, in := range inserts {
		b.WriteString("-I " + in.Chain + " 1" + strings.TrimPrefix(ruleLine(in.Chain, in.Spec), "-A "+in.Chain))
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// renderDeleteChain renders the `iptables-restore --noflush` input that
// deletes a chain: its declaration flushes it and -X deletes it, in one
// transaction, so a chain that cannot be deleted is not flushed either.
func renderDeleteChain(table, chain string) []byte {
	return []byte("*" + table + "\n:" + chain + " - [0:0]\n-X " + chain + "\nCOMMIT\n")
}

// ruleLine renders one rule as iptables-save does: "-A CHAIN args…", quoting
// where needed.
func ruleLine(chain string, spec []string) string {
	var b strings.Builder
	b.WriteString("-A " + chain)
	for i, a := range spec {
		b.WriteByte(' ')
		b.WriteString(quoteArg(a, i > 0 && spec[i-1] == "--comment"))
	}
	return b.String()
}

// quoteArg quotes one argument so that iptables-restore reads it back
// unchanged. A comment is quoted like iptables-save quotes it (unless it is
// only letters, digits, '_' and '-'); any other argument only when it is
// empty or holds a blank or a double quote. Inside quotes, a double quote,
// a backslash or a single quote is escaped with a backslash.
func quoteArg(a string, comment bool) string {
	var need bool
	if comment {
		need = a == "" || strings.IndexFunc(a, func(r rune) bool { return !isPlainCommentRune(r) }) >= 0
	} else {
		need = a == "" || strings.ContainsAny(a, " \t\"")
	}
	if !need {
		return a
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range a {
		if r == '"' || r == '\\' || r == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func isPlainCommentRune(r rune) bool {
	return r == '_' || r == '-' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}

// splitArgs splits a rule line into arguments the way iptables-restore does:
// blanks separate arguments; a double quote opens a quoted argument in which
// a backslash escapes the next character and the closing quote ends the
// argument (so `""` is an empty argument). Outside quotes a backslash is an
// ordinary character.
func splitArgs(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		has     bool // cur holds an argument, maybe empty ("")
		quoted  bool
		escaped bool
	)
	flush := func() {
		if has {
			args = append(args, cur.String())
		}
		cur.Reset()
		has = false
	}
	for _, r := range line {
		switch {
		case quoted && escaped:
			cur.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case quoted && r == '"':
			quoted = false
			has = true
			flush()
		case quoted:
			cur.WriteRune(r)
		case r == '"':
			quoted = true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			flush()
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	flush()
	return args, nil
}

// parseRuleLines turns `iptables -S CHAIN` output into rule specs: "-A CHAIN
// args…" lines give args…; "-N" and "-P" lines are skipped, and so are
// comment lines, such as iptables-nft's "# Warning: iptables-legacy tables
// present, use iptables-legacy to see them" while legacy tables exist (on
// stderr in iptables 1.8.9, but a comment never is a rule). Counters that
// iptables-nft may append as a trailing "-c PKTS BYTES" are dropped.
func parseRuleLines(chain string, lines []string) ([][]string, error) {
	var rules [][]string
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "-N ") || strings.HasPrefix(line, "-P ") {
			continue
		}
		args, err := splitArgs(line)
		if err != nil {
			return nil, err
		}
		if len(args) < 2 || args[0] != "-A" {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		if args[1] != chain {
			return nil, fmt.Errorf("line %q is not in chain %s", line, chain)
		}
		rules = append(rules, dropCounters(args[2:]))
	}
	return rules, nil
}

// dropCounters removes a trailing "-c PKTS BYTES".
func dropCounters(args []string) []string {
	n := len(args)
	if n >= 3 && args[n-3] == "-c" && isDigits(args[n-2]) && isDigits(args[n-1]) {
		return args[:n-3]
	}
	return args
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// JumpTarget returns the argument of -j/--jump/-g/--goto in spec, or "":
// the chain or target a rule sends its packets to.
func JumpTarget(spec []string) string {
	for i := 0; i+1 < len(spec); i++ {
		switch spec[i] {
		case "-j", "--jump", "-g", "--goto":
			return spec[i+1]
		}
	}
	return ""
}

// matchSets returns the ipset names spec refers to: those it matches on
// (--match-set NAME) and those a SET target adds to, deletes from or maps
// from (--add-set, --del-set, --map-set NAME). The kernel holds a
// reference on each.
func matchSets(spec []string) []string {
	var names []string
	for i := 0; i+1 < len(spec); i++ {
		switch spec[i] {
		case "--match-set", "--set", "--add-set", "--del-set", "--map-set":
			names = append(names, spec[i+1])
		}
	}
	return names
}

// targetExtensions are the iptables targets that are not chains.
var targetExtensions = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "QUEUE": true,
	"REJECT": true, "MASQUERADE": true, "SNAT": true, "DNAT": true,
	"REDIRECT": true, "NETMAP": true, "MARK": true, "CONNMARK": true,
	"LOG": true, "NFLOG": true, "NFQUEUE": true, "NOTRACK": true, "CT": true,
	"TPROXY": true, "TCPMSS": true, "TRACE": true, "CLASSIFY": true,
	"DSCP": true, "TOS": true, "TTL": true, "HL": true, "SET": true,
	"CHECKSUM": true, "AUDIT": true, "SECMARK": true, "CONNSECMARK": true,
	"TEE": true, "SYNPROXY": true, "HMARK": true, "IDLETIMER": true,
}
