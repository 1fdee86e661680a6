package iptables

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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

// validateSet checks a set before it is created: a name the kernel takes,
// one of the types kube-ipvs uses, and options that fit the type: SkbInfo
// only on a hash:ip… type, Ports (FROM <= TO, not 0-0) only and always on a
// bitmap:port set, which has no family.
func validateSet(s Set) error {
	if s.Name == "" || len(s.Name) > maxSetName {
		return fmt.Errorf("name %q must have 1 to %d characters", s.Name, maxSetName)
	}
	if !supportedType(s.Type) {
		return fmt.Errorf("unsupported type %q", s.Type)
	}
	if s.SkbInfo && !skbInfoType(s.Type) {
		return fmt.Errorf("type %s does not take skbinfo (only hash:ip, hash:ip,port, hash:ip,port,ip and hash:ip,port,net do)", s.Type)
	}
	if s.Type != BitmapPort {
		if s.Ports != [2]uint16{} {
			return fmt.Errorf("type %s has no port range (Ports %d-%d)", s.Type, s.Ports[0], s.Ports[1])
		}
		return nil
	}
	switch {
	case s.IPv6:
		return fmt.Errorf("type %s has no family: IPv6 must be false", s.Type)
	case s.Ports == [2]uint16{}:
		return fmt.Errorf("type %s needs a port range (Ports)", s.Type)
	case s.Ports[0] > s.Ports[1]:
		return fmt.Errorf("port range %d-%d is reversed", s.Ports[0], s.Ports[1])
	}
	return nil
}

// supportedType reports whether t is one of the types kube-ipvs uses, the
// only ones whose members an Entry can hold.
func supportedType(t SetType) bool {
	switch t {
	case HashIP, HashIPPort, HashIPPortIP, HashIPPortNet, HashNet, BitmapPort:
		return true
	}
	return false
}

// skbInfoType reports whether a set of type t may be a SkbInfo set: the
// types for which the kernel revision with skbinfo is known and used.
func skbInfoType(t SetType) bool {
	switch t {
	case HashIP, HashIPPort, HashIPPortIP, HashIPPortNet:
		return true
	}
	return false
}

// validateEntry checks that e carries exactly the fields the set's type uses
// (see Entry), in the set's family, with a known protocol, a masked,
// non-zero-length net, a port in a bitmap:port set's range, and a mark
// exactly when the set is a SkbInfo one — what the kernel would accept and
// list back equal.
func validateEntry(s Set, e Entry) error {
	var wantAddr, wantProto, wantAddr2, wantNet bool
	switch s.Type {
	case HashIP:
		wantAddr = true
	case HashIPPort:
		wantAddr, wantProto = true, true
	case HashIPPortIP:
		wantAddr, wantProto, wantAddr2 = true, true, true
	case HashIPPortNet:
		wantAddr, wantProto, wantNet = true, true, true
	case HashNet:
		wantNet = true
	case BitmapPort:
	default:
		return fmt.Errorf("unsupported type %q", s.Type)
	}
	if e.Addr.IsValid() != wantAddr || e.Addr2.IsValid() != wantAddr2 || e.Net.IsValid() != wantNet {
		return fmt.Errorf("entry %s does not fit type %s", e, s.Type)
	}
	if err := validateMark(s, e); err != nil {
		return err
	}
	if s.Type == BitmapPort {
		if e.Proto != "" {
			return fmt.Errorf("entry %s: type %s takes a port without a protocol", e, s.Type)
		}
		if e.Port < s.Ports[0] || e.Port > s.Ports[1] {
			return fmt.Errorf("entry %s: port outside the set's range %d-%d", e, s.Ports[0], s.Ports[1])
		}
		return nil
	}
	if hasPort := e.Proto != "" || e.Port != 0; hasPort && !wantProto {
		return fmt.Errorf("entry %s: type %s has no port", e, s.Type)
	}
	if wantProto {
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

// validateMark checks that e has a mark if and only if s is a SkbInfo set.
func validateMark(s Set, e Entry) error {
	switch {
	case s.SkbInfo && e.Mark == 0:
		return fmt.Errorf("entry %s: the set has skbinfo, a member needs a non-zero mark", e)
	case !s.SkbInfo && e.Mark != 0:
		return fmt.Errorf("entry %s: the set has no skbinfo, a member cannot have a mark", e)
	}
	return nil
}

// compareEntries orders entries numerically: Addr, Proto, Port, Addr2, Net,
// then Mark (members of one set never differ in Mark alone).
func compareEntries(a, b Entry) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := strings.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	if c := a.Addr2.Compare(b.Addr2); c != 0 {
		return c
	}
	if c := a.Net.Addr().Compare(b.Net.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Net.Bits(), b.Net.Bits()); c != 0 {
		return c
	}
	return cmp.Compare(a.Mark, b.Mark)
}
