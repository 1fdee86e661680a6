//go:build linux

package iptables

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
)

// dataOf serializes an encoded entry and returns the value of its
// IPSET_ATTR_DATA, as decodeEntry gets it from a dump.
func dataOf(t *testing.T, e Entry) []byte {
	t.Helper()
	data, err := encodeEntry(e)
	if err != nil {
		t.Fatalf("encodeEntry(%s): %v", e, err)
	}
	list, err := parseAttrList(data.Serialize())
	if err != nil || len(list) != 1 || list[0].typ != nl.IPSET_ATTR_DATA {
		t.Fatalf("encoded %s: %v, %v", e, list, err)
	}
	return list[0].value
}

// TestEntryNetlinkRoundTrip encodes entries of every type as `ipset add`
// sends them and decodes them back (pure: no netlink socket is opened).
func TestEntryNetlinkRoundTrip(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		typ   SetType
		entry Entry
	}{
		{HashIP, Entry{Addr: a("10.96.0.1")}},
		{HashIP, Entry{Addr: a("10.96.0.1"), Mark: 0x2001}},
		{HashIPPort, Entry{Addr: a("10.96.0.1"), Proto: "tcp", Port: 80}},
		{HashIPPort, Entry{Addr: a("fd00::a"), Proto: "udp", Port: 53, Mark: 0x3fff}},
		{HashIPPortIP, Entry{Addr: a("10.244.1.5"), Proto: "sctp", Port: 9, Addr2: a("10.244.1.5")}},
		{HashIPPortNet, Entry{Addr: a("192.0.2.10"), Proto: "tcp", Port: 443, Net: p("203.0.113.0/24")}},
		{HashIPPortNet, Entry{Addr: a("fd00::1"), Proto: "tcp", Port: 443, Net: p("2001:db8::/32")}},
		{HashNet, Entry{Net: p("10.0.0.0/8")}},
		{HashNet, Entry{Net: p("fd00::1/128")}},
		{BitmapPort, Entry{Port: 8193}},
		{BitmapPort, Entry{Port: 0}},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ)+" "+tt.entry.String(), func(t *testing.T) {
			got, err := decodeEntry(tt.typ, dataOf(t, tt.entry))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.entry {
				t.Errorf("decoded %v, want %v", got, tt.entry)
			}
		})
	}
}

// TestEncodeEntryBytes pins the layout of a marked hash:ip,port member:
// the address nested in network order, the protocol, the port and the
// 64-bit skbmark (mark<<32 | mask) flagged NLA_F_NET_BYTEORDER, as the
// kernel's ip_set_get_extensions requires.
func TestEncodeEntryBytes(t *testing.T) {
	data, err := encodeEntry(Entry{Addr: netip.MustParseAddr("10.96.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001})
	if err != nil {
		t.Fatal(err)
	}
	le := func(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} } // host order on amd64 and arm64
	var want []byte
	want = append(want, le(44)...)
	want = append(want, le(nl.IPSET_ATTR_DATA|nl.NLA_F_NESTED)...)
	want = append(want, le(12)...)
	want = append(want, le(nl.IPSET_ATTR_IP|nl.NLA_F_NESTED)...)
	want = append(want, le(8)...)
	want = append(want, le(nl.IPSET_ATTR_IPADDR_IPV4|nl.NLA_F_NET_BYTEORDER)...)
	want = append(want, 10, 96, 0, 1)
	want = append(want, le(5)...)
	want = append(want, le(nl.IPSET_ATTR_PROTO)...)
	want = append(want, 6, 0, 0, 0)
	want = append(want, le(6)...)
	want = append(want, le(nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER)...)
	want = append(want, 0, 80, 0, 0)
	want = append(want, le(12)...)
	want = append(want, le(nl.IPSET_ATTR_SKBMARK|nl.NLA_F_NET_BYTEORDER)...)
	want = append(want, 0, 0, 0x20, 0x01, 0xff, 0xff, 0xff, 0xff)
	if got := data.Serialize(); !bytes.Equal(got, want) {
		t.Errorf("encoded\n% x\nwant\n% x", got, want)
	}
}

func TestEncodeEntryErrors(t *testing.T) {
	for _, e := range []Entry{
		{Proto: "tcp", Port: 80},
		{Addr: netip.MustParseAddr("10.0.0.1"), Proto: "icmpx", Port: 1},
	} {
		if _, err := encodeEntry(e); err == nil {
			t.Errorf("encodeEntry(%+v) accepted", e)
		}
	}
}

func TestDecodeEntryErrors(t *testing.T) {
	ip := Entry{Addr: netip.MustParseAddr("10.0.0.1")}
	tests := []struct {
		name        string
		typ         SetType
		data        []byte
		unsupported bool
	}{
		{name: "no address", typ: HashIP},
		{name: "port missing", typ: HashIPPort, data: dataOf(t, ip)},
		{name: "second ip missing", typ: HashIPPortIP, data: dataOf(t, Entry{Addr: ip.Addr, Proto: "tcp", Port: 1})},
		{name: "bitmap port missing", typ: BitmapPort},
		{name: "truncated attribute", typ: HashIP, data: []byte{8, 0, 1}},
		{name: "attribute longer than the data", typ: HashIP, data: []byte{12, 0, 1, 0, 0, 0, 0, 0}},
		{
			name:        "skbmark with a partial mask",
			typ:         HashIP,
			data:        append(dataOf(t, ip), skbmarkAttr(0x2001, 0xffff)...),
			unsupported: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeEntry(tt.typ, tt.data)
			if err == nil || errors.Is(err, errors.ErrUnsupported) != tt.unsupported {
				t.Errorf("err = %v, want an error (unsupported: %v)", err, tt.unsupported)
			}
		})
	}
}

// skbmarkAttr is IPSET_ATTR_SKBMARK as the kernel lists it.
func skbmarkAttr(mark, mask uint32) []byte {
	return nl.NewRtAttr(nl.IPSET_ATTR_SKBMARK|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint64Attr(uint64(mark)<<32|uint64(mask))).Serialize()
}

// listMessage builds one IPSET_CMD_LIST answer as the kernel sends it
// (ip_set_dump_do): nfgenmsg, protocol, name, then the header attributes
// when header is set, then IPSET_ATTR_ADT holding each member's
// IPSET_ATTR_DATA. The kernel nests addresses without
// NLA_F_NET_BYTEORDER.
func listMessage(name string, header []nl.NetlinkRequestData, members ...[]nl.NetlinkRequestData) []byte {
	b := (&nl.Nfgenmsg{NfgenFamily: syscall.AF_INET}).Serialize()
	b = append(b, nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)).Serialize()...)
	b = append(b, nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(name)).Serialize()...)
	for _, h := range header {
		b = append(b, h.Serialize()...)
	}
	if len(members) > 0 {
		adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|int(nl.NLA_F_NESTED), nil)
		for _, m := range members {
			data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
			for _, a := range m {
				data.AddChild(a)
			}
			adt.AddChild(data)
		}
		b = append(b, adt.Serialize()...)
	}
	return b
}

