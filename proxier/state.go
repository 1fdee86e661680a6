package proxier

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// VirtualServer is one IPVS virtual server with its real servers, sorted by
// address. It is plain data: two equal values program the same kernel state.
type VirtualServer struct {
	Service ipvs.Service
	Dests   []ipvs.Destination
}

// State is what kube-ipvs wants the kernel to hold, or what it found there,
// restricted to what kube-ipvs owns: the virtual servers recorded in its
// SetOwned ipset, the VIPs bound on its dummy interface, and the members of
// its ipsets (SetOwned's included).
type State struct {
	Servers map[ipvs.ServiceKey]VirtualServer
	Addrs   map[netip.Addr]struct{}
	Entries map[SetEntry]struct{}
	// foreignMarks, in a State read from the kernel, are the marks of
	// firewall-mark virtual servers someone else made; no mark of a short
	// circuit may be one of them. Plan does not look at it.
	foreignMarks []uint32
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		Servers: map[ipvs.ServiceKey]VirtualServer{},
		Addrs:   map[netip.Addr]struct{}{},
		Entries: map[SetEntry]struct{}{},
	}
}

// membersAgree reports whether s and o hold the same addresses and set
// members.
func (s *State) membersAgree(o *State) bool {
	if len(s.Addrs) != len(o.Addrs) || len(s.Entries) != len(o.Entries) {
		return false
	}
	for a := range s.Addrs {
		if _, ok := o.Addrs[a]; !ok {
			return false
		}
	}
	for e := range s.Entries {
		if _, ok := o.Entries[e]; !ok {
			return false
		}
	}
	return true
}

// Clone returns a copy that shares no maps with s. Dest slices are shared:
// a VirtualServer is replaced, never modified in place.
func (s *State) Clone() *State {
	return &State{
		Servers: maps.Clone(s.Servers),
		Addrs:   maps.Clone(s.Addrs),
		Entries: maps.Clone(s.Entries),
	}
}

// Dump renders the state like `ipvsadm -Sn`, then `ip addr` lines for the
// VIPs and `ipset add` lines for the set members, all sorted: equal states
// dump to equal text.
func (s *State) Dump() string {
	var b strings.Builder
	keys := slices.SortedFunc(maps.Keys(s.Servers), ipvs.ServiceKey.Compare)
	svcs := make([]ipvs.Service, 0, len(keys))
	dests := make(map[ipvs.ServiceKey][]ipvs.Destination, len(keys))
	for _, k := range keys {
		svcs = append(svcs, s.Servers[k].Service)
		dests[k] = s.Servers[k].Dests
	}
	b.WriteString(ipvs.Format(svcs, dests))
	for _, a := range slices.SortedFunc(maps.Keys(s.Addrs), netip.Addr.Compare) {
		b.WriteString("addr " + a.String() + "\n")
	}
	entries := make([]string, 0, len(s.Entries))
	for e := range s.Entries {
		entries = append(entries, "add "+e.String()+"\n")
	}
	slices.Sort(entries)
	for _, e := range entries {
		b.WriteString(e)
	}
	return b.String()
}

// Scope names the parts of a State a plan looks at, each with the Service
// it is attributed to: the one whose change brought it in, or the one that
// owns it. Failures of the operations on a key are that Service's. The
// zero name means no Service (something left in the kernel that nothing
// claims).
type Scope struct {
	Servers map[ipvs.ServiceKey]types.NamespacedName
	Addrs   map[netip.Addr]types.NamespacedName
	Entries map[SetEntry]types.NamespacedName
}

// NewScope returns an empty scope.
func NewScope() *Scope {
	return &Scope{
		Servers: map[ipvs.ServiceKey]types.NamespacedName{},
		Addrs:   map[netip.Addr]types.NamespacedName{},
		Entries: map[SetEntry]types.NamespacedName{},
	}
}

// Empty reports whether the scope names nothing.
func (sc *Scope) Empty() bool {
	return len(sc.Servers) == 0 && len(sc.Addrs) == 0 && len(sc.Entries) == 0
}

// AddFragment puts everything a fragment touches into the scope, for name
// (keys already in the scope keep their Service).
func (sc *Scope) AddFragment(name types.NamespacedName, f *Fragment) {
	if f == nil {
		return
	}
	for _, p := range f.Servers {
		addOnce(sc.Servers, p.Service.Key, name)
		for _, e := range p.Entries {
			addOnce(sc.Entries, e, name)
		}
	}
	for _, a := range f.Addrs {
		addOnce(sc.Addrs, a, name)
	}
	for _, e := range f.Entries {
		addOnce(sc.Entries, e, name)
	}
}

