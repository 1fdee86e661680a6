package proxier

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// VirtualServer is one IPVS virtual server with its real servers, sorted by
// address. It is plain data: two equal values program the same kernel state.
type VirtualServer struct {
	Service ipvs.Service
	Dests   []ipvs.Destination
}

// SetEntry is one member of one of kube-ipvs' ipsets.
type SetEntry struct {
	Set   string
	Entry iptables.Entry
}

// String renders the entry as `ipset add` takes it.
func (e SetEntry) String() string { return e.Set + " " + e.Entry.String() }

// State is what kube-ipvs wants the kernel to hold, or what it found there,
// restricted to what kube-ipvs owns: virtual servers on bound VIPs, the VIPs
// bound on its dummy interface, and the members of its ipsets.
type State struct {
	Servers map[ipvs.ServiceKey]VirtualServer
	Addrs   map[netip.Addr]struct{}
	Entries map[SetEntry]struct{}
}

// NewState returns an empty State.
func NewState() *State {
	return &State{
		Servers: map[ipvs.ServiceKey]VirtualServer{},
		Addrs:   map[netip.Addr]struct{}{},
		Entries: map[SetEntry]struct{}{},
	}
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

// Scope names the parts of a State a plan looks at. A nil *Scope means all.
type Scope struct {
	Servers map[ipvs.ServiceKey]struct{}
	Addrs   map[netip.Addr]struct{}
	Entries map[SetEntry]struct{}
}

// NewScope returns an empty scope.
func NewScope() *Scope {
	return &Scope{
		Servers: map[ipvs.ServiceKey]struct{}{},
		Addrs:   map[netip.Addr]struct{}{},
		Entries: map[SetEntry]struct{}{},
	}
}

// Empty reports whether the scope names nothing.
func (sc *Scope) Empty() bool {
	return len(sc.Servers) == 0 && len(sc.Addrs) == 0 && len(sc.Entries) == 0
}

// AddFragment puts everything a fragment touches into the scope.
func (sc *Scope) AddFragment(f *Fragment) {
	if f == nil {
		return
	}
	for _, vs := range f.Servers {
		sc.Servers[vs.Service.Key] = struct{}{}
		sc.Addrs[vs.Service.Key.Addr] = struct{}{}
	}
	for _, e := range f.Entries {
		sc.Entries[e] = struct{}{}
	}
}

// copyScoped makes dst equal to src on the keys the scope names.
func copyScoped(dst, src *State, sc *Scope) {
	for k := range sc.Servers {
		if vs, ok := src.Servers[k]; ok {
			dst.Servers[k] = vs
		} else {
			delete(dst.Servers, k)
		}
	}
	for a := range sc.Addrs {
		if _, ok := src.Addrs[a]; ok {
			dst.Addrs[a] = struct{}{}
		} else {
			delete(dst.Addrs, a)
		}
	}
	for e := range sc.Entries {
		if _, ok := src.Entries[e]; ok {
			dst.Entries[e] = struct{}{}
		} else {
			delete(dst.Entries, e)
		}
	}
}