func TestParseDump(t *testing.T) {
	net16 := func(typ int, v uint16) *nl.RtAttr {
		return nl.NewRtAttr(typ|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint16Attr(v))
	}
	net32 := func(typ int, v uint32) *nl.RtAttr {
		return nl.NewRtAttr(typ|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint32Attr(v))
	}
	ip4 := func(a ...byte) *nl.RtAttr {
		return nl.NewRtAttr(nl.IPSET_ATTR_IP|int(nl.NLA_F_NESTED), nl.NewRtAttr(nl.IPSET_ATTR_IPADDR_IPV4, a).Serialize())
	}
	head := func(typ string, family uint8, data ...nl.NetlinkRequestData) []nl.NetlinkRequestData {
		d := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
		for _, a := range data {
			d.AddChild(a)
		}
		return []nl.NetlinkRequestData{
			nl.NewRtAttr(nl.IPSET_ATTR_TYPENAME, nl.ZeroTerminated(typ)),
			nl.NewRtAttr(nl.IPSET_ATTR_FAMILY, nl.Uint8Attr(family)),
			nl.NewRtAttr(nl.IPSET_ATTR_REVISION, nl.Uint8Attr(6)),
			d,
		}
	}
	member := func(b byte, port uint16, mark uint32) []nl.NetlinkRequestData {
		return []nl.NetlinkRequestData{
			ip4(10, 96, 0, b), net16(nl.IPSET_ATTR_PORT, port),
			nl.NewRtAttr(nl.IPSET_ATTR_PROTO, nl.Uint8Attr(6)),
			nl.NewRtAttr(nl.IPSET_ATTR_SKBMARK|int(nl.NLA_F_NET_BYTEORDER), nl.BEUint64Attr(uint64(mark)<<32|0xffffffff)),
		}
	}
	msgs := [][]byte{
		listMessage("SC", head("hash:ip,port", syscall.AF_INET,
			net32(nl.IPSET_ATTR_HASHSIZE, 1024), net32(nl.IPSET_ATTR_MAXELEM, 65536),
			nl.NewRtAttr(nl.IPSET_ATTR_PROBES, nl.Uint8Attr(12)), // bucketsize
			net32(nl.IPSET_ATTR_CADT_FLAGS, nl.IPSET_FLAG_WITH_SKBINFO),
			net32(nl.IPSET_ATTR_REFERENCES, 1)),
			member(1, 80, 0x2001)),
		// The rest of SC, in a second message that names it again.
		listMessage("SC", nil, member(2, 443, 0x2002)),
		listMessage("OWNED", head("bitmap:port", 0, net16(nl.IPSET_ATTR_PORT_FROM, 8192), net16(nl.IPSET_ATTR_PORT_TO, 16383)),
			[]nl.NetlinkRequestData{net16(nl.IPSET_ATTR_PORT, 8193)}),
		listMessage("EMPTY", head("hash:ip", syscall.AF_INET6)),
		listMessage("MACS", head("hash:mac", 0), []nl.NetlinkRequestData{nl.NewRtAttr(nl.IPSET_ATTR_ETHER, []byte{2, 0, 0, 0, 0, 1})}),
	}
	got, err := parseDump(msgs)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	want := []dumpedSet{
		{name: "SC", typ: HashIPPort, family: syscall.AF_INET, cadtFlags: nl.IPSET_FLAG_WITH_SKBINFO, entries: []Entry{
			{Addr: a("10.96.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001},
			{Addr: a("10.96.0.2"), Proto: "tcp", Port: 443, Mark: 0x2002},
		}},
		{name: "OWNED", typ: BitmapPort, ports: [2]uint16{8192, 16383}, entries: []Entry{{Port: 8193}}},
		{name: "EMPTY", typ: HashIP, family: syscall.AF_INET6},
		{name: "MACS", typ: "hash:mac"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseDump:\n got %+v\nwant %+v", got, want)
	}
	if !got[0].skbInfo() || got[1].skbInfo() {
		t.Errorf("skbInfo() = %v, %v; want true, false", got[0].skbInfo(), got[1].skbInfo())
	}

	names, err := parseDump([][]byte{listMessage("A", nil), listMessage("B", nil)})
	if err != nil || len(names) != 2 || names[0].name != "A" || names[1].name != "B" {
		t.Errorf("names-only dump: %+v, %v", names, err)
	}
	if _, err := parseDump([][]byte{{2, 0}}); err == nil {
		t.Error("short message accepted")
	}
}

func TestMapSetError(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		onExist error
		want    error
	}{
		{name: "nil", err: nil, want: nil},
		{name: "missing set", err: syscall.ENOENT, want: ErrNotFound},
		{name: "set name taken", err: syscall.EEXIST, onExist: ErrExists, want: ErrExists},
		{name: "member present on add", err: nl.IPSetError(nl.IPSET_ERR_EXIST), onExist: ErrExists, want: ErrExists},
		{name: "member absent on del", err: nl.IPSetError(nl.IPSET_ERR_EXIST), onExist: ErrNotFound, want: ErrNotFound},
		{name: "set in use", err: nl.IPSetError(nl.IPSET_ERR_BUSY), want: ErrInUse},
		{name: "other", err: nl.IPSetError(nl.IPSET_ERR_TYPE_MISMATCH), onExist: ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapSetError("op", tt.err, tt.onExist)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("got %v", got)
				}
				return
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap the kernel error", got)
			}
			for _, typed := range []error{ErrNotFound, ErrExists, ErrInUse} {
				if errors.Is(got, typed) != (typed == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", got, typed, !(typed == tt.want))
				}
			}
		})
	}
}

