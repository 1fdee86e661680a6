package proxier

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// desired is the desired State kept as the union of per-Service fragments,
// so that replacing one Service's fragment costs work proportional to that
// fragment, not to the cluster.
//
// When several Services claim one virtual server (the apiserver prevents
// it for ClusterIPs, but a proxy must not flap), the Service first by
// namespace/name owns it, whatever order the events came in; when the owner
// lets go, the next claimant takes over at once.
type desired struct {
	frags     map[types.NamespacedName]*Fragment
	claims    map[ipvs.ServiceKey][]types.NamespacedName // sorted; [0] owns the key
	addrRefs  map[netip.Addr]int
	entryRefs map[SetEntry]int
	state     *State
}

func newDesired() *desired {
	return &desired{
		frags:     map[types.NamespacedName]*Fragment{},
		claims:    map[ipvs.ServiceKey][]types.NamespacedName{},
		addrRefs:  map[netip.Addr]int{},
		entryRefs: map[SetEntry]int{},
		state:     NewState(),
	}
}

func compareNames(a, b types.NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// replace swaps a Service's fragment (nil removes it) and adds to sc every
// key the swap may have changed. A virtual server another Service also
// claims is reported as a Skip for the one that does not own it.
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
		i, found := slices.BinarySearchFunc(d.claims[k], name, compareNames)
		if !found {
			continue
		}
		d.claims[k] = slices.Delete(d.claims[k], i, i+1)
		if len(d.claims[k]) > 0 {
			if i == 0 { // the owner let go: the next claimant takes over
				d.state.Servers[k] = d.serverOf(d.claims[k][0], k)
			}
			continue
		}
		delete(d.claims, k)
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
		i, _ := slices.BinarySearchFunc(d.claims[k], name, compareNames)
		d.claims[k] = slices.Insert(d.claims[k], i, name)
		if len(d.claims[k]) == 1 {
			d.addrRefs[k.Addr]++
			d.state.Addrs[k.Addr] = struct{}{}
		} else {
			owner, loser := d.claims[k][0], name
			if i == 0 {
				loser = d.claims[k][1]
			}
			skips = append(skips, Skip{Reason: ReasonConflictingVIPAndPort,
				Detail: k.String() + " is claimed by " + owner.String() + " and " + loser.String() + "; " + owner.String() + " wins"})
		}
		if i == 0 {
			d.state.Servers[k] = vs
		}
	}
	for _, e := range f.Entries {
		d.entryRefs[e]++
		d.state.Entries[e] = struct{}{}
	}
	return skips
}

// serverOf returns the virtual server k of a Service's fragment.
func (d *desired) serverOf(name types.NamespacedName, k ipvs.ServiceKey) VirtualServer {
	servers := d.frags[name].Servers
	i, _ := slices.BinarySearchFunc(servers, k, func(vs VirtualServer, k ipvs.ServiceKey) int {
		return vs.Service.Key.Compare(k)
	})
	return servers[i]
}
