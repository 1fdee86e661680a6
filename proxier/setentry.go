package proxier

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// SetEntry is one member of one of kube-ipvs' ipsets: a set's name and an
// iptables.Entry, held in 60 bytes without a pointer. kube-ipvs keeps
// members by the ten thousand in several places at once (each part's list,
// the desired state's members and their reference counts, the mirror of
// the kernel), so the garbage collector neither scans them nor chases a
// string or an address zone out of them; as iptables.Entry with the set's
// name beside it, a member took 120 bytes with four pointers.
//
// The set's name and the protocol are numbers in two tables that only
// grow, by one row for each name ever seen (kube-ipvs' own sets, a few
// dozen at most, and the protocols ipset prints). An address's zone is not
// kept (ipset members have none), nor is a prefix that is not valid. Two
// SetEntry values are equal exactly when their sets' names and their
// entries, so kept, are.
type SetEntry struct {
	addr, addr2, net [16]byte
	mark             uint32
	port             uint16
	set              uint16 // row of setNames
	proto            uint8  // row of protoNames
	families         uint8  // 2 bits each for addr, addr2 and net: none, IPv4, IPv6
	bits             uint8  // net's prefix length
}

// NewSetEntry returns member e of set.
func NewSetEntry(set string, e iptables.Entry) SetEntry {
	s := SetEntry{
		mark:  e.Mark,
		port:  e.Port,
		set:   uint16(setNames.row(set, 1<<16)),
		proto: uint8(protoNames.row(e.Proto, 1<<8)),
	}
	var f [3]uint8
	s.addr, f[0] = packAddr(e.Addr)
	s.addr2, f[1] = packAddr(e.Addr2)
	if e.Net.IsValid() {
		s.net, f[2] = packAddr(e.Net.Addr())
		s.bits = uint8(e.Net.Bits())
	}
	s.families = f[0] | f[1]<<2 | f[2]<<4
	return s
}

// Set is the name of the member's set.
func (e SetEntry) Set() string { return setNames.name(int(e.set)) }

// Entry is the member as iptables.Entry.
func (e SetEntry) Entry() iptables.Entry {
	out := iptables.Entry{
		Addr:  unpackAddr(e.addr, e.families&3),
		Addr2: unpackAddr(e.addr2, e.families>>2&3),
		Proto: protoNames.name(int(e.proto)),
		Port:  e.port,
		Mark:  e.mark,
	}
	if a := unpackAddr(e.net, e.families>>4&3); a.IsValid() {
		out.Net = netip.PrefixFrom(a, int(e.bits))
	}
	return out
}

// sameSet reports whether e and o are members of the same set.
func (e SetEntry) sameSet(o SetEntry) bool { return e.set == o.set }

// Mark is the member's skbmark, 0 for none.
func (e SetEntry) Mark() uint32 { return e.mark }

// withMark is e with skbmark m.
func (e SetEntry) withMark(m uint32) SetEntry {
	e.mark = m
	return e
}

// unmarked is e without its mark: the member's identity in the kernel.
func (e SetEntry) unmarked() SetEntry {
	e.mark = 0
	return e
}

// compare orders members by set name, then by their entries' address,
// protocol, port, second address, prefix and mark, as netip orders
// addresses (none, then IPv4, then IPv6) and prefixes (by address, then
// length): the order of comparing their Set and Entry field by field.
func (e SetEntry) compare(o SetEntry) int {
	if e.set != o.set {
		return cmp.Compare(e.Set(), o.Set())
	}
	if c := compareAddr(e.addr, o.addr, e.families&3, o.families&3); c != 0 {
		return c
	}
	if e.proto != o.proto {
		return cmp.Compare(protoNames.name(int(e.proto)), protoNames.name(int(o.proto)))
	}
	return cmp.Or(
		cmp.Compare(e.port, o.port),
		compareAddr(e.addr2, o.addr2, e.families>>2&3, o.families>>2&3),
		compareAddr(e.net, o.net, e.families>>4&3, o.families>>4&3),
		cmp.Compare(e.bits, o.bits),
		cmp.Compare(e.mark, o.mark),
	)
}

// compareAddr compares two packed addresses as netip.Addr.Compare does
// (their families are numbered in netip's order; the bytes past an IPv4
// address are zero).
func compareAddr(a, b [16]byte, fa, fb uint8) int {
	if fa != fb {
		return cmp.Compare(fa, fb)
	}
	return bytes.Compare(a[:], b[:])
}

// String renders the entry as `ipset add` takes it.
func (e SetEntry) String() string { return e.Set() + " " + e.Entry().String() }

const (
	familyNone = iota
	family4
	family6
)

func packAddr(a netip.Addr) ([16]byte, uint8) {
	switch {
	case !a.IsValid():
		return [16]byte{}, familyNone
	case a.Is4():
		var b [16]byte
		v := a.As4()
		copy(b[:], v[:])
		return b, family4
	default:
		return a.As16(), family6
	}
}

func unpackAddr(b [16]byte, family uint8) netip.Addr {
	switch family {
	case family4:
		return netip.AddrFrom4([4]byte(b[:4]))
	case family6:
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// nameTable numbers strings: row 0 is "", every other string gets the next
// row the first time it is seen, and keeps it. Lookups read an immutable
// snapshot without locking; a new name copies it under mu.
type nameTable struct {
	mu   sync.Mutex
	snap atomic.Pointer[nameSnapshot]
}

type nameSnapshot struct {
	rows  map[string]int
	names []string
}

var setNames, protoNames nameTable

func (t *nameTable) row(s string, limit int) int {
	if s == "" {
		return 0
	}
	if snap := t.snap.Load(); snap != nil {
		if r, ok := snap.rows[s]; ok {
			return r
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.snap.Load()
	if old == nil {
		old = &nameSnapshot{rows: map[string]int{"": 0}, names: []string{""}}
	} else if r, ok := old.rows[s]; ok {
		return r // another goroutine added it meanwhile
	}
	if len(old.names) >= limit {
		// kube-ipvs' sets and ipset's protocols are far fewer.
		panic(fmt.Sprintf("proxier: more than %d distinct set names or protocols in set members", limit))
	}
	r := len(old.names)
	next := &nameSnapshot{rows: maps.Clone(old.rows), names: append(old.names[:r:r], s)}
	next.rows[s] = r
	t.snap.Store(next)
	return r
}

func (t *nameTable) name(r int) string {
	if r == 0 {
		return ""
	}
	return t.snap.Load().names[r]
}
