//go:build linux

package iptables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
)

// KernelSets writes its own add, del and list requests rather than
// netlink.IpsetAdd/IpsetList: netlink.IPSetEntry cannot carry a skbmark, its
// list parser drops IPSET_ATTR_SKBMARK (and logs every attribute it does not
// know, bucketsize and initval included), and netlink.IpsetListAll sends
// every member of every set where only the names are wanted. The attribute
// layout is the kernel's (include/uapi/linux/netfilter/ipset/ip_set.h,
// net/netfilter/ipset/ip_set_core.c).

// nfnlSubsysIPSet is NFNL_SUBSYS_IPSET of linux/netfilter/nfnetlink.h.
const nfnlSubsysIPSet = 6

// Flags of IPSET_ATTR_FLAGS in a list request (enum ipset_cmd_flags).
const (
	ipsetFlagListSetname = 1 << 1 // names only
	ipsetFlagListHeader  = 1 << 2 // names and headers, no members
)

// skbmarkFullMask is the mask kube-ipvs gives every mark: the mark replaces
// the packet's whole mark.
const skbmarkFullMask = 0xffffffff

// Type-specific kernel errors (IPSET_ERR_TYPE_SPECIFIC onwards): the same
// number means one thing for bitmap types and another for hash types.
const (
	ipsetErrBitmapRange = nl.IPSET_ERR_TYPE_SPECIFIC // IPSET_ERR_BITMAP_RANGE
	ipsetErrHashFull    = nl.IPSET_ERR_TYPE_SPECIFIC // IPSET_ERR_HASH_FULL
)

// ipsetRequest starts a request of command cmd about the set name (all sets
// for ""): the nfgenmsg header, the protocol and the name.
func ipsetRequest(cmd, flags int, name string) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(cmd|nfnlSubsysIPSet<<8, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: syscall.AF_NETLINK, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	if name != "" {
		req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(name)))
	}
	return req
}

// executeIPSet sends req and returns the payloads of the answers; an ipset
// error number becomes an nl.IPSetError, an interrupted dump an error.
func executeIPSet(req *nl.NetlinkRequest) ([][]byte, error) {
	msgs, err := req.Execute(syscall.NETLINK_NETFILTER, 0)
	var errno syscall.Errno
	switch {
	case errors.Is(err, nl.ErrDumpInterrupted):
		return nil, fmt.Errorf("ipset dump interrupted: %w", err)
	case errors.As(err, &errno) && int(errno) >= nl.IPSET_ERR_PRIVATE:
		return nil, nl.IPSetError(uintptr(errno))
	}
	return msgs, err
}

// adtRequest builds IPSET_CMD_ADD or IPSET_CMD_DEL of e in set name. Without
// exist the request carries NLM_F_EXCL, so the kernel answers IPSET_ERR_EXIST
// for a present member on add or an absent one on del, as `ipset add/del`
// do; with it the kernel takes it as `ipset -exist`, which on add replaces
// the extensions (the skbmark) of a present member.
func adtRequest(cmd int, name string, e Entry, exist bool) (*nl.NetlinkRequest, error) {
	data, err := encodeEntry(e)
	if err != nil {
		return nil, err
	}
	flags := nl.GetIpsetFlags(cmd)
	if !exist {
		flags |= syscall.NLM_F_EXCL
	}
	req := ipsetRequest(cmd, flags, name)
	req.AddData(data)
	return req, nil
}

