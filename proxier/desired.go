package proxier

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// desired is the desired State kept as the union of per-Service fragments,
// so that replacing one Service's fragment costs work proportional to that
// fragment, not to the cluster.
type desired struct {
	frags     map[types.NamespacedName]*Fragment
	owner     map[ipvs.ServiceKey]types.NamespacedName
	addrRefs  map[netip.Addr]int
	entryRefs map[SetEntry]int
	state     *State
}

func newDesired() *desired {
	return &desired{
		frags:     map[types.NamespacedName]*Fragment{},
		owner:     map[ipvs.ServiceKey]types.NamespacedName{},
		addrRefs:  map[netip.Addr]int{},
		entryRefs: map[SetEntry]int{},
		state:     NewState(),
	}
}

// replace swaps a Service's fragment (nil removes it) and adds to sc every
// key the swap may have changed. A virtual server another Service already
// claims is not taken over; it is reported as a Skip.
func (d *desired) replace(name types.NamespacedName, f *Fragment, sc *Scope) []Skip {
	old := d.frags[name]
	if old.Equal(f) {
		return nil
	}
	sc.AddFragment(old)
	sc.AddFragment(f)
	d.remove(name, old)
	if f == nil || (len(f.Servers) == 0 && len(f.Entries) == 0) {
		delete(d.frags, name)
		return nil
	}
	d.frags[name] = f
	return d.add(name, f)
}

func (d *desired) remove(name types.NamespacedName, f *Fragment) {
	if f == nil {
		return
	}
	for _, vs := range f.Servers {
		k := vs.Service.Key
		if d.owner[k] != name {
			continue
		}
		delete(d.owner, k)
		delete(d.state.Servers, k)
		if d.addrRefs[k.Addr]--; d.addrRefs[k.Addr] == 0 {
			delete(d.addrRefs, k.Addr)
			delete(d.state.Addrs, k.Addr)
		}
	}
	for _, e := range f.Entries {
		if d.entryRefs[e]--; d.entryRefs[e] == 0 {
			delete(d.entryRefs, e)
			delete(d.state.Entries, e)
		}
	}
}

func (d *desired) add(name types.NamespacedName, f *Fragment) []Skip {
	var skips []Skip
	for _, vs := range f.Servers {
		k := vs.Service.Key
		if o, taken := d.owner[k]; taken && o != name {
			skips = append(skips, Skip{Reason: ReasonConflictingVIPAndPort, Detail: k.String() + " is programmed for " + o.String()})
			continue
		}
		d.owner[k] = name
		d.state.Servers[k] = vs
		d.addrRefs[k.Addr]++
		d.state.Addrs[k.Addr] = struct{}{}
	}
	for _, e := range f.Entries {
		d.entryRefs[e]++
		d.state.Entries[e] = struct{}{}
	}
	return skips
}

// rebuilt returns a fresh index from the same fragments, added in name
// order, so that which of two conflicting Services wins does not depend on
// the order events arrived in.
func (d *desired) rebuilt() (*desired, []Skip) {
	n := newDesired()
	var skips []Skip
	names := slices.SortedFunc(maps.Keys(d.frags), func(a, b types.NamespacedName) int {
		return cmp.Compare(a.String(), b.String())
	})
	for _, name := range names {
		n.frags[name] = d.frags[name]
		skips = append(skips, n.add(name, d.frags[name])...)
	}
	return n, skips
}