func TestGuardRecoversPanic(t *testing.T) {
	err := guard(func() error { panic("interface conversion") })
	if err == nil {
		t.Fatal("panic not turned into an error")
	}
}

func TestMapEntryError(t *testing.T) {
	hash := Entry{Addr: netip.MustParseAddr("10.96.0.1"), Proto: "tcp", Port: 80, Mark: 0x2001}
	port := Entry{Port: 100}
	tests := []struct {
		name  string
		e     Entry
		err   error
		want  string
		typed error
	}{
		{name: "mark in a set without skbinfo", e: hash, err: nl.IPSetError(nl.IPSET_ERR_SKBINFO),
			want: "op: entry 10.96.0.1,tcp:80 skbmark 0x2001: the set has no skbinfo, a member cannot have a mark: skbinfo"},
		{name: "port out of range", e: port, err: nl.IPSetError(nl.IPSET_ERR_TYPE_SPECIFIC),
			want: "op: port 100 outside the set's range: errno 4352"},
		{name: "hash set full", e: hash, err: nl.IPSetError(nl.IPSET_ERR_TYPE_SPECIFIC),
			want: "op: the set is full (maxelem): errno 4352"},
		{name: "present member", e: port, err: nl.IPSetError(nl.IPSET_ERR_EXIST), want: "op: already exists: exist", typed: ErrExists},
		{name: "missing set", e: hash, err: syscall.ENOENT, want: "op: not found: no such file or directory", typed: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapEntryError("op", tt.e, tt.err, ErrExists)
			if got == nil || got.Error() != tt.want {
				t.Errorf("got %v, want %q", got, tt.want)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("%v does not wrap the kernel error", got)
			}
			if tt.typed != nil && !errors.Is(got, tt.typed) {
				t.Errorf("%v is not %v", got, tt.typed)
			}
		})
	}
	if err := mapEntryError("op", hash, nil, ErrExists); err != nil {
		t.Errorf("nil error mapped to %v", err)
	}
}
