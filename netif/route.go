package netif

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// routeError wraps err with a short message naming the prefix and the link
// ("adding local route 10.96.0.0/16 to kipvs0: …"), worded alike by Dummy
// and FakeAddrs.
func routeError(verb string, p netip.Prefix, link string, err error) error {
	if err == nil {
		return nil
	}
	prep := "to"
	if verb == verbDel {
		prep = "from"
	}
	return fmt.Errorf("%s local route %s %s %s: %w", verb, p, prep, link, err)
}

// validatePrefix rejects what cannot be a local route of Service
// addresses: an invalid or unmasked prefix, a zone, IPv4-mapped IPv6.
func validatePrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	if err := validateAddr(p.Addr()); err != nil {
		return err
	}
	if p.Masked() != p {
		return fmt.Errorf("prefix %s has host bits set; use %s", p, p.Masked())
	}
	return nil
}

// sortedPrefixes returns the set's prefixes by address (IPv4 first), then
// length.
func sortedPrefixes(set map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefixes)
	return out
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
