// Package iptables wraps the two netfilter pieces kube-ipvs programs: iptables
// chains (through github.com/coreos/go-iptables and iptables-restore) and
// ipsets (through netlink). The rules are few and constant; what grows with
// the cluster lives in ipsets. Fake and FakeSets are stateful in-memory
// stand-ins whose Dump reads like `iptables-save` and `ipset save`.
package iptables

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Errors returned (wrapped) by every implementation.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrInUse: the kernel refuses to delete a chain a rule still jumps to,
	// or to destroy an ipset a rule still matches on.
	ErrInUse = errors.New("in use")
)

// Names of the Interface and Sets methods, as the fakes' Calls count them
// and their FailOn and Hook take them.
const (
	MethodListRules     = "ListRules"
	MethodSaveTable     = "SaveTable"
	MethodRestoreChains = "RestoreChains"
	MethodSaveTables    = "SaveTables"
	MethodRestoreTables = "RestoreTables"
	MethodEnsureRule    = "EnsureRule"
	MethodDeleteRule    = "DeleteRule"
	MethodDeleteChain   = "DeleteChain"

	MethodListSets    = "ListSets"
	MethodCreateSet   = "CreateSet"
	MethodDestroySet  = "DestroySet"
	MethodListEntries = "ListEntries"
	MethodAddEntry    = "AddEntry"
	MethodAddEntries  = "AddEntries"
	MethodDelEntry    = "DelEntry"
)

// Tables kube-ipvs writes to. A `-j SET --map-set` rule is only accepted
// in mangle.
const (
	TableNAT    = "nat"
	TableFilter = "filter"
	TableMangle = "mangle"
)

// Chain is a chain and its whole body, each rule as the arguments that
// follow `-A NAME` in iptables-save ("-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN").
type Chain struct {
	Name  string
	Rules [][]string
}

// Table is a whole table as one `iptables-save -t TABLE` prints it.
type Table struct {
	// Chains are every chain of the table, built-in and user, in the order
	// iptables-save prints them: the built-in chains in hook order
	// (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING), then the user
	// chains by name.
	Chains []string
	// Rules maps a chain to its rules as specs (see Chain), in order. It is
	// never nil; a chain without rules has no entry, so Rules[name] is nil
	// for it, as ListRules gives it.
	Rules map[string][][]string
}

// Interface is the iptables of one address family.
type Interface interface {
	// ListRules returns the body of a chain as specs (see Chain); ErrNotFound
	// if the chain does not exist.
	ListRules(table, chain string) ([][]string, error)
	// SaveTable reads a whole table in one `iptables-save -t TABLE` run: every
	// chain (built-in and user) and its rules as specs, like ListRules gives them.
	// A table never used holds its empty built-in chains, as iptables-nft-save
	// -t prints them; output with no table at all is an empty Table, not an
	// error. A table name the kernel does not know is ErrNotFound.
	SaveTable(table string) (Table, error)
	// RestoreChains replaces, in one atomic `iptables-restore --noflush`,
	// the body of each given chain (creating it if missing). Other chains
	// of the table are left alone.
	RestoreChains(table string, chains []Chain) error
	// EnsureRule inserts spec at the head of a chain (like `iptables -I`)
	// unless an identical rule is already in the chain; it reports whether it
	// inserted.
	EnsureRule(table, chain string, spec []string) (bool, error)
	// DeleteRule removes one rule matching spec; ErrNotFound if absent.
	DeleteRule(table, chain string, spec []string) error
	// DeleteChain flushes and deletes a chain; ErrNotFound if absent,
	// ErrInUse while a rule still jumps to it.
	DeleteChain(table, chain string) error
}

// Insert is a rule to insert at the head of a chain, built-in or not.
type Insert struct {
	Chain string
	Spec  []string
}

// TableWrite is what RestoreTables writes to one table, in one
// transaction: the bodies of Chains (created if missing), then each of
// Inserts at the head of its chain, in order (the last ends first, as with
// one `iptables -I CHAIN 1` after another), like `-I CHAIN 1 …` lines in
// `iptables-restore --noflush` input.
type TableWrite struct {
	Table   string
	Chains  []Chain
	Inserts []Insert
}

// TablesRestorer is an Interface that reads several tables in one command
// and writes several in another (Kernel and Fake are): a full sync then
// runs one iptables-save and at most one iptables-restore, not one of
// each per table.
type TablesRestorer interface {
	// SaveTables reads the given tables in one `iptables-save` of every
	// table, each as SaveTable reads it, except that a table the kernel
	// does not hold (iptables-nft-save prints only the tables that exist,
	// iptables-legacy-save only those whose module is loaded) is a Table
	// without chains, not its empty built-in chains: a table never used.
	// The tables not asked for are not looked at, so a table iptables
	// cannot show ("incompatible") fails only when it is asked for. The
	// map has every table asked for.
	SaveTables(tables ...string) (map[string]Table, error)
	// RestoreTables makes the writes in one `iptables-restore --noflush`,
	// one table after the other, each all or nothing: when a table's
	// write fails, the tables before it keep theirs and the ones after it
	// are not written. A failure names the table. Writes with no chain
	// and no insert are left out; nothing runs when all are.
	RestoreTables(writes []TableWrite) error
}

