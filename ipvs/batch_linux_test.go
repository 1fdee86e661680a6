//go:build linux

package ipvs

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"unsafe"

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
