package netif

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Verbs of addrError.
const (
	verbAdd = "adding"
	verbDel = "deleting"
)

// addrError wraps err with a short message naming the address as a host
// prefix and the link ("adding address 10.96.0.10/32 to kipvs0: …"). The
// real Dummy and FakeAddrs word their errors the same way.
func addrError(verb string, addr netip.Addr, link string, err error) error {
	if err == nil {
		return nil
	}
	prep := "to"
	if verb == verbDel {
		prep = "from"
	}
	return fmt.Errorf("%s address %s %s %s: %w", verb, hostPrefix(addr), prep, link, err)
}

// hostPrefix renders addr as a /32 or /128 prefix, like `ip addr` shows a
// host address; an invalid addr renders as "invalid IP".
func hostPrefix(addr netip.Addr) string {
	if !addr.IsValid() {
		return addr.String()
	}
	return netip.PrefixFrom(addr, addr.BitLen()).String()
}

// validateAddr rejects what cannot be bound as a host address: the zero
// Addr, zoned addresses and IPv4-mapped IPv6 addresses.
func validateAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	case a.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped IPv6; use the IPv4 form", a)
	}
	return nil
}

// sortedAddrs returns the set's addresses in netip order (IPv4 first).
func sortedAddrs(set map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
