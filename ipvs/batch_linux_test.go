//go:build linux

package ipvs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// ack is an acknowledgement as the kernel sends it with NETLINK_CAP_ACK:
// a header, the errno (negative) and the request's header.
func ack(seq uint32, errno syscall.Errno) []byte {
	body := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	body = append(body, make([]byte, unix.NLMSG_HDRLEN)...)
	return answer(seq, unix.NLMSG_ERROR, body)
}

func TestMmsghdrIsTheKernels(t *testing.T) {
	// struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; },
	// aligned as struct msghdr.
	want := unsafe.Sizeof(unix.Msghdr{}) + 4
	if a := unsafe.Alignof(unix.Msghdr{}); want%a != 0 {
		want += a - want%a
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Fatalf("mmsghdr is %d bytes, want %d", got, want)
	}
	if got := unsafe.Offsetof(mmsghdr{}.len); got != unsafe.Sizeof(unix.Msghdr{}) {
		t.Fatalf("msg_len at %d, want %d", got, unsafe.Sizeof(unix.Msghdr{}))
	}
}

func TestParseAck(t *testing.T) {
	cases := []struct {
		name  string
		b     []byte
		seq   uint32
		errno syscall.Errno
		ok    bool
	}{
		{"success", ack(7, 0), 7, 0, true},
		{"failure", ack(8, syscall.EEXIST), 8, syscall.EEXIST, true},
		{"cut after the errno", ack(9, syscall.ENOENT)[:unix.NLMSG_HDRLEN+4], 9, syscall.ENOENT, true},
		{"no errno", ack(10, 0)[:unix.NLMSG_HDRLEN+3], 0, 0, false},
		{"not an acknowledgement", answer(11, unix.NLMSG_DONE, make([]byte, 4)), 0, 0, false},
		{"empty", nil, 0, 0, false},
	}
	for _, tc := range cases {
		seq, errno, ok := parseAck(tc.b)
		if seq != tc.seq || errno != tc.errno || ok != tc.ok {
			t.Errorf("%s: (%d, %v, %v), want (%d, %v, %v)", tc.name, seq, errno, ok, tc.seq, tc.errno, tc.ok)
		}
	}
}

// TestAckReader reads datagrams from a socket pair (the same recvmmsg a
// netlink socket takes): more than one read holds, one per slot, a
// long one cut to its slot, and EAGAIN once none is left.
func TestAckReader(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	const slots, sent = 4, 10
	long := append(ack(3, syscall.EINVAL), make([]byte, 2*ackSlotSize)...)
	for i := range uint32(sent) {
		m := ack(i, syscall.Errno(i%2))
		if i == 3 {
			m = long
		}
		if err := unix.Send(fds[1], m, 0); err != nil {
			t.Fatal(err)
		}
	}
	r := newAckReader(slots)
	var seqs []uint32
	var errnos []syscall.Errno
	for len(seqs) < sent {
		n, err := r.read(fds[0])
		if err != nil {
			t.Fatalf("after %d acknowledgements: %v", len(seqs), err)
		}
		if want := min(slots, sent-len(seqs)); n != want {
			t.Fatalf("a read took %d messages, want %d: every slot while enough are queued", n, want)
		}
		for i := range n {
			m := r.message(i)
			if len(m) > ackSlotSize {
				t.Fatalf("message of %d bytes in a slot of %d", len(m), ackSlotSize)
			}
			seq, errno, ok := parseAck(m)
			if !ok {
				t.Fatalf("message %d is not an acknowledgement: %x", len(seqs), m)
			}
			seqs = append(seqs, seq)
			errnos = append(errnos, errno)
		}
	}
	for i := range seqs {
		want := syscall.Errno(i % 2)
		if i == 3 {
			want = syscall.EINVAL
		}
		if seqs[i] != uint32(i) || errnos[i] != want {
			t.Errorf("acknowledgement %d: seq %d errno %v, want seq %d errno %v", i, seqs[i], errnos[i], i, want)
		}
	}
	if n, err := r.read(fds[0]); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("an empty socket read %d messages, err %v; want EAGAIN", n, err)
	}
}

