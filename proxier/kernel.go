package proxier

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// Kernel bundles the kernel interfaces of one address family. Production
// code passes the real adapters, tests the fakes.
type Kernel struct {
	IPVS      ipvs.Interface
	Addrs     netif.Addrs
	IPTables  iptables.Interface
	Sets      iptables.Sets
	Conntrack conntrack.Interface
}

// ReadState reads back what kube-ipvs owns in the kernel, in bulk: the
// VIPs on the dummy interface, one dump of the virtual servers (keeping
// those on our VIPs; others belong to someone else and are never
// returned), the real servers of each of ours, and the members of the
// given sets. It also returns which of those sets do not exist.
func ReadState(k Kernel, family v1.IPFamily, sets []iptables.Set) (*State, []iptables.Set, error) {
	s := NewState()
	addrs, err := k.Addrs.ListAddrs()
	if err != nil {
		return nil, nil, fmt.Errorf("listing VIPs: %w", err)
	}
	for _, a := range addrsOf(addrs, family) {
		s.Addrs[a] = struct{}{}
	}
	svcs, err := k.IPVS.ListServices()
	if err != nil {
		return nil, nil, fmt.Errorf("listing virtual servers: %w", err)
	}
	for _, svc := range svcs {
		if _, ours := s.Addrs[svc.Key.Addr]; !ours {
			continue
		}
		dests, err := k.IPVS.ListDestinations(svc.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("listing real servers of %s: %w", svc.Key, err)
		}
		slices.SortFunc(dests, func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
		s.Servers[svc.Key] = VirtualServer{Service: svc, Dests: dests}
	}
	var missing []iptables.Set
	for _, set := range sets {
		entries, err := k.Sets.ListEntries(set.Name)
		if errors.Is(err, iptables.ErrNotFound) {
			missing = append(missing, set)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("listing ipset %s: %w", set.Name, err)
		}
		for _, e := range entries {
			s.Entries[SetEntry{Set: set.Name, Entry: e}] = struct{}{}
		}
	}
	return s, missing, nil
}

// EnsureRules makes the kernel hold r: it creates the sets ReadState found
// missing (before any rule refers to them), rewrites (atomically, per
// table) only the chains whose body differs, and inserts missing jumps. It
// reports what it changed, as commands, for logging.
func EnsureRules(k Kernel, r Rules, missingSets []iptables.Set) ([]string, error) {
	var changed []string
	for _, s := range missingSets {
		if err := k.Sets.CreateSet(s); err != nil && !errors.Is(err, iptables.ErrExists) {
			return changed, fmt.Errorf("creating ipset %s: %w", s.Name, err)
		}
		changed = append(changed, fmt.Sprintf("ipset create %s %s", s.Name, s.Type))
	}
	for _, table := range []string{iptables.TableFilter, iptables.TableNAT} {
		stale, err := staleChains(k.IPTables, table, r.Chains[table])
		if err != nil {
			return changed, err
		}
		if len(stale) == 0 {
			continue
		}
		if err := k.IPTables.RestoreChains(table, stale); err != nil {
			return changed, fmt.Errorf("restoring %s chains: %w", table, err)
		}
		for _, c := range stale {
			changed = append(changed, fmt.Sprintf("iptables-restore -t %s %s", table, c.Name))
		}
	}
	for _, j := range r.Jumps {
		have, err := k.IPTables.ListRules(j.Table, j.Chain)
		if err != nil {
			return changed, fmt.Errorf("listing %s %s: %w", j.Table, j.Chain, err)
		}
		if slices.ContainsFunc(have, func(r []string) bool { return slices.Equal(r, j.Spec) }) {
			continue
		}
		if _, err := k.IPTables.EnsureRule(j.Table, j.Chain, j.Spec); err != nil {
			return changed, fmt.Errorf("adding jump from %s %s: %w", j.Table, j.Chain, err)
		}
		changed = append(changed, fmt.Sprintf("iptables -t %s -I %s %s", j.Table, j.Chain, strings.Join(j.Spec, " ")))
	}
	return changed, nil
}

// staleChains returns the chains whose kernel body differs from the wanted one.
func staleChains(ipt iptables.Interface, table string, want []iptables.Chain) ([]iptables.Chain, error) {
	var stale []iptables.Chain
	for _, c := range want {
		have, err := ipt.ListRules(table, c.Name)
		if err != nil && !errors.Is(err, iptables.ErrNotFound) {
			return nil, fmt.Errorf("listing %s %s: %w", table, c.Name, err)
		}
		if err != nil || !slices.EqualFunc(have, c.Rules, slices.Equal) {
			stale = append(stale, c)
		}
	}
	return stale, nil
}

// Apply runs ops in order and stops at the first failure, which it
// returns. Operations whose goal already holds (adding a member that is
// there, removing one that is gone) count as done; a virtual or real server
// that already exists is updated instead. It returns how many ops it ran.
func Apply(k Kernel, ops []Op) (int, error) {
	for i, o := range ops {
		if err := applyOne(k, o); err != nil {
			return i, fmt.Errorf("%s: %w", o, err)
		}
	}
	return len(ops), nil
}

func applyOne(k Kernel, o Op) error {
	switch o.Kind {
	case OpAddEntry:
		return tolerate(k.Sets.AddEntry(o.Entry.Set, o.Entry.Entry), iptables.ErrExists)
	case OpDelEntry:
		return tolerate(k.Sets.DelEntry(o.Entry.Set, o.Entry.Entry), iptables.ErrNotFound)
	case OpBindAddr:
		return tolerate(k.Addrs.AddAddr(o.Addr), netif.ErrExists)
	case OpUnbindAddr:
		return tolerate(k.Addrs.DelAddr(o.Addr), netif.ErrNotFound)
	case OpAddService:
		// The VIP is bound by now, so a virtual server already on it is ours
		// (left from before kipvs0 lost the address): adopt it. Real servers
		// it has beyond the plan go at the next full sync, which sees them.
		err := k.IPVS.AddService(o.Service)
		if errors.Is(err, ipvs.ErrExists) {
			return k.IPVS.UpdateService(o.Service)
		}
		return err
	case OpUpdateService:
		return k.IPVS.UpdateService(o.Service)
	case OpDelService:
		return tolerate(k.IPVS.DeleteService(o.Service.Key), ipvs.ErrNotFound)
	case OpAddDest:
		err := k.IPVS.AddDestination(o.Service.Key, o.Dest)
		if errors.Is(err, ipvs.ErrExists) {
			return k.IPVS.UpdateDestination(o.Service.Key, o.Dest)
		}
		return err
	case OpUpdateDest:
		return k.IPVS.UpdateDestination(o.Service.Key, o.Dest)
	case OpDelDest:
		return tolerate(k.IPVS.DeleteDestination(o.Service.Key, o.Dest.Addr), ipvs.ErrNotFound)
	}
	return fmt.Errorf("unknown operation kind %d", o.Kind)
}

// tolerate treats the given error as success.
func tolerate(err, ok error) error {
	if errors.Is(err, ok) {
		return nil
	}
	return err
}

// addrsOf returns the addresses of a family, for filtering kernel reads.
func addrsOf(addrs []netip.Addr, family v1.IPFamily) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}
