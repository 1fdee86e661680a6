package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"

	goiptables "github.com/coreos/go-iptables/iptables"
)

// lockWaitSeconds is how long an iptables command waits for the xtables lock
// (/run/xtables.lock) before failing; the caller retries with backoff rather
// than hanging behind a stuck lock holder.
const lockWaitSeconds = 5

// Kernel is the real iptables of one address family: single commands run
// through go-iptables (`iptables -w 5 …`), chain bodies through
// `iptables-restore --noflush`, whole tables are read with `iptables-save`.
// The three binaries are one backend's (see NewKernelFor); change them only
// before the first call. A Kernel of NewKernelLater sets them at its first
// call: read them through Commands.
type Kernel struct {
	// Command is the iptables binary go-iptables runs: "iptables" or
	// "ip6tables" unless changed.
	Command string
	// RestoreCommand is the binary RestoreChains runs:
	// "iptables-restore" or "ip6tables-restore" unless changed.
	RestoreCommand string
	// SaveCommand is the binary SaveTable runs: "iptables-save" or
	// "ip6tables-save" unless changed.
	SaveCommand string

	ipv6 bool
	// runner runs a binary with stdin and returns its stdout; tests swap it.
	runner func(name string, args []string, stdin []byte) ([]byte, error)

	// later, when set, names the backend the binaries are of, at the first
	// call (NewKernelLater); named guards it.
	later func() Backend
	named sync.Once

	mu  sync.Mutex
	ipt *goiptables.IPTables
}

var (
	_ Interface      = (*Kernel)(nil)
	_ TablesRestorer = (*Kernel)(nil)
)

// NewKernel returns the iptables of IPv4, or of IPv6 when ipv6 is set. It
// runs nothing: the iptables binary is looked up and its version probed on
// the first call that needs it.
func NewKernel(ipv6 bool) *Kernel {
	return newKernel(commandNames("iptables", ipv6), ipv6)
}

// commandNames returns the names of the three binaries of base ("iptables",
// "iptables-legacy", "iptables-nft") for the family: "ip6tables…" for IPv6,
// and the -save and -restore ones ("iptables-legacy-save").
func commandNames(base string, ipv6 bool) [3]string {
	if ipv6 {
		base = "ip6" + strings.TrimPrefix(base, "ip")
	}
	return [3]string{base, base + "-restore", base + "-save"}
}

// NewKernelLater is NewKernelFor of the backend backend returns, which it
// calls once, at the Kernel's first call, and that first call waits for:
// whatever finds the backend (Detect runs four save commands) runs while
// the caller goes on. A backend other than BackendLegacy and BackendNFT
// ("" when none was found) gives NewKernel's plain names.
func NewKernelLater(ipv6 bool, backend func() Backend) *Kernel {
	k := NewKernel(ipv6)
	k.later = backend
	return k
}

// name sets the binaries of a NewKernelLater Kernel, once; every method
// that runs one calls it first.
func (k *Kernel) name() {
	k.named.Do(func() {
		if k.later == nil {
			return
		}
		if b := k.later(); b == BackendLegacy || b == BackendNFT {
			names := commandNames("iptables-"+string(b), k.ipv6)
			k.Command, k.RestoreCommand, k.SaveCommand = names[0], names[1], names[2]
		}
	})
}

// Commands returns the iptables, iptables-restore and iptables-save
// binaries the Kernel runs, once they are named (NewKernelLater).
func (k *Kernel) Commands() (iptables, restore, save string) {
	k.name()
	return k.Command, k.RestoreCommand, k.SaveCommand
}

// newKernel returns a Kernel running the binaries names (iptables, restore,
// save).
func newKernel(names [3]string, ipv6 bool) *Kernel {
	return &Kernel{Command: names[0], RestoreCommand: names[1], SaveCommand: names[2], ipv6: ipv6, runner: runCommand}
}

// handle returns the go-iptables handle, creating it on first use. A failed
// creation is not cached, so a later call tries again.
func (k *Kernel) handle() (*goiptables.IPTables, error) {
	k.name()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ipt != nil {
		return k.ipt, nil
	}
	proto := goiptables.ProtocolIPv4
	if k.ipv6 {
		proto = goiptables.ProtocolIPv6
	}
	// An empty Command is go-iptables' own choice: "iptables" or "ip6tables".
	ipt, err := goiptables.New(goiptables.IPFamily(proto), goiptables.Timeout(lockWaitSeconds), goiptables.Path(k.Command))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	k.ipt = ipt
	return ipt, nil
}