// encodeEntry encodes an entry the way `ipset add` does: Addr as IP, Proto
// and Port, Addr2 as IP2, Net as IP2/CIDR2 after an Addr (hash:ip,port,net)
// or as IP/CIDR alone (hash:net), a Port alone (bitmap:port), and a Mark as
// SKBMARK with the full mask.
func encodeEntry(e Entry) (*nl.RtAttr, error) {
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	if e.Addr.IsValid() {
		data.AddChild(ipAttr(nl.IPSET_ATTR_IP, e.Addr))
	}
	if e.Addr2.IsValid() {
		data.AddChild(ipAttr(nl.IPSET_ATTR_IP2, e.Addr2))
	}
	if e.Net.IsValid() {
		ip, cidr := nl.IPSET_ATTR_IP, nl.IPSET_ATTR_CIDR
		if e.Addr.IsValid() {
			ip, cidr = nl.IPSET_ATTR_IP2, nl.IPSET_ATTR_CIDR2
		}
		data.AddChild(ipAttr(ip, e.Net.Addr()))
		data.AddChild(nl.NewRtAttr(cidr, nl.Uint8Attr(uint8(e.Net.Bits()))))
	}
	switch {
	case e.Proto != "" && !e.Addr.IsValid():
		return nil, fmt.Errorf("entry has a protocol but no address")
	case e.Proto != "":
		p, err := protoNumber(e.Proto)
		if err != nil {
			return nil, err
		}
		data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PROTO, nl.Uint8Attr(p)))
		data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PORT|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint16Attr(e.Port)))
	case !e.Addr.IsValid() && !e.Net.IsValid():
		data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PORT|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint16Attr(e.Port)))
	}
	if e.Mark != 0 {
		data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_SKBMARK|int(nl.NLA_F_NET_BYTEORDER),
			nl.BEUint64Attr(uint64(e.Mark)<<32|skbmarkFullMask)))
	}
	return data, nil
}

// ipAttr nests an address as the kernel takes it: attribute typ holding
// IPSET_ATTR_IPADDR_IPV4 or _IPV6 in network order.
func ipAttr(typ int, a netip.Addr) *nl.RtAttr {
	a = a.Unmap()
	inner := nl.IPSET_ATTR_IPADDR_IPV4
	if a.Is6() {
		inner = nl.IPSET_ATTR_IPADDR_IPV6
	}
	return nl.NewRtAttr(typ|int(nl.NLA_F_NESTED), nl.NewRtAttr(inner|int(nl.NLA_F_NET_BYTEORDER), a.AsSlice()).Serialize())
}

// dumpSets lists the set name (every set for "") with IPSET_CMD_LIST,
// passing flags (ipsetFlagList…) in IPSET_ATTR_FLAGS.
func dumpSets(name string, flags uint32) ([]dumpedSet, error) {
	req := ipsetRequest(nl.IPSET_CMD_LIST, nl.GetIpsetFlags(nl.IPSET_CMD_LIST), name)
	if flags != 0 {
		req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_FLAGS|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint32Attr(flags)))
	}
	msgs, err := executeIPSet(req)
	if err != nil {
		return nil, err
	}
	return parseDump(msgs)
}

// dumpedSet is what a list dump says about one set.
type dumpedSet struct {
	name      string
	typ       SetType
	family    uint8
	cadtFlags uint32 // IPSET_ATTR_CADT_FLAGS of the header
	ports     [2]uint16
	entries   []Entry // decoded for the types kube-ipvs uses only
}

func (d *dumpedSet) skbInfo() bool { return d.cadtFlags&nl.IPSET_FLAG_WITH_SKBINFO != 0 }

// parseDump decodes the messages of a list dump, sets in the order the
// kernel sent them. A large set spans several messages, each naming it;
// the first has the header (type, family, IPSET_ATTR_DATA).
func parseDump(msgs [][]byte) ([]dumpedSet, error) {
	var sets []dumpedSet
	for _, msg := range msgs {
		if len(msg) < 4 {
			return nil, fmt.Errorf("ipset message of %d bytes", len(msg))
		}
		attrs := new(attrTable)
		if err := parseAttrs(msg[4:], attrs); err != nil { // after the nfgenmsg
			return nil, err
		}
		name := ""
		if a, ok := attrs.get(nl.IPSET_ATTR_SETNAME); ok {
			name = cString(a.value)
		}
		if len(sets) == 0 || sets[len(sets)-1].name != name {
			sets = append(sets, dumpedSet{name: name})
		}
		if err := sets[len(sets)-1].add(attrs); err != nil {
			return nil, fmt.Errorf("ipset %s: %w", name, err)
		}
	}
	return sets, nil
}