// libAppendWrite is the request of a write as the batch made it from
// github.com/moby/ipvs' own types (toLibService, toLibDest) before
// appendWrite wrote the attributes from kube-ipvs' types directly.
func libAppendWrite(b []byte, family uint16, seq uint32, w Write) []byte {
	start := len(b)
	cmd := uint8(cmdNewService)
	key := w.Service
	if w.Method == MethodAddDestination {
		cmd, key = cmdNewDest, Service{Key: w.Key}
	}
	b = appendHeaders(b, family, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, cmd)
	b = libAppendService(b, toLibService(key))
	if w.Method == MethodAddDestination {
		b = libAppendDest(b, toLibDest(w.Dest))
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func libAppendService(b []byte, s *libipvs.Service) []byte {
	return appendNested(b, attrService, func(b []byte) []byte {
		b = appendAttr(b, svcAF, binary.NativeEndian.AppendUint16(nil, s.AddressFamily))
		if s.FWMark != 0 {
			b = appendAttr(b, svcFWMark, binary.NativeEndian.AppendUint32(nil, s.FWMark))
		} else {
			b = appendAttr(b, svcProtocol, binary.NativeEndian.AppendUint16(nil, s.Protocol))
			b = appendAttr(b, svcAddr, ipBytes(s.Address))
			b = appendAttr(b, svcPort, binary.BigEndian.AppendUint16(nil, s.Port))
		}
		b = appendAttr(b, svcSched, append([]byte(s.SchedName), 0))
		if s.PEName != "" {
			b = appendAttr(b, svcPEName, append([]byte(s.PEName), 0))
		}
		flags := binary.NativeEndian.AppendUint32(nil, s.Flags)
		b = appendAttr(b, svcFlags, binary.NativeEndian.AppendUint32(flags, 0xffffffff))
		b = appendAttr(b, svcTimeout, binary.NativeEndian.AppendUint32(nil, s.Timeout))
		return appendAttr(b, svcNetmask, binary.NativeEndian.AppendUint32(nil, s.Netmask))
	})
}

func libAppendDest(b []byte, d *libipvs.Destination) []byte {
	return appendNested(b, attrDest, func(b []byte) []byte {
		b = appendAttr(b, destAddr, ipBytes(d.Address))
		b = appendAttr(b, destPort, binary.BigEndian.AppendUint16(nil, d.Port))
		b = appendAttr(b, destForward, binary.NativeEndian.AppendUint32(nil, d.ConnectionFlags&libipvs.ConnectionFlagFwdMask))
		b = appendAttr(b, destWeight, binary.NativeEndian.AppendUint32(nil, uint32(d.Weight)))
		b = appendAttr(b, destUThresh, binary.NativeEndian.AppendUint32(nil, d.UpperThreshold))
		return appendAttr(b, destLThresh, binary.NativeEndian.AppendUint32(nil, d.LowerThreshold))
	})
}

// ipBytes is an address as github.com/moby/ipvs sends it: 4 bytes for
// IPv4, 16 for IPv6.
func ipBytes(ip []byte) []byte {
	if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap().Is4() {
		v4 := a.Unmap().As4()
		return v4[:]
	}
	return ip
}

// appendNested appends an attribute whose payload body writes.
func appendNested(b []byte, typ uint16, body func([]byte) []byte) []byte {
	start := len(b)
	return endNested(body(beginNested(b, typ)), start)
}

// TestAppendWriteIsMobysEncoding: every shape of write is encoded byte for
// byte as from github.com/moby/ipvs' types, and a request about a key as
// well.
func TestAppendWriteIsMobysEncoding(t *testing.T) {
	v4 := ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: TCP, Port: 80}
	v6 := ServiceKey{Addr: netip.MustParseAddr("fd00::10"), Proto: UDP, Port: 53}
	sctp := ServiceKey{Addr: netip.MustParseAddr("10.96.0.11"), Proto: SCTP, Port: 9999}
	mapped := ServiceKey{Addr: netip.MustParseAddr("::ffff:10.96.0.12"), Proto: TCP, Port: 443}
	services := []Service{
		{Key: v4, Scheduler: "rr"},
		{Key: v6, Scheduler: "mh", Flags: SchedFlag2 | SchedFlag1},
		{Key: sctp, Scheduler: "wlc", Persistent: true, Timeout: 10800},
		{Key: mapped, Scheduler: "sh", Persistent: true},
		{Key: MarkKey(0x4000, false), Scheduler: "rr"},
		{Key: MarkKey(0x4001, true), Scheduler: "lc", Persistent: true, Timeout: 60},
		{Key: v4, Scheduler: ""},
	}
	dests := []Destination{
		{Addr: netip.MustParseAddrPort("10.244.1.2:8080"), Weight: 1, Forward: Masquerade},
		{Addr: netip.MustParseAddrPort("10.244.1.3:8080"), Weight: 0, Forward: Masquerade},
		{Addr: netip.MustParseAddrPort("[fd00:244::2]:8080"), Weight: 7, Forward: Tunnel},
		{Addr: netip.MustParseAddrPort("10.244.1.4:65535"), Weight: 1 << 20, Forward: Route},
	}
	var ws []Write
	for _, s := range services {
		ws = append(ws, Write{Method: MethodAddService, Service: s})
		for _, d := range dests {
			ws = append(ws, Write{Method: MethodAddDestination, Key: s.Key, Dest: d})
		}
	}
	var got, want []byte
	for i, w := range ws {
		got = appendWrite(got, 0x1c, uint32(i), w)
		want = libAppendWrite(want, 0x1c, uint32(i), w)
		if !bytes.Equal(got, want) {
			t.Fatalf("write %d %+v:\n got %x\nwant %x", i, w, got, want)
		}
	}
	for _, s := range services {
		if g, w := appendService(nil, &Service{Key: s.Key}), libAppendService(nil, toLibService(Service{Key: s.Key})); !bytes.Equal(g, w) {
			t.Errorf("key %s:\n got %x\nwant %x", s.Key, g, w)
		}
	}
	for _, w := range ws {
		if n := len(appendWrite(nil, 0x1c, 1, w)); n > 192 {
			t.Errorf("%+v takes %d bytes, more than Batch makes room for", w, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { got = appendWrite(got[:0], 0x1c, 1, ws[1]) }); n != 0 {
		t.Errorf("appendWrite into room enough allocates %v times", n)
	}
}

// waitReadable answers EAGAIN when nothing comes in time, and returns at
// once when something is queued.
func TestWaitReadable(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := waitReadable(fds[0], 20*time.Millisecond); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("with nothing queued: %v, want EAGAIN", err)
	}
	if err := unix.Send(fds[1], ack(1, 0), 0); err != nil {
		t.Fatal(err)
	}
	if err := waitReadable(fds[0], time.Minute); err != nil {
		t.Errorf("with an acknowledgement queued: %v", err)
	}
}