// ListRules returns the rules of a chain, like `iptables -t TABLE -S CHAIN`
// with the "-A CHAIN" prefix removed and quoted arguments unquoted. The
// kernel shows rules in its canonical form ("-p tcp -m tcp --dport 80"), which
// may differ from how they were written.
func (k *Kernel) ListRules(table, chain string) ([][]string, error) {
	ipt, err := k.handle()
	if err != nil {
		return nil, err
	}
	lines, err := ipt.List(table, chain)
	if err != nil {
		// iptables-nft reports a chain of a table that was never set up as
		// "incompatible" rather than missing; the table's chain list tells.
		if chains, lerr := ipt.ListChains(table); lerr == nil && !slices.Contains(chains, chain) {
			return nil, fmt.Errorf("listing %s/%s: %w", table, chain, ErrNotFound)
		}
		return nil, mapError(fmt.Sprintf("listing %s/%s", table, chain), err)
	}
	rules, err := parseRuleLines(chain, lines)
	if err != nil {
		return nil, fmt.Errorf("listing %s/%s: %w", table, chain, err)
	}
	return rules, nil
}

// SaveTable reads a whole table with one `iptables-save -t TABLE` (see
// parseSaveTable): its chains in the order iptables-save prints them and
// their rules in ListRules' form. iptables-nft-save prints the built-in
// chains of a table never used without creating it; iptables-legacy-save
// loads the table's module (iptable_nat…) when it is missing, as every
// legacy command does. A table neither knows ("Table `x' does not exist",
// "Table does not exist (do you need to insmod?)") is ErrNotFound.
func (k *Kernel) SaveTable(table string) (Table, error) {
	what := "saving " + table
	if table == "" || strings.HasPrefix(table, "-") || strings.ContainsAny(table, " \t\n\r") {
		return Table{}, fmt.Errorf("%s: bad table name %q", what, table)
	}
	k.name()
	out, err := k.runner(k.SaveCommand, []string{"-t", table}, nil)
	if err != nil {
		return Table{}, mapRestoreError(what, err)
	}
	t, err := parseSaveTable(table, out)
	if err != nil {
		return Table{}, fmt.Errorf("%s: %w", what, err)
	}
	return t, nil
}

// SaveTables reads tables with one `iptables-save` of every table (see
// TablesRestorer and parseSaveTables). Unlike SaveTable, it loads no
// module: iptables-legacy-save without -t reads only the tables loaded.
func (k *Kernel) SaveTables(tables ...string) (map[string]Table, error) {
	what := "saving " + strings.Join(tables, ", ")
	k.name()
	out, err := k.runner(k.SaveCommand, nil, nil)
	if err != nil {
		return nil, mapRestoreError(what, err)
	}
	saved, err := parseSaveTables(out, tables)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return saved, nil
}

// RestoreTables makes every write in one `iptables-restore --noflush
// --wait=5` whose input holds a section per table (see TablesRestorer and
// renderRestore): both backends commit each section at its COMMIT, so a
// refused table leaves the ones before it written. The error names the
// table of the line iptables-restore says failed.
func (k *Kernel) RestoreTables(writes []TableWrite) error {
	var input []byte
	var tables []string
	var ends []int // the last line of each table's section
	lines := 0
	for _, w := range writes {
		if err := validateChains(w.Table, w.Chains); err != nil {
			return fmt.Errorf("restoring %s: %w", w.Table, err)
		}
		if err := validateInserts(w.Inserts); err != nil {
			return fmt.Errorf("restoring %s: %w", w.Table, err)
		}
		if len(w.Chains) == 0 && len(w.Inserts) == 0 {
			continue
		}
		section := renderRestore(w.Table, w.Chains, w.Inserts...)
		input = append(input, section...)
		lines += bytes.Count(section, []byte("\n"))
		tables, ends = append(tables, w.Table), append(ends, lines)
	}
	if len(tables) == 0 {
		return nil
	}
	err := k.restore("restoring "+strings.Join(tables, ", "), input)
	if err != nil {
		if line, ok := failedLine(err.Error()); ok {
			if i, _ := slices.BinarySearch(ends, line); i < len(tables) {
				return fmt.Errorf("%s refused: %w", tables[i], err)
			}
		}
	}
	return err
}

// failedLine returns N of iptables-restore's "Error occurred at line: N"
// (both backends print it), if msg holds it.
func failedLine(msg string) (int, bool) {
	_, after, ok := strings.Cut(msg, "Error occurred at line: ")
	if !ok {
		return 0, false
	}
	end := strings.IndexFunc(after, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(after)
	}
	n, err := strconv.Atoi(after[:end])
	return n, err == nil
}

// RestoreChains replaces the bodies of the given chains in one
// `iptables-restore --noflush --wait=5` transaction (see renderRestore):
// either every chain gets its new body or none changes. Other chains, the
// built-in ones included, are not touched. Nothing runs for an empty list.
// A rule jumping to a missing chain or matching a missing set is
// ErrNotFound.
func (k *Kernel) RestoreChains(table string, chains []Chain) error {
	what := "restoring " + table
	if err := validateChains(table, chains); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(chains) == 0 {
		return nil
	}
	return k.restore(what, renderRestore(table, chains))
}