// Tables is the iptables of one family as a full sync uses it: an
// Interface that also reads and writes whole tables in one command each
// (Kernel and Fake are).
type Tables interface {
	Interface
	TablesRestorer
}

// SetType is an ipset type.
type SetType string

// The ipset types kube-ipvs uses.
const (
	HashIP        SetType = "hash:ip"
	HashIPPort    SetType = "hash:ip,port"
	HashIPPortIP  SetType = "hash:ip,port,ip"
	HashIPPortNet SetType = "hash:ip,port,net"
	HashNet       SetType = "hash:net"
	// BitmapPort holds ports of one range (Set.Ports), without an address,
	// a protocol or a family.
	BitmapPort SetType = "bitmap:port"
)

// Set describes an ipset: `ipset create NAME TYPE family inet|inet6`, with
// `skbinfo` when SkbInfo is set; a bitmap:port set is `ipset create NAME
// bitmap:port range FROM-TO`.
type Set struct {
	Name string
	Type SetType
	// IPv6 makes the set of family inet6. It must be false for a
	// bitmap:port set, which has no family.
	IPv6 bool
	// SkbInfo gives every member a packet mark (Entry.Mark), which
	// `-j SET --map-set NAME dst,dst --map-mark` copies to the packet.
	// Only the hash:ip… types take it (not hash:net or bitmap:port).
	SkbInfo bool
	// Ports is the range FROM-TO (both included, FROM <= TO, not 0-0) of
	// a bitmap:port set; zero for every other type.
	Ports [2]uint16
}

// Entry is one member of an ipset. Which fields matter depends on the set's
// type: hash:ip uses Addr; hash:ip,port Addr, Proto and Port; hash:ip,port,ip
// also Addr2; hash:ip,port,net Addr, Proto, Port and Net; hash:net only Net;
// bitmap:port only Port. Mark is the member's packet mark in a SkbInfo set
// (required there, non-zero) and 0 in any other. A member's identity is the
// rest, its key: a set holds one member per key, whatever its mark.
// It is comparable and usable as a map key. The kernel stores a Net masked
// (10.0.0.0/8, never 10.1.2.3/8), so give it masked to compare equal.
//
// The fields are laid out for size (104 bytes, not 112: Port and Mark
// share a word): kube-ipvs holds members by the ten thousand, several
// times over (desired, applied, plans).
type Entry struct {
	Addr  netip.Addr
	Addr2 netip.Addr
	Net   netip.Prefix
	Proto string // "tcp", "udp", "sctp"
	Port  uint16
	// Mark is the skbmark, always with the full mask 0xffffffff
	// (`skbmark 0x2001`).
	Mark uint32
}

// Key returns the entry without its Mark: what identifies it in its set.
func (e Entry) Key() Entry {
	e.Mark = 0
	return e
}

// String renders the entry as `ipset add` takes it and `ipset save` prints
// it ("10.96.0.1,tcp:80", "10.96.0.1,tcp:80,10.0.0.0/8", "10.0.0.0/8",
// "8193" for a bitmap:port member, "10.96.0.1,tcp:80 skbmark 0x2001" with a
// Mark).
func (e Entry) String() string {
	var b strings.Builder
	switch {
	case e.Addr.IsValid():
		b.WriteString(e.Addr.String())
		if e.Proto != "" {
			b.WriteString("," + e.Proto + ":" + strconv.Itoa(int(e.Port)))
		}
		if e.Addr2.IsValid() {
			b.WriteString("," + e.Addr2.String())
		}
		if e.Net.IsValid() {
			b.WriteString("," + e.Net.String())
		}
	case e.Net.IsValid():
		b.WriteString(e.Net.String())
	default:
		b.WriteString(strconv.Itoa(int(e.Port)))
	}
	if e.Mark != 0 {
		b.WriteString(" skbmark 0x" + strconv.FormatUint(uint64(e.Mark), 16))
	}
	return b.String()
}

// Sets is the kernel's ipset table. ListEntries may be called while
// another method runs, from another goroutine: a full sync reads the sets
// in the background.
type Sets interface {
	// ListSets returns the names of all ipsets, ours or not.
	ListSets() ([]string, error)
	// CreateSet creates a set; ErrExists if the name is taken.
	CreateSet(Set) error
	// DestroySet removes a set; ErrNotFound if absent. The kernel refuses
	// while a rule still references it: ErrInUse.
	DestroySet(name string) error
	// ListEntries returns the members of a set, each with its Mark;
	// ErrNotFound if absent.
	ListEntries(name string) ([]Entry, error)
	// AddEntry adds a member; ErrExists if present. In a SkbInfo set it
	// adds the member or replaces the mark of the member with its key (like
	// `ipset -exist add NAME ENTRY skbmark MARK`), and ErrExists never
	// happens.
	AddEntry(name string, e Entry) error
	// DelEntry removes the member with e's key, whatever its mark (e.Mark
	// is ignored); ErrNotFound if absent.
	DelEntry(name string, e Entry) error
}

// EntryAdder is a Sets that adds many members of one set in one request
// (KernelSets and FakeSets are).
type EntryAdder interface {
	// AddEntries adds every entry, like `ipset -exist add` of each: one
	// already there is no error, and in a SkbInfo set it takes the
	// entry's mark. ErrNotFound if the set is absent. On any error the
	// members before the refused one may be added: add them one by one
	// to learn which.
	AddEntries(name string, entries []Entry) error
}
