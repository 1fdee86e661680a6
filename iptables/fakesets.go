package iptables

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/kube-ipvs/kube-ipvs/internal/fakecall"
)

// FakeSets is an in-memory ipset table with the error semantics of
// KernelSets. Entries are checked like the kernel checks them (see
// validateEntry): fields that fit the set's type, the set's family, a known
// protocol, a masked net longer than /0, a port in a bitmap:port set's
// range, a mark exactly in a SkbInfo set. In a SkbInfo set AddEntry
// replaces the mark of a member with the same key, as the kernel does with
// `-exist`. Errors are worded like KernelSets'. Dump shows it like `ipset
// save`; Load seeds it from that text, foreign sets included. It is safe
// for concurrent use.
//
// For tests it counts calls (Calls, Reads, Writes) and injects failures
// (FailOn, Hook).
type FakeSets struct {
	// Hook, when set, is called before each Sets method with the method
	// name and its arguments (set name, then type and family for
	// CreateSet, or the entry as Entry.String); a non-nil error is
	// returned as-is and the call does nothing (it is still counted). A
	// failure set with FailOn comes first: the Hook is then not called.
	Hook func(method string, args ...string) error
	// Referenced, when set, tells whether a rule still matches on a set;
	// DestroySet then fails with ErrInUse, as the kernel does.
	// NewFakeKernel sets it to the linked Fake's ReferencesSet.
	Referenced func(name string) bool

	mu   sync.Mutex
	sets map[string]*fakeSet
	rec  *fakecall.Recorder[string]
}

// fakeSet is one set. A set of a type kube-ipvs uses holds its entries; a
// set the fake does not model (another type, or one whose options or
// members it does not understand) keeps its `ipset save` lines as loaded.
type fakeSet struct {
	set Set
	// entries maps each member's key (Entry.Key) to its mark, 0 outside a
	// SkbInfo set.
	entries map[Entry]uint32
	// options is the create line after the type when the set was loaded
	// ("family inet hashsize 1024 maxelem 65536 bucketsize 12 initval
	// 0x…"); "" for a set made by CreateSet.
	options string
	// foreign is the create line and then the add lines of a set that is
	// not modelled; nil for a modelled set.
	foreign []string
}

var _ Sets = (*FakeSets)(nil)

// NewFakeSets returns an empty FakeSets.
func NewFakeSets() *FakeSets {
	return &FakeSets{
		sets: map[string]*fakeSet{},
		rec: fakecall.New[string]("iptables.FakeSets", []string{MethodListSets, MethodListEntries},
			[]string{MethodCreateSet, MethodDestroySet, MethodAddEntry, MethodAddEntries, MethodDelEntry}),
	}
}

// ListSets returns all set names, sorted, foreign sets included.
func (s *FakeSets) ListSets() ([]string, error) {
	if err := s.begin("listing ipsets", MethodListSets, ""); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.sets)), nil
}

// CreateSet creates an empty set; ErrExists if the name is taken, whatever
// the existing set's type.
func (s *FakeSets) CreateSet(set Set) error {
	what := "creating ipset " + set.Name
	if err := s.begin(what, MethodCreateSet, set.Name, set.Name, string(set.Type), familyName(set.IPv6)); err != nil {
		return err
	}
	if err := validateSet(set); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[set.Name]; ok {
		return fmt.Errorf("%s: %w", what, ErrExists)
	}
	s.sets[set.Name] = &fakeSet{set: set, entries: map[Entry]uint32{}}
	return nil
}

