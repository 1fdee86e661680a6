package proxier

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

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
	// Replaces is, for OpAddEntry of a member with a mark (SHORT-CIRCUIT),
	// the member of the same key and another mark it replaces, if any:
	// adding sets the new mark in place, like `ipset add -exist`, and the
	// old one is never deleted (that would delete the key). It is nil for
	// every other op: few need it, and an Op is copied often, so it is not
	// carried inline.
	Replaces *SetEntry
	// Owner is the Service the operation is done for (from the Scope);
	// when it fails, that Service's remaining operations wait for a retry
	// and every other Service's go ahead.
	Owner types.NamespacedName
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
		if names := o.Service.Flags.Names(o.Service.Scheduler); len(names) > 0 {
			s += " -b " + strings.Join(names, ",")
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
// the scope names (all keys, attributed to no Service, when scope is nil),
// in apply order, each with the Service the scope attributes its key to. It
// is a pure diff: equal states give no operations, and the same inputs
// always give the same list. Real servers are compared by configuration
// (SameConfig), never by the connection counts the kernel reported.
func Plan(desired, current *State, scope *Scope) []Op {
	var servers []ipvs.ServiceKey
	var addrs []netip.Addr
	var entries []SetEntry
	if scope == nil {
		// Every key of either state, attributed to no Service: the keys
		// are listed without building a Scope (a nil map reads as the
		// zero name).
		scope = &Scope{}
		servers = unionKeys(desired.Servers, current.Servers)
		addrs = unionKeys(desired.Addrs, current.Addrs)
		entries = unionKeys(desired.Entries, current.Entries)
	} else {
		servers = keysOf(scope.Servers)
		addrs = keysOf(scope.Addrs)
		entries = keysOf(scope.Entries)
	}
	wantMark, haveMark := markedByKey(entries, desired), markedByKey(entries, current)
	// Only an address or a member on one side gives an operation: those
	// alone are sorted (at the end of a full resync, none of thousands).
	addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return unchanged(a, desired.Addrs, current.Addrs) })
	entries = slices.DeleteFunc(entries, func(e SetEntry) bool { return unchanged(e, desired.Entries, current.Entries) })
	slices.SortFunc(servers, ipvs.ServiceKey.Compare)
	slices.SortFunc(addrs, netip.Addr.Compare)
	slices.SortFunc(entries, compareEntries)
	diff := func(add func(Op)) {
		for _, k := range servers {
			owner := scope.Servers[k]
			planServer(func(o Op) { o.Owner = owner; add(o) }, k, desired.Servers, current.Servers)
		}
		for _, a := range addrs {
			_, want := desired.Addrs[a]
			_, have := current.Addrs[a]
			switch {
			case want && !have:
				add(Op{Kind: OpBindAddr, Addr: a, Owner: scope.Addrs[a]})
			case have && !want:
				add(Op{Kind: OpUnbindAddr, Addr: a, Owner: scope.Addrs[a]})
			}
		}
		for _, e := range entries {
			_, want := desired.Entries[e]
			_, have := current.Entries[e]
			switch {
			case want && !have:
				add(Op{Kind: OpAddEntry, Entry: e, Replaces: haveMark[e.unmarked()], Owner: scope.Entries[e]})
			case have && !want:
				if _, replaced := wantMark[e.unmarked()]; !replaced {
					add(Op{Kind: OpDelEntry, Entry: e, Owner: scope.Entries[e]})
				}
			}
		}
	}
	// Two passes: count the operations of each kind, then write each into
	// its place. Ops are large; this copies each exactly once.
	var next [OpDelEntry + 1]int
	diff(func(o Op) { next[o.Kind]++ })
	total := 0
	for kind, n := range next {
		next[kind] = total
		total += n
	}
	out := make([]Op, total)
	diff(func(o Op) {
		out[next[o.Kind]] = o
		next[o.Kind]++
	})
	return out
}

// unchanged reports whether k is in both desired and current, or in
// neither: no operation.
func unchanged[K comparable](k K, desired, current map[K]struct{}) bool {
	_, want := desired[k]
	_, have := current[k]
	return want == have
}

// keysOf returns the keys of m, in no order, in a slice of their exact
// size.
func keysOf[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// unionKeys returns the keys of a and b, each once, in no order.
func unionKeys[K comparable, V, W any](a map[K]V, b map[K]W) []K {
	out := make([]K, 0, len(a)+len(b))
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// planServer diffs one virtual server and its real servers. Both lists of
// real servers are sorted by address, so one merge pass finds the
// differences.
func planServer(add func(Op), k ipvs.ServiceKey, desired, current map[ipvs.ServiceKey]VirtualServer) {
	want, wok := desired[k]
	have, hok := current[k]
	switch {
	case !wok && !hok:
		return
	case !wok:
		add(Op{Kind: OpDelService, Service: have.Service})
		return
	case !hok:
		add(Op{Kind: OpAddService, Service: want.Service})
	case want.Service != have.Service:
		add(Op{Kind: OpUpdateService, Service: want.Service})
	}
	ref := ipvs.Service{Key: k}
	w, h := want.Dests, have.Dests
	for len(w) > 0 || len(h) > 0 {
		c := 0
		switch {
		case len(w) == 0:
			c = 1
		case len(h) == 0:
			c = -1
		default:
			c = w[0].Addr.Compare(h[0].Addr)
		}
		switch {
		case c < 0:
			add(Op{Kind: OpAddDest, Service: ref, Dest: w[0]})
			w = w[1:]
		case c > 0:
			add(Op{Kind: OpDelDest, Service: ref, Dest: h[0]})
			h = h[1:]
		default:
			if !w[0].SameConfig(h[0]) {
				add(Op{Kind: OpUpdateDest, Service: ref, Dest: w[0]})
			}
			w, h = w[1:], h[1:]
		}
	}
}

// markedByKey indexes the members with a mark among entries that s holds,
// by their key without the mark.
func markedByKey(entries []SetEntry, s *State) map[SetEntry]*SetEntry {
	var out map[SetEntry]*SetEntry
	for _, e := range entries {
		if e.Mark() == 0 {
			continue
		}
		if _, ok := s.Entries[e]; ok {
			if out == nil {
				out = map[SetEntry]*SetEntry{}
			}
			r := e // its own copy: an op may outlive entries
			out[e.unmarked()] = &r
		}
	}
	return out
}

// compareEntries orders set members by set, then by their fields, the
// way `ipset save` lists them.
func compareEntries(a, b SetEntry) int { return a.compare(b) }
