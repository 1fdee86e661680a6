package proxier

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// ReasonNoMarkLeft: every firewall mark of the short-circuit range is
// taken; the port is served without its short circuit.
const ReasonNoMarkLeft Reason = "no firewall mark left for a short-circuit virtual server"

// marks hands out the node-wide firewall marks of short-circuit virtual
// servers (MarkFirst to MarkLast). BuildService numbers a Service's short
// circuits 1, 2, …; assign swaps each number for a mark the Service keeps
// while it has that short circuit, so rebuilding a Service does not move
// its marks. The marks the kernel held when kube-ipvs started (its
// SHORT-CIRCUIT members) are taken back by the Services that still reach
// the same addresses, so a restart moves nothing either.
type marks struct {
	skip uint32 // mark bits never handed out: the masquerade bit
	held map[types.NamespacedName][]uint32
	used map[uint32]bool
	// seed maps a SHORT-CIRCUIT member (its Mark cleared) to the mark the
	// kernel had for it at start.
	seed map[SetEntry]uint32
	// foreign are the marks of firewall-mark virtual servers someone else
	// made (keepalived, say), seen by a full sync or by a failed add:
	// never handed out.
	foreign map[uint32]bool
}

func newMarks(masqueradeBit int) *marks {
	m := &marks{held: map[types.NamespacedName][]uint32{}, used: map[uint32]bool{}}
	if masqueradeBit >= 0 && masqueradeBit < 32 {
		m.skip = 1 << masqueradeBit
	}
	return m
}

// avoid stops handing mark out, and takes it back from the Service that
// holds it, if any, at that Service's next assign: that Service is
// returned, to be rebuilt.
func (m *marks) avoid(mark uint32) (types.NamespacedName, bool) {
	if m.foreign == nil {
		m.foreign = map[uint32]bool{}
	}
	m.foreign[mark] = true
	if !m.used[mark] {
		return types.NamespacedName{}, false
	}
	for name, held := range m.held {
		if slices.Contains(held, mark) {
			return name, true
		}
	}
	return types.NamespacedName{}, false
}

// seedFrom remembers the marks of the kernel's SHORT-CIRCUIT members.
func (m *marks) seedFrom(set string, entries []iptables.Entry) {
	m.seed = map[SetEntry]uint32{}
	for _, e := range entries {
		if e.Mark >= MarkFirst && e.Mark <= MarkLast {
			m.seed[NewSetEntry(set, e).unmarked()] = e.Mark
		}
	}
}

// assign rewrites f's short-circuit numbers into marks held for name, and
// lets go of the marks name no longer needs. A nil or empty f lets go of
// all. A short circuit no mark is left for is dropped from f, with a Skip.
func (m *marks) assign(name types.NamespacedName, f *Fragment) []Skip {
	n := 0
	if f != nil {
		for _, p := range f.Servers {
			n = max(n, int(p.Service.Key.Mark))
		}
	}
	held := m.held[name]
	for _, mark := range held[min(n, len(held)):] {
		if mark != 0 {
			delete(m.used, mark)
		}
	}
	held = held[:min(n, len(held))]
	if n == 0 {
		delete(m.held, name)
		return nil
	}
	for len(held) < n {
		held = append(held, 0)
	}
	var skips []Skip
	for i := range held {
		if m.foreign[held[i]] {
			delete(m.used, held[i])
			held[i] = 0
		}
		if held[i] == 0 {
			held[i] = m.take(f, uint32(i+1))
		}
		if held[i] == 0 {
			skips = append(skips, Skip{Reason: ReasonNoMarkLeft,
				Detail: fmt.Sprintf("short circuit %d of %d (%d marks)", i+1, n, MarkLast-MarkFirst+1)})
		}
	}
	m.held[name] = held
	rewrite(f, held)
	return skips
}

// take picks a free mark for short circuit i of f: the kernel's mark for
// one of its addresses when it had one, else the lowest free. 0: none left.
func (m *marks) take(f *Fragment, i uint32) uint32 {
	for _, p := range f.Servers {
		for _, e := range p.Entries {
			if e.Mark() != i {
				continue
			}
			if mark, ok := m.seed[e.unmarked()]; ok && m.free(mark) {
				delete(m.seed, e.unmarked())
				m.used[mark] = true
				return mark
			}
		}
	}
	for mark := MarkFirst; mark <= MarkLast; mark++ {
		if m.free(mark) {
			m.used[mark] = true
			return mark
		}
	}
	return 0
}

// free reports whether mark may be handed out now.
func (m *marks) free(mark uint32) bool {
	return !m.used[mark] && !m.foreign[mark] && mark&m.skip == 0
}

// rewrite replaces short-circuit number i+1 with held[i] in f's keys and
// SHORT-CIRCUIT members, dropping those held[i] is 0 for, and sorts f again.
func rewrite(f *Fragment, held []uint32) {
	servers := f.Servers[:0]
	for _, p := range f.Servers {
		if k := p.Service.Key; k.Mark != 0 {
			if held[k.Mark-1] == 0 {
				continue
			}
			p.Service.Key.Mark = held[k.Mark-1]
		}
		entries := p.Entries[:0]
		for _, e := range p.Entries {
			if e.Mark() != 0 {
				if held[e.Mark()-1] == 0 {
					continue
				}
				e = e.withMark(held[e.Mark()-1])
			}
			entries = append(entries, e)
		}
		slices.SortFunc(entries, compareEntries)
		p.Entries = entries
		servers = append(servers, p)
	}
	slices.SortFunc(servers, func(a, b ServerPart) int { return a.Service.Key.Compare(b.Service.Key) })
	f.Servers = servers
}