// DestroySet removes a set, foreign or not; ErrNotFound if absent, ErrInUse
// while Referenced says a rule matches on it.
func (s *FakeSets) DestroySet(name string) error {
	what := "destroying ipset " + name
	if err := s.begin(what, MethodDestroySet, name, name); err != nil {
		return err
	}
	// Asked before taking s.mu: a linked Fake takes its own lock and then
	// ours when it checks a rule, so holding ours here could deadlock.
	inUse := s.Referenced != nil && s.Referenced(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[name]; !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if inUse {
		return fmt.Errorf("%s: %w", what, ErrInUse)
	}
	delete(s.sets, name)
	return nil
}

// ListEntries returns the members of a set, sorted (see compareEntries);
// ErrNotFound if absent, errors.ErrUnsupported for a foreign set, as
// KernelSets cannot represent its members either.
func (s *FakeSets) ListEntries(name string) ([]Entry, error) {
	what := "listing ipset " + name
	if err := s.begin(what, MethodListEntries, name, name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs, err := s.modelled(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return fs.sorted(), nil
}

// AddEntry adds a member; ErrExists if present, ErrNotFound if the set is
// absent, a plain error if the entry does not fit the set (or the set is
// foreign). In a SkbInfo set a member with e's key gets e's mark instead,
// and ErrExists never happens.
func (s *FakeSets) AddEntry(name string, e Entry) error {
	what := fmt.Sprintf("adding %s to ipset %s", e, name)
	if err := s.begin(what, MethodAddEntry, name, name, e.String()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs, err := s.modelled(name)
	if err == nil {
		err = fs.add(e)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// AddEntries adds entries in one call, each like AddEntry but that a
// member already there is no error; it stops at the first refused one,
// leaving those before it added, as the kernel does. FailOn(MethodAddEntries)
// keys it by the set.
func (s *FakeSets) AddEntries(name string, entries []Entry) error {
	what := fmt.Sprintf("adding %d members to ipset %s", len(entries), name)
	if err := s.begin(what, MethodAddEntries, name, name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs, err := s.modelled(name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, e := range entries {
		if err := fs.add(e); err != nil && !errors.Is(err, ErrExists) {
			return fmt.Errorf("%s: %s: %w", what, e, err)
		}
	}
	return nil
}

// DelEntry removes the member with e's key, whatever its mark; ErrNotFound
// if it or the set is absent.
func (s *FakeSets) DelEntry(name string, e Entry) error {
	what := fmt.Sprintf("deleting %s from ipset %s", e, name)
	if err := s.begin(what, MethodDelEntry, name, name, e.String()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs, err := s.modelled(name)
	if err == nil {
		if _, ok := fs.entries[e.Key()]; !ok {
			err = ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	delete(fs.entries, e.Key())
	return nil
}

// modelled returns a set whose entries the fake holds: ErrNotFound if there
// is none of that name, errors.ErrUnsupported for a foreign set. s.mu must
// be held.
func (s *FakeSets) modelled(name string) (*fakeSet, error) {
	fs, ok := s.sets[name]
	switch {
	case !ok:
		return nil, ErrNotFound
	case fs.foreign != nil:
		return nil, fmt.Errorf("set of type %s: %w", fs.set.Type, errors.ErrUnsupported)
	}
	return fs, nil
}

// add adds a checked entry; ErrExists if present, unless the set is a
// SkbInfo one, whose member of that key then takes e's mark.
func (fs *fakeSet) add(e Entry) error {
	if err := validateEntry(fs.set, e); err != nil {
		return err
	}
	if _, ok := fs.entries[e.Key()]; ok && !fs.set.SkbInfo {
		return ErrExists
	}
	fs.entries[e.Key()] = e.Mark
	return nil
}

// has reports whether a set exists; used by a linked Fake, not counted.
func (s *FakeSets) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sets[name]
	return ok
}

// sorted returns the members with their marks (see compareEntries), nil
// for none, as KernelSets lists an empty set.
func (fs *fakeSet) sorted() []Entry {
	var out []Entry
	for key, mark := range fs.entries {
		key.Mark = mark
		out = append(out, key)
	}
	slices.SortFunc(out, compareEntries)
	return out
}

// begin counts a call and returns its injected failure, wrapped in what as
// KernelSets wraps its errors, or else what Hook returns, as is. It runs
// outside s.mu.
func (s *FakeSets) begin(what, method, set string, args ...string) error {
	if err := s.rec.Begin(method, set); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.Hook != nil {
		return s.Hook(method, args...)
	}
	return nil
}

// FailOn makes every later call of method (MethodAddEntry, …) on the set
// name fail with err, wrapped as KernelSets wraps its errors, before
// anything is looked at or changed. The name "" matches every call and is
// the only one ListSets matches. A nil err removes the failure. Failed
// calls are counted. It panics on a name that is not a Sets method.
func (s *FakeSets) FailOn(method, name string, err error) { s.rec.FailOn(method, name, err) }

// Calls returns how many times each method was called since the last
// ResetCalls, reads and failed calls included ("ListEntries": 3,
// "AddEntry": 1).
func (s *FakeSets) Calls() map[string]int { return s.rec.Calls() }

// ResetCalls forgets the counted calls; state and failures stay.
func (s *FakeSets) ResetCalls() { s.rec.Reset() }

// Reads returns the number of ListSets and ListEntries calls since the last
// ResetCalls.
func (s *FakeSets) Reads() int { return s.rec.Reads() }

// Writes returns the number of other calls since the last ResetCalls.
func (s *FakeSets) Writes() int { return s.rec.Writes() }

// defaultOptions are the create options Dump shows for a hash set made by
// CreateSet: the kernel's defaults, which KernelSets keeps.
const defaultOptions = "hashsize 1024 maxelem 65536"

// createOptions are the options `ipset save` prints for a set KernelSets
// creates (the type revisions it asks for have no bucketsize or initval):
// `family inet hashsize 1024 maxelem 65536`, then ` skbinfo` for a SkbInfo
// set; `range 8192-16383` for a bitmap:port set.
func createOptions(s Set) string {
	if s.Type == BitmapPort {
		return fmt.Sprintf("range %d-%d", s.Ports[0], s.Ports[1])
	}
	opts := "family " + familyName(s.IPv6) + " " + defaultOptions
	if s.SkbInfo {
		opts += " skbinfo"
	}
	return opts
}

// Dump renders all sets like `ipset save`, sets by name. A modelled set is
// `create NAME TYPE OPTIONS` followed by its `add NAME ENTRY` lines, entries
// sorted (see compareEntries) and printed as Entry.String does (`add S
// 10.96.0.1,tcp:80 skbmark 0x2001`, `add P 8193`); OPTIONS are those it was
// loaded with, or those of createOptions for a set made by CreateSet. A
// foreign set is its lines exactly as loaded. It is not counted as a call.
func (s *FakeSets) Dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(s.sets)) {
		fs := s.sets[name]
		if fs.foreign != nil {
			for _, line := range fs.foreign {
				b.WriteString(line + "\n")
			}
			continue
		}
		opts := fs.options
		if opts == "" {
			opts = createOptions(fs.set)
		}
		fmt.Fprintf(&b, "create %s %s %s\n", name, fs.set.Type, opts)
		for _, e := range fs.sorted() {
			fmt.Fprintf(&b, "add %s %s\n", name, e)
		}
	}
	return b.String()
}

// Load adds the sets and members of `ipset save` text, as `ipset restore`
// would: `create NAME TYPE OPTIONS…` and `add NAME MEMBER` lines, blank
// lines and '#' comments. A set of a type kube-ipvs uses is modelled when
// its options are only family, hashsize, maxelem, bucketsize, initval and
// skbinfo (a hash type) or range (bitmap:port), and its members carry no
// options but, in a skbinfo set, `skbmark MARK` with the full mask: its
// members become Entries (checked like AddEntry checks them) and its
// options are kept for Dump. Any other set is foreign: it is listed, can
// be destroyed, and Dump prints its lines back unchanged, but its members
// cannot be listed or changed (errors.ErrUnsupported). Adding to a set
// that already exists is allowed; creating one is ErrExists, as is a
// member given twice. It is all or nothing, not counted, and ignores
// FailOn and Hook.
func (s *FakeSets) Load(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	table := make(map[string]*fakeSet, len(s.sets))
	for name, fs := range s.sets {
		table[name] = fs.clone()
	}
	loaded, err := parseIPSetSave(text, table)
	if err != nil {
		return fmt.Errorf("loading ipsets: %w", err)
	}
	for _, ls := range loaded {
		if err := ls.apply(table); err != nil {
			return fmt.Errorf("loading ipsets: %w", err)
		}
	}
	s.sets = table
	return nil
}

func (fs *fakeSet) clone() *fakeSet {
	c := *fs
	c.entries = maps.Clone(fs.entries)
	c.foreign = slices.Clone(fs.foreign)
	return &c
}