// add takes one message's attributes: header fields, then members.
func (d *dumpedSet) add(attrs *attrTable) error {
	if a, ok := attrs.get(nl.IPSET_ATTR_TYPENAME); ok {
		d.typ = SetType(cString(a.value))
	}
	if a, ok := attrs.get(nl.IPSET_ATTR_FAMILY); ok && len(a.value) > 0 {
		d.family = a.value[0]
	}
	if a, ok := attrs.get(nl.IPSET_ATTR_DATA); ok {
		var header attrTable
		if err := parseAttrs(a.value, &header); err != nil {
			return err
		}
		d.cadtFlags = uint32(attrUint(&header, nl.IPSET_ATTR_CADT_FLAGS))
		d.ports = [2]uint16{uint16(attrUint(&header, nl.IPSET_ATTR_PORT_FROM)), uint16(attrUint(&header, nl.IPSET_ATTR_PORT_TO))}
	}
	a, ok := attrs.get(nl.IPSET_ATTR_ADT)
	if !ok || !supportedType(d.typ) {
		return nil
	}
	members, err := parseAttrList(a.value)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.typ != nl.IPSET_ATTR_DATA {
			continue
		}
		e, err := decodeEntry(d.typ, m.value)
		if err != nil {
			return err
		}
		d.entries = append(d.entries, e)
	}
	return nil
}

// decodeEntry decodes a listed member of a set of type t (see Entry). A
// skbmark with a mask other than the full one is not supported.
func decodeEntry(t SetType, data []byte) (Entry, error) {
	attrs := new(attrTable)
	if err := parseAttrs(data, attrs); err != nil {
		return Entry{}, err
	}
	var e Entry
	if a, ok := attrs.get(nl.IPSET_ATTR_SKBMARK); ok {
		v := attrUint(attrs, nl.IPSET_ATTR_SKBMARK)
		if len(a.value) != 8 || v&skbmarkFullMask != skbmarkFullMask {
			return Entry{}, fmt.Errorf("member with skbmark %#x/%#x: only the full mask is supported: %w",
				v>>32, v&skbmarkFullMask, errors.ErrUnsupported)
		}
		e.Mark = uint32(v >> 32)
	}
	port, hasPort := attrs.get(nl.IPSET_ATTR_PORT)
	if t == BitmapPort {
		if !hasPort {
			return Entry{}, fmt.Errorf("member without a port")
		}
		e.Port = uint16(attrUint(attrs, nl.IPSET_ATTR_PORT))
		return e, nil
	}
	ip, err := nestedAddr(attrs, nl.IPSET_ATTR_IP)
	if err != nil {
		return Entry{}, err
	}
	if t == HashNet {
		e.Net = prefixFrom(ip, uint8(attrUint(attrs, nl.IPSET_ATTR_CIDR)))
		return e, nil
	}
	e.Addr = ip
	if t != HashIP {
		proto, hasProto := attrs.get(nl.IPSET_ATTR_PROTO)
		if !hasPort || !hasProto || len(proto.value) != 1 || len(port.value) != 2 {
			return Entry{}, fmt.Errorf("member %s without protocol or port", ip)
		}
		e.Proto, e.Port = protoName(proto.value[0]), binary.BigEndian.Uint16(port.value)
	}
	switch t {
	case HashIPPortIP, HashIPPortNet:
		ip2, err := nestedAddr(attrs, nl.IPSET_ATTR_IP2)
		if err != nil {
			return Entry{}, fmt.Errorf("member %s without its second address: %w", ip, err)
		}
		if t == HashIPPortIP {
			e.Addr2 = ip2
		} else {
			e.Net = prefixFrom(ip2, uint8(attrUint(attrs, nl.IPSET_ATTR_CIDR2)))
		}
	}
	return e, nil
}