// restore runs `iptables-restore --noflush --wait=5` with input.
func (k *Kernel) restore(what string, input []byte) error {
	k.name()
	args := []string{"--noflush", "--wait=" + strconv.Itoa(lockWaitSeconds)}
	if _, err := k.runner(k.RestoreCommand, args, input); err != nil {
		return mapRestoreError(what, err)
	}
	return nil
}

// EnsureRule inserts spec at the head of a chain unless the chain already
// holds it, like `iptables -C` then `iptables -I CHAIN 1`. ErrNotFound if the
// chain (or the jump target) does not exist.
func (k *Kernel) EnsureRule(table, chain string, spec []string) (bool, error) {
	ipt, err := k.handle()
	if err != nil {
		return false, err
	}
	what := fmt.Sprintf("ensuring rule in %s/%s", table, chain)
	ok, err := ipt.Exists(table, chain, spec...)
	if err != nil {
		return false, mapError(what, err)
	}
	if ok {
		return false, nil
	}
	if err := ipt.Insert(table, chain, 1, spec...); err != nil {
		return false, mapError(what, err)
	}
	return true, nil
}

// DeleteRule removes one rule equal to spec, like `iptables -D CHAIN spec…`;
// ErrNotFound when there is no such rule or chain.
func (k *Kernel) DeleteRule(table, chain string, spec []string) error {
	ipt, err := k.handle()
	if err != nil {
		return err
	}
	if err := ipt.Delete(table, chain, spec...); err != nil {
		return mapError(fmt.Sprintf("deleting rule in %s/%s", table, chain), err)
	}
	return nil
}

// DeleteChain flushes and deletes a user chain in one
// `iptables-restore --noflush` transaction (see renderDeleteChain), like
// `iptables -F CHAIN; iptables -X CHAIN` but atomic: ErrInUse while a rule
// still jumps to it, and then the chain keeps its rules. ErrNotFound if it
// does not exist. Built-in chains are refused. iptables-legacy-restore says
// only "line 3 failed" for a chain in use, so a failure it does not name
// is ErrInUse when the table (read with SaveTable) still jumps to the
// chain.
func (k *Kernel) DeleteChain(table, chain string) error {
	what := fmt.Sprintf("deleting chain %s/%s", table, chain)
	if err := validateChainName(chain); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ipt, err := k.handle()
	if err != nil {
		return err
	}
	ok, err := ipt.ChainExists(table, chain)
	if err != nil {
		return mapError(what, err)
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	err = k.restore(what, renderDeleteChain(table, chain))
	if err == nil || errors.Is(err, ErrInUse) || errors.Is(err, ErrNotFound) {
		return err
	}
	if t, serr := k.SaveTable(table); serr == nil && jumpsTo(t, chain) {
		return fmt.Errorf("%w: %w: a rule still jumps to it", err, ErrInUse)
	}
	return err
}

// jumpsTo reports whether a rule of t jumps (-j) or goes (-g) to chain.
func jumpsTo(t Table, chain string) bool {
	for _, rules := range t.Rules {
		for _, r := range rules {
			if JumpTarget(r) == chain {
				return true
			}
		}
	}
	return false
}

// mapError wraps an iptables failure, adding ErrNotFound when iptables says
// a chain, rule, target or set does not exist, and ErrInUse when a chain is
// still referenced.
func mapError(what string, err error) error {
	var ierr *goiptables.Error
	if !errors.As(err, &ierr) {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := ierr.Error()
	switch {
	case ierr.IsNotExist() || strings.Contains(msg, "doesn't exist"):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case strings.Contains(msg, "Too many links") || strings.Contains(msg, "Device or resource busy"):
		return fmt.Errorf("%s: %w: %w", what, ErrInUse, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// mapRestoreError wraps an iptables-restore failure, adding ErrNotFound or
// ErrInUse when its message says so (see restoreErrors).
func mapRestoreError(what string, err error) error {
	msg := err.Error()
	for _, m := range restoreErrors {
		if strings.Contains(msg, m.text) {
			return fmt.Errorf("%s: %w: %w", what, m.err, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// restoreErrors are what iptables-restore (legacy and nft) prints for a
// missing chain, target or set, and for a chain still referenced.
var restoreErrors = []struct {
	text string
	err  error
}{
	{"No chain/target/match by that name", ErrNotFound},
	{"Couldn't load target", ErrNotFound},
	{"doesn't exist", ErrNotFound},
	{"does not exist", ErrNotFound},
	{"Device or resource busy", ErrInUse},
	{"Too many links", ErrInUse},
}

// runCommand runs name with args, feeding stdin; on failure the error
// carries the command's stderr.
func runCommand(name string, args []string, stdin []byte) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
