package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
)

// maxSetName is the longest ipset name the kernel accepts
// (IPSET_MAXNAMELEN - 1).
const maxSetName = 31

// protoNumbers maps the protocol names an Entry uses to IP protocol numbers.
var protoNumbers = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132}

// protoNumber returns the IP protocol number of a name ("tcp" → 6); a
// decimal string is taken as the number itself.
func protoNumber(name string) (uint8, error) {
	if n, ok := protoNumbers[name]; ok {
		return n, nil
	}
	if n, err := strconv.ParseUint(name, 10, 8); err == nil {
		return uint8(n), nil
	}
	return 0, fmt.Errorf("unknown protocol %q", name)
}

// protoName is the inverse of protoNumber: "tcp", "udp", "sctp", or the
// number in decimal.
func protoName(n uint8) string {
	for name, v := range protoNumbers {
		if v == n {
			return name
		}
	}
	return strconv.Itoa(int(n))
}

// familyName is the `ipset create … family` value of a set.
func familyName(ipv6 bool) string {
	if ipv6 {
		return "inet6"
	}
	return "inet"
}

// validateSet checks a set before it is created: a name the kernel takes and
// one of the types kube-ipvs uses.
func validateSet(s Set) error {
	if s.Name == "" || len(s.Name) > maxSetName {
		return fmt.Errorf("name %q must have 1 to %d characters", s.Name, maxSetName)
	}
	if !supportedType(s.Type) {
		return fmt.Errorf("unsupported type %q", s.Type)
	}
	return nil
}

// supportedType reports whether t is one of the types kube-ipvs uses, the
// only ones whose members an Entry can hold.
func supportedType(t SetType) bool {
	switch t {
	case HashIP, HashIPPort, HashIPPortIP, HashIPPortNet, HashNet:
		return true
	}
	return false
}

// validateEntry checks that e carries exactly the fields the set's type uses
// (see Entry), in the set's family, with a known protocol and a masked,
// non-zero-length net — what the kernel would accept and list back equal.
func validateEntry(s Set, e Entry) error {
	var wantAddr, wantPort, wantAddr2, wantNet bool
	switch s.Type {
	case HashIP:
		wantAddr = true
	case HashIPPort:
		wantAddr, wantPort = true, true
	case HashIPPortIP:
		wantAddr, wantPort, wantAddr2 = true, true, true
	case HashIPPortNet:
		wantAddr, wantPort, wantNet = true, true, true
	case HashNet:
		wantNet = true
	default:
		return fmt.Errorf("unsupported type %q", s.Type)
	}
	if e.Addr.IsValid() != wantAddr || e.Addr2.IsValid() != wantAddr2 || e.Net.IsValid() != wantNet {
		return fmt.Errorf("entry %s does not fit type %s", e, s.Type)
	}
	if hasPort := e.Proto != "" || e.Port != 0; hasPort && !wantPort {
		return fmt.Errorf("entry %s: type %s has no port", e, s.Type)
	}
	if wantPort {
		if _, ok := protoNumbers[e.Proto]; !ok {
			return fmt.Errorf("entry %s: protocol %q is not tcp, udp or sctp", e, e.Proto)
		}
	}
	for _, a := range []netip.Addr{e.Addr, e.Addr2, e.Net.Addr()} {
		if a.IsValid() && (a.Is6() != s.IPv6 || a.Is4In6() || a.Zone() != "") {
			return fmt.Errorf("entry %s: address %s is not of family %s", e, a, familyName(s.IPv6))
		}
	}
	if wantNet && (e.Net.Bits() == 0 || e.Net != e.Net.Masked()) {
		return fmt.Errorf("entry %s: net must be masked and longer than /0", e)
	}
	return nil
}

// compareEntries orders entries numerically: Addr, Proto, Port, Addr2, Net.
func compareEntries(a, b Entry) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		if a.Proto < b.Proto {
			return -1
		}
		return 1
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	if c := a.Addr2.Compare(b.Addr2); c != 0 {
		return c
	}
	if c := a.Net.Addr().Compare(b.Net.Addr()); c != 0 {
		return c
	}
	return a.Net.Bits() - b.Net.Bits()
}
