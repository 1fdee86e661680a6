package proxier

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// desired is the desired State kept as the union of per-Service fragments,
// so that replacing one Service's fragment costs work proportional to that
// fragment, not to the cluster. On top of the fragments it holds the
// draining real servers (weight 0, kept for their open connections) and
// kube-ipvs' ownership record of every virtual server it wants (SetOwned).
//
// When several Services claim one virtual server (the apiserver prevents
// it for ClusterIPs, but a proxy must not flap), the Service first by
// namespace/name owns it, whatever order the events came in: only the
// owner's virtual server and set members are programmed. When the owner
// lets go, the next claimant takes over at once.
type desired struct {
	family v1.IPFamily
	frags  map[types.NamespacedName]*Fragment
	claims map[ipvs.ServiceKey][]types.NamespacedName // sorted; [0] owns the key
	// addrRefs and entryRefs count the references to an address or a set
	// member of the state beyond its first: being in the state is the
	// first. Nearly all have only one, so these maps stay small instead
	// of holding every key of the state a second time.
	addrRefs  map[netip.Addr]int
	entryRefs map[SetEntry]int
	// drains are the weight-0 real servers of a virtual server that its
	// owner's fragment no longer has, sorted by address.
	drains map[ipvs.ServiceKey][]ipvs.Destination
	state  *State
}

func newDesired(family v1.IPFamily) *desired {
	return &desired{
		family:    family,
		frags:     map[types.NamespacedName]*Fragment{},
		claims:    map[ipvs.ServiceKey][]types.NamespacedName{},
		addrRefs:  map[netip.Addr]int{},
		entryRefs: map[SetEntry]int{},
		drains:    map[ipvs.ServiceKey][]ipvs.Destination{},
		state:     NewState(),
	}
}