// nestedAddr reads address attribute typ (IPSET_ATTR_IP or _IP2), which
// nests IPSET_ATTR_IPADDR_IPV4 or _IPV6; an IPv4 address is never given
// in its IPv4-mapped form.
func nestedAddr(attrs *attrTable, typ uint16) (netip.Addr, error) {
	a, ok := attrs.get(typ)
	if !ok {
		return netip.Addr{}, fmt.Errorf("member without a valid address")
	}
	inner := new(attrTable)
	if err := parseAttrs(a.value, inner); err != nil {
		return netip.Addr{}, err
	}
	for _, t := range [...]uint16{nl.IPSET_ATTR_IPADDR_IPV4, nl.IPSET_ATTR_IPADDR_IPV6} {
		if v, ok := inner.get(t); ok {
			if addr, ok := netip.AddrFromSlice(v.value); ok {
				return addr.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("member without a valid address")
}

// nlAttr is one netlink attribute: its type without the NLA_F_NESTED and
// NLA_F_NET_BYTEORDER flags, whether it had the latter, and its value.
type nlAttr struct {
	typ      uint16
	netOrder bool
	value    []byte
}

// parseAttrList splits netlink attributes (host-order length and type,
// each padded to 4 bytes).
func parseAttrList(b []byte) ([]nlAttr, error) {
	var out []nlAttr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("truncated netlink attribute (%d bytes)", len(b))
		}
		n, typ := int(binary.NativeEndian.Uint16(b)), binary.NativeEndian.Uint16(b[2:])
		if n < 4 || n > len(b) {
			return nil, fmt.Errorf("netlink attribute %d of bad length %d (%d bytes left)", typ&nl.NLA_TYPE_MASK, n, len(b))
		}
		out = append(out, nlAttr{typ: typ & nl.NLA_TYPE_MASK, netOrder: typ&nl.NLA_F_NET_BYTEORDER != 0, value: b[4:n]})
		b = b[min(len(b), (n+3)&^3):]
	}
	return out, nil
}

// attrTable is netlink attributes by type, an array rather than a map so
// that decoding a listed member allocates nothing: every ipset attribute
// has a type below 32, and kube-ipvs reads no other.
type attrTable [32]nlAttr

// get is the attribute of type typ, if present.
func (t *attrTable) get(typ uint16) (nlAttr, bool) {
	if int(typ) >= len(t) {
		return nlAttr{}, false
	}
	a := t[typ]
	return a, a.value != nil
}

// parseAttrs splits netlink attributes by type into t, as parseAttrList
// does; of a type given twice the last wins, and types of 32 or above are
// dropped. The caller's table stays on its stack.
func parseAttrs(b []byte, t *attrTable) error {
	*t = attrTable{}
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("truncated netlink attribute (%d bytes)", len(b))
		}
		n, typ := int(binary.NativeEndian.Uint16(b)), binary.NativeEndian.Uint16(b[2:])
		if n < 4 || n > len(b) {
			return fmt.Errorf("netlink attribute %d of bad length %d (%d bytes left)", typ&nl.NLA_TYPE_MASK, n, len(b))
		}
		if k := typ & nl.NLA_TYPE_MASK; int(k) < len(t) {
			t[k] = nlAttr{typ: k, netOrder: typ&nl.NLA_F_NET_BYTEORDER != 0, value: b[4:n:n]}
		}
		b = b[min(len(b), (n+3)&^3):]
	}
	return nil
}

// attrUint reads an unsigned attribute of 1, 2, 4 or 8 bytes: in network
// order when flagged so (as the kernel sends everything but u8 values and
// the CIDRs), else in host order; 0 when absent.
func attrUint(attrs *attrTable, typ uint16) uint64 {
	a, ok := attrs.get(typ)
	if !ok {
		return 0
	}
	var order binary.ByteOrder = binary.NativeEndian
	if a.netOrder {
		order = binary.BigEndian
	}
	switch len(a.value) {
	case 1:
		return uint64(a.value[0])
	case 2:
		return uint64(order.Uint16(a.value))
	case 4:
		return uint64(order.Uint32(a.value))
	case 8:
		return order.Uint64(a.value)
	}
	return 0
}

// cString reads a NUL-terminated string attribute.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
