package proxier

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// OpKind is a kind of kernel operation. The constants are in apply order:
// set members and VIPs before the virtual servers that need them, real
// servers added before old ones are removed, a VIP unbound only after its
// last virtual server is gone.
type OpKind int

// Operation kinds, in the order Apply runs them.
const (
	OpAddEntry      OpKind = iota // ipset add SET ENTRY
	OpBindAddr                    // ip addr add VIP dev kipvs0
	OpAddService                  // ipvsadm -A
	OpUpdateService               // ipvsadm -E
	OpAddDest                     // ipvsadm -a
	OpUpdateDest                  // ipvsadm -e
	OpDelDest                     // ipvsadm -d
	OpDelService                  // ipvsadm -D
	OpUnbindAddr                  // ip addr del VIP dev kipvs0
	OpDelEntry                    // ipset del SET ENTRY
)

// Op is one kernel operation. Which fields are set depends on Kind.
type Op struct {
	Kind    OpKind
	Service ipvs.Service // for service ops; only Service.Key for real-server ops
	Dest    ipvs.Destination
	Addr    netip.Addr
	Entry   SetEntry
}

// String renders the op as the command an operator would type.
func (o Op) String() string {
	k := o.Service.Key
	dest := func(flag string) string {
		return fmt.Sprintf("ipvsadm %s %s -r %s %s -w %d", flag, k, o.Dest.Addr, o.Dest.Forward.Flag(), o.Dest.Weight)
	}
	svc := func(flag string) string {
		s := fmt.Sprintf("ipvsadm %s %s -s %s", flag, k, o.Service.Scheduler)
		if o.Service.Persistent {
			s += fmt.Sprintf(" -p %d", o.Service.Timeout)
		}
		return s
	}
	switch o.Kind {
	case OpAddEntry:
		return "ipset add " + o.Entry.String()
	case OpBindAddr:
		return "ip addr add " + netip.PrefixFrom(o.Addr, o.Addr.BitLen()).String()
	case OpAddService:
		return svc("-A")
	case OpUpdateService:
		return svc("-E")
	case OpAddDest:
		return dest("-a")
	case OpUpdateDest:
		return dest("-e")
	case OpDelDest:
		return fmt.Sprintf("ipvsadm -d %s -r %s", k, o.Dest.Addr)
	case OpDelService:
		return fmt.Sprintf("ipvsadm -D %s", k)
	case OpUnbindAddr:
		return "ip addr del " + netip.PrefixFrom(o.Addr, o.Addr.BitLen()).String()
	case OpDelEntry:
		return "ipset del " + o.Entry.String()
	}
	return fmt.Sprintf("op-%d", int(o.Kind))
}

// Plan returns the operations that turn current into desired on the keys
// the scope names (all keys when scope is nil), in apply order. It is a
// pure diff: equal states give no operations.
func Plan(desired, current *State, scope *Scope) []Op {
	if scope == nil {
		scope = fullScope(desired, current)
	}
	var ops []Op
	for k := range scope.Servers {
		ops = planServer(ops, k, desired.Servers, current.Servers)
	}
	for a := range scope.Addrs {
		_, want := desired.Addrs[a]
		_, have := current.Addrs[a]
		switch {
		case want && !have:
			ops = append(ops, Op{Kind: OpBindAddr, Addr: a})
		case have && !want:
			ops = append(ops, Op{Kind: OpUnbindAddr, Addr: a})
		}
	}
	for e := range scope.Entries {
		_, want := desired.Entries[e]
		_, have := current.Entries[e]
		switch {
		case want && !have:
			ops = append(ops, Op{Kind: OpAddEntry, Entry: e})
		case have && !want:
			ops = append(ops, Op{Kind: OpDelEntry, Entry: e})
		}
	}
	slices.SortFunc(ops, compareOps)
	return ops
}

// fullScope names every key of either state.
func fullScope(a, b *State) *Scope {
	sc := NewScope()
	for _, s := range []*State{a, b} {
		for k := range s.Servers {
			sc.Servers[k] = struct{}{}
		}
		maps.Copy(sc.Addrs, s.Addrs)
		maps.Copy(sc.Entries, s.Entries)
	}
	return sc
}

// planServer diffs one virtual server and its real servers.
func planServer(ops []Op, k ipvs.ServiceKey, desired, current map[ipvs.ServiceKey]VirtualServer) []Op {
	want, wok := desired[k]
	have, hok := current[k]
	switch {
	case !wok && !hok:
		return ops
	case !wok:
		return append(ops, Op{Kind: OpDelService, Service: have.Service})
	case !hok:
		ops = append(ops, Op{Kind: OpAddService, Service: want.Service})
	case want.Service != have.Service:
		ops = append(ops, Op{Kind: OpUpdateService, Service: want.Service})
	}
	ref := ipvs.Service{Key: k}
	old := make(map[netip.AddrPort]ipvs.Destination, len(have.Dests))
	for _, d := range have.Dests {
		old[d.Addr] = d
	}
	for _, d := range want.Dests {
		o, ok := old[d.Addr]
		switch {
		case !ok:
			ops = append(ops, Op{Kind: OpAddDest, Service: ref, Dest: d})
		case o != d:
			ops = append(ops, Op{Kind: OpUpdateDest, Service: ref, Dest: d})
		}
		delete(old, d.Addr)
	}
	for _, d := range old {
		ops = append(ops, Op{Kind: OpDelDest, Service: ref, Dest: d})
	}
	return ops
}

// compareOps orders by kind, then by what the op is about, so plans are
// deterministic.
func compareOps(a, b Op) int {
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := a.Service.Key.Compare(b.Service.Key); c != 0 {
		return c
	}
	if c := a.Dest.Addr.Compare(b.Dest.Addr); c != 0 {
		return c
	}
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	return cmp.Compare(a.Entry.String(), b.Entry.String())
}
