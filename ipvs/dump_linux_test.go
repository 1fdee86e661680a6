//go:build linux

package ipvs

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// answer is one netlink message of the IPVS family: seq, type and, for a
// generic netlink message, its IPVS_CMD_ATTR_DEST payloads.
func answer(seq uint32, typ uint16, body []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_MULTI)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// destMsg is a dump message with one real server as the kernel writes it:
// the address in 16 bytes whatever the family, family 0 for a kernel
// before 3.18 (no attribute).
func destMsg(seq uint32, addr netip.AddrPort, family uint16, fwd, weight, active, inactive uint32) []byte {
	var raw [16]byte
	if addr.Addr().Is4() {
		v4 := addr.Addr().As4()
		copy(raw[:], v4[:])
	} else {
		raw = addr.Addr().As16()
	}
	body := append([]byte{cmdGetDest, genlVersion, 0, 0}, appendNested(nil, attrDest, func(b []byte) []byte {
		b = appendAttr(b, destAddr, raw[:])
		b = appendAttr(b, destPort, binary.BigEndian.AppendUint16(nil, addr.Port()))
		b = appendAttr(b, destForward, binary.NativeEndian.AppendUint32(nil, fwd))
		b = appendAttr(b, destWeight, binary.NativeEndian.AppendUint32(nil, weight))
		b = appendAttr(b, destActiveConns, binary.NativeEndian.AppendUint32(nil, active))
		b = appendAttr(b, destInactConns, binary.NativeEndian.AppendUint32(nil, inactive))
		if family != 0 {
			b = appendAttr(b, destFamily, binary.NativeEndian.AppendUint16(nil, family))
		}
		return b
	})...)
	return answer(seq, 0x20, body)
}

func errMsg(seq uint32, errno syscall.Errno) []byte {
	return answer(seq, unix.NLMSG_ERROR, binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno))))
}

func TestWalkAnswerReadsTheDumpOfItsRequest(t *testing.T) {
	web := ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: TCP, Port: 80}
	ep := netip.MustParseAddrPort
	var b []byte
	b = append(b, destMsg(6, ep("10.244.9.9:80"), syscall.AF_INET, 0, 1, 0, 0)...) // an earlier request's late answer
	b = append(b, destMsg(7, ep("10.244.2.1:8080"), syscall.AF_INET, uint32(Masquerade), 1, 3, 4)...)
	b = append(b, destMsg(7, ep("10.244.1.1:8080"), 0, uint32(Route)|0x100, 0, 0, 2)...) // no family attribute; flags above the forwarding bits
	b = append(b, destMsg(7, ep("[fd00::1]:80"), syscall.AF_INET6, 0, 1, 0, 0)...)       // another family: left out
	var got []Destination
	each := func(attrs []byte) {
		if d, ok := parseDest(web, attrs); ok {
			got = append(got, d)
		}
	}
	done, err := walkAnswer(b, 7, true, attrDest, each)
	if done || err != nil {
		t.Fatalf("a dump without NLMSG_DONE: done %v, %v", done, err)
	}
	if done, err = walkAnswer(answer(7, unix.NLMSG_DONE, []byte{0, 0, 0, 0}), 7, true, attrDest, each); !done || err != nil {
		t.Fatalf("NLMSG_DONE: done %v, %v", done, err)
	}
	want := []Destination{
		{Addr: ep("10.244.2.1:8080"), Weight: 1, Forward: Masquerade, ActiveConns: 3, InactiveConns: 4},
		{Addr: ep("10.244.1.1:8080"), Weight: 0, Forward: Route, InactiveConns: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}

	mark := MarkKey(8193, true)
	got = nil
	each = func(attrs []byte) {
		if d, ok := parseDest(mark, attrs); ok {
			got = append(got, d)
		}
	}
	if _, err := walkAnswer(append(destMsg(8, ep("[fd00::1]:80"), 0, 0, 1, 0, 0), destMsg(8, ep("10.0.0.1:80"), syscall.AF_INET, 0, 1, 0, 0)...), 8, true, attrDest, each); err != nil {
		t.Fatal(err)
	}
	if want := []Destination{{Addr: ep("[fd00::1]:80"), Weight: 1, Forward: Masquerade}}; !slices.Equal(got, want) {
		t.Errorf("an IPv6 firewall mark's dump: got %+v, want %+v", got, want)
	}
}