// Merge adds o's keys to sc (keys already in sc keep their Service).
func (sc *Scope) Merge(o *Scope) {
	for k, n := range o.Servers {
		addOnce(sc.Servers, k, n)
	}
	for a, n := range o.Addrs {
		addOnce(sc.Addrs, a, n)
	}
	for e, n := range o.Entries {
		addOnce(sc.Entries, e, n)
	}
}

// discard is a scope that records nothing (its maps are nil), for work
// whose scope is not needed because a full sync covers every key.
func discard() *Scope { return &Scope{} }

func addOnce[K comparable](m map[K]types.NamespacedName, k K, name types.NamespacedName) {
	if m == nil {
		return // a discard scope
	}
	if _, ok := m[k]; !ok {
		m[k] = name
	}
}

// addState puts every key of s into the scope with no Service, unless it
// is there already.
func (sc *Scope) addState(s *State) {
	var none types.NamespacedName
	for k := range s.Servers {
		addOnce(sc.Servers, k, none)
	}
	for a := range s.Addrs {
		addOnce(sc.Addrs, a, none)
	}
	for e := range s.Entries {
		addOnce(sc.Entries, e, none)
	}
}

// applyAll changes s as ops (in apply order) change the kernel, so that s
// stays an exact mirror of what the kernel holds when it is fed every
// operation that succeeded. Real-server operations are merged once per
// virtual server. Dest slices are never modified in place (a State shares
// them with others): a changed virtual server gets a new slice, or, when
// its real servers come out equal (==, connection counts included) to
// those want (the desired state, may be nil) has for it, want's slice, so
// that the mirror and the desired state do not hold two copies of every
// real server.
func (s *State) applyAll(ops []Op, want *State) {
	dests := map[ipvs.ServiceKey][]*Op{}
	for i := range ops {
		o := &ops[i]
		k := o.Service.Key
		switch o.Kind {
		case OpAddEntry:
			if o.Replaces != nil {
				delete(s.Entries, *o.Replaces)
			}
			s.Entries[o.Entry] = struct{}{}
		case OpDelEntry:
			delete(s.Entries, o.Entry)
		case OpBindAddr:
			s.Addrs[o.Addr] = struct{}{}
		case OpUnbindAddr:
			delete(s.Addrs, o.Addr)
		case OpAddService, OpUpdateService:
			vs := s.Servers[k]
			vs.Service = o.Service
			s.Servers[k] = vs
		case OpDelService:
			delete(s.Servers, k)
			delete(dests, k)
		case OpAddDest, OpUpdateDest, OpDelDest:
			dests[k] = append(dests[k], o)
		}
	}
	for k, ops := range dests {
		vs, ok := s.Servers[k]
		if !ok {
			continue
		}
		var wanted []ipvs.Destination
		if want != nil {
			wanted = want.Servers[k].Dests
		}
		switch {
		case len(vs.Dests) == 0 && addsExactly(ops, wanted):
			vs.Dests = wanted // a new virtual server, as desired: nothing to merge
		default:
			vs.Dests = mergeDests(vs.Dests, ops)
			if len(wanted) > 0 && slices.Equal(vs.Dests, wanted) {
				vs.Dests = wanted
			}
		}
		s.Servers[k] = vs
	}
}

// addsExactly reports whether ops add, one by one in order, exactly the
// real servers dests (not empty, sorted by address, each once): what
// mergeDests would make of them on an empty list.
func addsExactly(ops []*Op, dests []ipvs.Destination) bool {
	if len(dests) == 0 || len(ops) != len(dests) {
		return false
	}
	for i, o := range ops {
		if o.Kind != OpAddDest || o.Dest != dests[i] || (i > 0 && dests[i-1].Addr.Compare(dests[i].Addr) >= 0) {
			return false
		}
	}
	return true
}

// mergeDests returns a new sorted list: dests with ops' real servers added,
// updated or removed.
func mergeDests(dests []ipvs.Destination, ops []*Op) []ipvs.Destination {
	byAddr := make(map[netip.AddrPort]ipvs.Destination, len(dests)+len(ops))
	for _, d := range dests {
		byAddr[d.Addr] = d
	}
	for _, o := range ops {
		if o.Kind == OpDelDest {
			delete(byAddr, o.Dest.Addr)
		} else {
			byAddr[o.Dest.Addr] = o.Dest
		}
	}
	out := slices.Collect(maps.Values(byAddr))
	slices.SortFunc(out, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
	return out
}