func compareNames(a, b types.NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// ownedEntry is the member that records virtual server k as kube-ipvs':
// its address,proto:port in SetOwned, or for a firewall-mark virtual
// server its mark in SetOwnedMark.
func ownedEntry(f v1.IPFamily, k ipvs.ServiceKey) SetEntry {
	if k.Mark != 0 {
		return NewSetEntry(setName(SetOwnedMark, f), iptables.Entry{Port: uint16(k.Mark)})
	}
	return keyEntry(SetOwned, f, k)
}

// replace swaps a Service's fragment (nil removes it) and adds to sc every
// key the swap may have changed. A virtual server another Service also
// claims is reported as a Skip for the one that does not own it.
func (d *desired) replace(name types.NamespacedName, f *Fragment, sc *Scope) []Skip {
	old := d.frags[name]
	if old.Equal(f) {
		return nil
	}
	d.scopeFragment(sc, name, old)
	d.scopeFragment(sc, name, f)
	d.remove(name, old, sc)
	if f.empty() {
		delete(d.frags, name)
		return nil
	}
	d.frags[name] = f
	return d.add(name, f, sc)
}

// remove takes a Service's fragment out; when it owned a virtual server
// another Service also claims, that one takes over, and its set members go
// into sc.
func (d *desired) remove(name types.NamespacedName, f *Fragment, sc *Scope) {
	if f == nil {
		return
	}
	for _, p := range f.Servers {
		k := p.Service.Key
		i, found := slices.BinarySearchFunc(d.claims[k], name, compareNames)
		if !found {
			continue
		}
		d.claims[k] = slices.Delete(d.claims[k], i, i+1)
		if i != 0 {
			continue // a claimant that did not own it: nothing of it was programmed
		}
		d.unref(p.Entries)
		if len(d.claims[k]) > 0 { // the owner let go: the next claimant takes over
			next := d.part(d.claims[k][0], k)
			d.ref(next.Entries)
			for _, e := range next.Entries {
				addOnce(sc.Entries, e, d.claims[k][0])
			}
			d.state.Servers[k] = d.withDrains(next.VirtualServer)
			continue
		}
		delete(d.claims, k)
		delete(d.state.Servers, k)
		delete(d.drains, k)
		d.unref([]SetEntry{ownedEntry(d.family, k)})
	}
	for _, a := range f.Addrs {
		unrefKey(d.state.Addrs, d.addrRefs, a)
	}
	d.unref(f.Entries)
}

// add puts a Service's fragment in; when it takes a virtual server over
// from a Service later by name, that one's set members go into sc.
func (d *desired) add(name types.NamespacedName, f *Fragment, sc *Scope) []Skip {
	var skips []Skip
	for _, p := range f.Servers {
		k := p.Service.Key
		i, _ := slices.BinarySearchFunc(d.claims[k], name, compareNames)
		d.claims[k] = slices.Insert(d.claims[k], i, name)
		switch {
		case len(d.claims[k]) == 1:
			d.ref([]SetEntry{ownedEntry(d.family, k)})
		case i == 0: // takes the key over from the previous owner
			prev := d.part(d.claims[k][1], k)
			d.unref(prev.Entries)
			for _, e := range prev.Entries {
				addOnce(sc.Entries, e, d.claims[k][1])
			}
		}
		if len(d.claims[k]) > 1 {
			owner, loser := d.claims[k][0], name
			if i == 0 {
				loser = d.claims[k][1]
			}
			skips = append(skips, Skip{Reason: ReasonConflictingVIPAndPort, About: loser,
				Detail: k.String() + " is claimed by " + owner.String() + " and " + loser.String() + "; " + owner.String() + " wins"})
		}
		if i == 0 {
			d.ref(p.Entries)
			d.state.Servers[k] = d.withDrains(p.VirtualServer)
		}
	}
	for _, a := range f.Addrs {
		refKey(d.state.Addrs, d.addrRefs, a)
	}
	d.ref(f.Entries)
	return skips
}

func (d *desired) ref(entries []SetEntry) {
	for _, e := range entries {
		refKey(d.state.Entries, d.entryRefs, e)
	}
}

func (d *desired) unref(entries []SetEntry) {
	for _, e := range entries {
		unrefKey(d.state.Entries, d.entryRefs, e)
	}
}

// refKey adds a reference to k: it joins the state, or, when it is there
// already, its count of further references grows.
func refKey[K comparable](state map[K]struct{}, extra map[K]int, k K) {
	if _, ok := state[k]; ok {
		extra[k]++
		return
	}
	state[k] = struct{}{}
}

// unrefKey drops a reference to k: the last one takes it out of the state.
func unrefKey[K comparable](state map[K]struct{}, extra map[K]int, k K) {
	switch n := extra[k]; {
	case n > 1:
		extra[k] = n - 1
	case n == 1:
		delete(extra, k)
	default:
		delete(state, k)
	}
}

// part returns the part for virtual server k of a Service's fragment.
func (d *desired) part(name types.NamespacedName, k ipvs.ServiceKey) ServerPart {
	servers := d.frags[name].Servers
	i, _ := slices.BinarySearchFunc(servers, k, func(p ServerPart, k ipvs.ServiceKey) int {
		return p.Service.Key.Compare(k)
	})
	return servers[i]
}

// wanted returns virtual server k as its owner's fragment has it, without
// draining real servers; false when no Service claims k.
func (d *desired) wanted(k ipvs.ServiceKey) (VirtualServer, bool) {
	c := d.claims[k]
	if len(c) == 0 {
		return VirtualServer{}, false
	}
	return d.part(c[0], k).VirtualServer, true
}

// owner returns the Service that owns virtual server k, if any.
func (d *desired) owner(k ipvs.ServiceKey) (types.NamespacedName, bool) {
	c := d.claims[k]
	if len(c) == 0 {
		return types.NamespacedName{}, false
	}
	return c[0], true
}

// setDrains makes dests (real servers the owner's fragment lacks, any
// order) the draining real servers of k, kept at weight 0, and puts k into
// sc. Without a claimant nothing is kept: the virtual server goes.
func (d *desired) setDrains(k ipvs.ServiceKey, dests []ipvs.Destination, sc *Scope) {
	vs, ok := d.wanted(k)
	if !ok {
		delete(d.drains, k)
		return
	}
	if len(dests) == 0 {
		delete(d.drains, k)
	} else {
		sorted := make([]ipvs.Destination, len(dests))
		for i, dst := range dests {
			sorted[i] = ipvs.Destination{Addr: dst.Addr, Weight: 0, Forward: dst.Forward}
		}
		slices.SortFunc(sorted, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
		d.drains[k] = sorted
	}
	d.state.Servers[k] = d.withDrains(vs)
	owner, _ := d.owner(k)
	addOnce(sc.Servers, k, owner)
}

// withDrains returns vs with k's draining real servers merged in; vs
// itself (its slice shared) when there are none.
func (d *desired) withDrains(vs VirtualServer) VirtualServer {
	drains := d.drains[vs.Service.Key]
	if len(drains) == 0 {
		return vs
	}
	dests := slices.Clone(vs.Dests)
	for _, dr := range drains {
		if !slices.ContainsFunc(vs.Dests, func(x ipvs.Destination) bool { return x.Addr == dr.Addr }) {
			dests = append(dests, dr)
		}
	}
	slices.SortFunc(dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
	vs.Dests = dests
	return vs
}

// endScope is what a full sync's end repairs (see endPass): every key of
// the desired state and of current, but the virtual servers, their
// ownership records and their owners' set members, which the chunks
// repaired. Names are taken in order, so a key two Services share is
// attributed to the first by name; what only current holds is attributed
// to no Service. It is built without what the chunks repaired rather than
// by removing it from a scope of everything, which at thousands of
// Services costs as much as a chunk of planning.
func (d *desired) endScope(current *State) *Scope {
	sc := NewScope()
	for _, name := range slices.SortedFunc(maps.Keys(d.frags), compareNames) {
		f := d.frags[name]
		for _, a := range f.Addrs {
			addOnce(sc.Addrs, a, name)
		}
		for _, e := range f.Entries {
			addOnce(sc.Entries, e, name)
		}
		for _, p := range f.Servers {
			if owner, _ := d.owner(p.Service.Key); owner != name {
				for _, e := range p.Entries {
					addOnce(sc.Entries, e, name)
				}
			}
		}
	}
	var none types.NamespacedName
	for a := range current.Addrs {
		addOnce(sc.Addrs, a, none)
	}
	for e := range current.Entries {
		addOnce(sc.Entries, e, none)
	}
	for k := range d.state.Servers {
		owner, owned := d.owner(k)
		delete(sc.Entries, ownedEntry(d.family, k))
		if owned {
			for _, e := range d.part(owner, k).Entries {
				delete(sc.Entries, e)
			}
		}
	}
	return sc
}

// scopeFragment puts into sc every key a fragment touches, its virtual
// servers' ownership records included, for name.
func (d *desired) scopeFragment(sc *Scope, name types.NamespacedName, f *Fragment) {
	if f == nil {
		return
	}
	sc.AddFragment(name, f)
	for _, p := range f.Servers {
		addOnce(sc.Entries, ownedEntry(d.family, p.Service.Key), name)
	}
}