func TestWalkAnswerEndsOnErrorsAndSingleAnswers(t *testing.T) {
	none := func([]byte) {}
	if done, err := walkAnswer(errMsg(3, syscall.ESRCH), 3, false, attrDest, none); !errors.Is(err, syscall.ESRCH) || done {
		t.Errorf("ESRCH: done %v, %v", done, err)
	}
	if done, err := walkAnswer(errMsg(3, 0), 3, false, attrDest, none); err != nil || !done {
		t.Errorf("an acknowledgement: done %v, %v", done, err)
	}
	if done, err := walkAnswer(errMsg(2, syscall.ESRCH), 3, false, attrDest, none); err != nil || done {
		t.Errorf("another request's error: done %v, %v", done, err)
	}
	single := answer(3, 0x20, []byte{cmdGetService, genlVersion, 0, 0})
	if done, err := walkAnswer(single, 3, false, attrDest, none); err != nil || !done {
		t.Errorf("the answer to a request that is not a dump: done %v, %v", done, err)
	}
	bad := single[:len(single)-1]
	binary.NativeEndian.PutUint32(bad, uint32(len(single)+8))
	if _, err := walkAnswer(bad, 3, false, attrDest, none); err == nil {
		t.Error("a message longer than the read: no error")
	}
}

func TestParseServiceReadsWhatTheKernelSends(t *testing.T) {
	svcMsg := func(body func([]byte) []byte) []byte {
		return answer(9, 0x20, append([]byte{cmdGetService, genlVersion, 0, 0}, appendNested(nil, attrService, body)...))
	}
	u16 := func(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	var raw [16]byte
	copy(raw[:], []byte{10, 96, 0, 10})
	b := svcMsg(func(b []byte) []byte {
		b = appendAttr(b, svcAF, u16(syscall.AF_INET))
		b = appendAttr(b, svcProtocol, u16(syscall.IPPROTO_UDP))
		b = appendAttr(b, svcAddr, raw[:])
		b = appendAttr(b, svcPort, binary.BigEndian.AppendUint16(nil, 53))
		b = appendAttr(b, svcSched, []byte("wlc\x00"))
		b = appendAttr(b, svcFlagsAttr, append(u32(0x1|0x2|0x8), u32(0xffffffff)...)) // persistent, hashed (the kernel's own), scheduler flag 1
		b = appendAttr(b, svcTimeout, u32(300))
		return appendAttr(b, svcNetmask, u32(0xffffffff))
	})
	b = append(b, svcMsg(func(b []byte) []byte {
		b = appendAttr(b, svcAF, u16(syscall.AF_INET6))
		b = appendAttr(b, svcFWMark, u32(8193))
		b = appendAttr(b, svcSched, []byte("someday\x00"))
		return appendAttr(b, svcNetmask, u32(128))
	})...)
	var got []Service
	if _, err := walkAnswer(b, 9, true, attrService, func(attrs []byte) {
		if s, ok := fromLibService(parseService(attrs)); ok {
			got = append(got, s)
		}
	}); err != nil {
		t.Fatal(err)
	}
	diff(t, "the dump", Format(got, nil), lines(
		"-A -u 10.96.0.10:53 -s wlc -p 300 -b flag-1",
		"-A -f 8193 -6 -s someday",
	))
}

// TestLastOfEachKey: a virtual server the kernel sent twice in one dump
// (a write between its parts) is listed once, as read the second time.
func TestLastOfEachKey(t *testing.T) {
	a, b, c := key(TCP, "10.96.0.1:80"), key(TCP, "10.96.0.2:80"), key(UDP, "10.96.0.2:53")
	read := []Service{
		{Key: b, Scheduler: "rr"}, {Key: a, Scheduler: "rr"}, {Key: c, Scheduler: "sh"},
		{Key: b, Scheduler: "wlc"}, {Key: b, Scheduler: "mh"},
	}
	slices.SortStableFunc(read, func(x, y Service) int { return x.Key.Compare(y.Key) })
	got := lastOfEachKey(read)
	want := []Service{{Key: a, Scheduler: "rr"}, {Key: b, Scheduler: "mh"}, {Key: c, Scheduler: "sh"}}
	slices.SortFunc(want, func(x, y Service) int { return x.Key.Compare(y.Key) })
	if !slices.Equal(got, want) {
		t.Errorf("lastOfEachKey = %+v, want %+v", got, want)
	}
	if got := lastOfEachKey(nil); len(got) != 0 {
		t.Errorf("lastOfEachKey(nil) = %+v", got)
	}
}
