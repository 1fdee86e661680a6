package proxier

import (
	"errors"
	"maps"
	"slices"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// kernelRead is the read of the sets' members and of the virtual servers
// (one dump) running in the background: at 5,000 Services it takes half a
// second on a slow node, which no change that comes meanwhile should wait
// for (iptables.Sets and ipvs.Interface let their reads run beside the
// writes). It also builds the maps the new mirror takes, so that what is
// left for the step that ends the read is proportional to what changed
// meanwhile, not to the node. done closes when the other fields hold its
// outcome.
type kernelRead struct {
	done chan struct{}
	// entries are the members of the sets, missing the sets that do not
	// exist.
	entries map[SetEntry]struct{}
	missing []iptables.Set
	// servers are the virtual servers the records (in entries) say are
	// kube-ipvs', without real servers, and keys their keys in order;
	// others are the rest of the address family's, for adopt.
	servers map[ipvs.ServiceKey]VirtualServer
	keys    []ipvs.ServiceKey
	others  []ipvs.Service
	err     error
}

func startRead(k Kernel, family v1.IPFamily, sets []iptables.Set) *kernelRead {
	r := &kernelRead{done: make(chan struct{}), entries: map[SetEntry]struct{}{}}
	go func() {
		defer close(r.done)
		for _, set := range sets {
			entries, err := k.Sets.ListEntries(set.Name)
			switch {
			case errors.Is(err, iptables.ErrNotFound):
				r.missing = append(r.missing, set)
			case err != nil:
				r.err = err
				return
			}
			for _, e := range entries {
				r.entries[NewSetEntry(set.Name, e)] = struct{}{}
			}
		}
		svcs, err := k.IPVS.ListServices()
		if err != nil {
			r.err = err
			return
		}
		r.servers, r.others = recordedServers(svcs, family, r.entries)
		r.keys = slices.SortedFunc(maps.Keys(r.servers), ipvs.ServiceKey.Compare)
	}()
	return r
}

// touched are the set members and virtual servers that incremental syncs
// added, changed or deleted while a full sync's background read ran
// (Proxier.mirror records them).
type touched struct {
	entries map[SetEntry]bool
	servers map[ipvs.ServiceKey]bool
}

func newTouched() touched {
	return touched{entries: map[SetEntry]bool{}, servers: map[ipvs.ServiceKey]bool{}}
}

// record notes what done changed.
func (t touched) record(done []Op) {
	for _, o := range done {
		switch o.Kind {
		case OpAddEntry, OpDelEntry:
			t.entries[o.Entry] = true
			if o.Replaces != nil {
				t.entries[*o.Replaces] = true
			}
		case OpAddService, OpUpdateService, OpDelService:
			t.servers[o.Service.Key] = true
		}
	}
}
