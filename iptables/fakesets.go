package iptables

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// FakeSets is an in-memory ipset table with the error semantics of
// KernelSets. Entries are checked like the kernel checks them (see
// validateEntry): fields that fit the set's type, the set's family, a known
// protocol, a masked net longer than /0. Dump shows it like `ipset save`.
// It is safe for concurrent use.
type FakeSets struct {
	// Hook, when set, is called before each Sets method with the method
	// name and its arguments (set name, then type and family for
	// CreateSet, or the entry as Entry.String); a non-nil error is
	// returned as-is and the call does nothing (it is still counted).
	Hook func(method string, args ...string) error
	// Referenced, when set, tells whether a rule still matches on a set;
	// DestroySet then fails with ErrInUse, as the kernel does.
	// NewFakeKernel sets it to the linked Fake's ReferencesSet.
	Referenced func(name string) bool

	mu    sync.Mutex
	sets  map[string]*fakeSet
	calls callLog
}

type fakeSet struct {
	set     Set
	entries map[Entry]struct{}
}

var _ Sets = (*FakeSets)(nil)

// NewFakeSets returns an empty FakeSets.
func NewFakeSets() *FakeSets {
	return &FakeSets{sets: map[string]*fakeSet{}}
}

// ListSets returns all set names, sorted.
func (s *FakeSets) ListSets() ([]string, error) {
	if err := s.begin("ListSets"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.sets)), nil
}

// CreateSet creates an empty set; ErrExists if the name is taken, whatever
// the existing set's type.
func (s *FakeSets) CreateSet(set Set) error {
	if err := s.begin("CreateSet", set.Name, string(set.Type), familyName(set.IPv6)); err != nil {
		return err
	}
	if err := validateSet(set); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[set.Name]; ok {
		return fmt.Errorf("creating ipset %s: %w", set.Name, ErrExists)
	}
	s.sets[set.Name] = &fakeSet{set: set, entries: map[Entry]struct{}{}}
	return nil
}

// DestroySet removes a set; ErrNotFound if absent, ErrInUse while
// Referenced says a rule matches on it.
func (s *FakeSets) DestroySet(name string) error {
	if err := s.begin("DestroySet", name); err != nil {
		return err
	}
	// Asked before taking s.mu: a linked Fake takes its own lock and then
	// ours when it checks a rule, so holding ours here could deadlock.
	inUse := s.Referenced != nil && s.Referenced(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sets[name]; !ok {
		return fmt.Errorf("destroying ipset %s: %w", name, ErrNotFound)
	}
	if inUse {
		return fmt.Errorf("destroying ipset %s: %w", name, ErrInUse)
	}
	delete(s.sets, name)
	return nil
}

// ListEntries returns the members of a set, sorted (see compareEntries);
// ErrNotFound if absent.
func (s *FakeSets) ListEntries(name string) ([]Entry, error) {
	if err := s.begin("ListEntries", name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fs, ok := s.sets[name]
	if !ok {
		return nil, fmt.Errorf("listing ipset %s: %w", name, ErrNotFound)
	}
	return fs.sorted(), nil
}

// AddEntry adds a member; ErrExists if present, ErrNotFound if the set is
// absent, a plain error if the entry does not fit the set.
func (s *FakeSets) AddEntry(name string, e Entry) error {
	if err := s.begin("AddEntry", name, e.String()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	what := fmt.Sprintf("adding %s to ipset %s", e, name)
	fs, ok := s.sets[name]
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err := validateEntry(fs.set, e); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, ok := fs.entries[e]; ok {
		return fmt.Errorf("%s: %w", what, ErrExists)
	}
	fs.entries[e] = struct{}{}
	return nil
}

// DelEntry removes a member; ErrNotFound if it or the set is absent.
func (s *FakeSets) DelEntry(name string, e Entry) error {
	if err := s.begin("DelEntry", name, e.String()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	what := fmt.Sprintf("deleting %s from ipset %s", e, name)
	fs, ok := s.sets[name]
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if _, ok := fs.entries[e]; !ok {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	delete(fs.entries, e)
	return nil
}

// has reports whether a set exists; used by a linked Fake, not counted.
func (s *FakeSets) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.sets[name]
	return ok
}

func (fs *fakeSet) sorted() []Entry {
	return slices.SortedFunc(maps.Keys(fs.entries), compareEntries)
}

func (s *FakeSets) begin(method string, args ...string) error {
	s.calls.add(method)
	if s.Hook != nil {
		return s.Hook(method, args...)
	}
	return nil
}

// Calls returns how many times each method was called since the last
// ResetCalls, reads included ("ListEntries": 3, "AddEntry": 1).
func (s *FakeSets) Calls() map[string]int { return s.calls.snapshot() }

// ResetCalls forgets the counted calls.
func (s *FakeSets) ResetCalls() { s.calls.reset() }

// Reads returns the number of ListSets and ListEntries calls since the last
// ResetCalls.
func (s *FakeSets) Reads() int { return s.calls.reads() }

// Writes returns the number of other calls since the last ResetCalls.
func (s *FakeSets) Writes() int { return s.calls.writes() }

// Dump renders all sets like `ipset save`: sets by name, each as
// `create NAME TYPE family inet hashsize 1024 maxelem 65536` followed by its
// `add NAME ENTRY` lines, entries sorted (see compareEntries).
func (s *FakeSets) Dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(s.sets)) {
		fs := s.sets[name]
		fmt.Fprintf(&b, "create %s %s family %s hashsize 1024 maxelem 65536\n",
			name, fs.set.Type, familyName(fs.set.IPv6))
		for _, e := range fs.sorted() {
			fmt.Fprintf(&b, "add %s %s\n", name, e)
		}
	}
	return b.String()
}
