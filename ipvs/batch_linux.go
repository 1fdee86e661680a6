//go:build linux

package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"syscall"
	"time"
	"unsafe"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var _ Batcher = (*Kernel)(nil)

// The generic netlink commands and attributes of <linux/ip_vs.h> a batch
// writes.
const (
	cmdNewService = 1 // IPVS_CMD_NEW_SERVICE
	cmdNewDest    = 5 // IPVS_CMD_NEW_DEST
	genlVersion   = 1 // IPVS_GENL_VERSION

	attrService = 1 // IPVS_CMD_ATTR_SERVICE
	attrDest    = 2 // IPVS_CMD_ATTR_DEST

	svcAF       = 1  // IPVS_SVC_ATTR_AF
	svcProtocol = 2  // IPVS_SVC_ATTR_PROTOCOL
	svcAddr     = 3  // IPVS_SVC_ATTR_ADDR
	svcPort     = 4  // IPVS_SVC_ATTR_PORT
	svcFWMark   = 5  // IPVS_SVC_ATTR_FWMARK
	svcSched    = 6  // IPVS_SVC_ATTR_SCHED_NAME
	svcFlags    = 7  // IPVS_SVC_ATTR_FLAGS
	svcTimeout  = 8  // IPVS_SVC_ATTR_TIMEOUT
	svcNetmask  = 9  // IPVS_SVC_ATTR_NETMASK
	svcPEName   = 11 // IPVS_SVC_ATTR_PE_NAME

	destAddr    = 1 // IPVS_DEST_ATTR_ADDR
	destPort    = 2 // IPVS_DEST_ATTR_PORT
	destForward = 3 // IPVS_DEST_ATTR_FWD_METHOD
	destWeight  = 4 // IPVS_DEST_ATTR_WEIGHT
	destUThresh = 5 // IPVS_DEST_ATTR_U_THRESH
	destLThresh = 6 // IPVS_DEST_ATTR_L_THRESH

	// batchTimeout bounds the wait for an acknowledgement.
	batchTimeout = 30 * time.Second
)

// Batch runs ws in order as few writes to the kernel: each sendmsg
// carries up to sendMax messages, which the kernel runs one by one,
// acknowledging each, so a write that fails does not stop the next. The
// messages are those github.com/moby/ipvs sends for NewService and
// NewDestination, so the kernel holds the same as after the single
// calls. Each error is what AddService or AddDestination would have
// returned; when the socket itself fails, every write not acknowledged
// gets that error, and so does every write not sent yet.
func (k *Kernel) Batch(ws []Write) []error {
	errs := make([]error, len(ws))
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.batchOpen(); err != nil {
		for i, w := range ws {
			errs[i] = writeError(w, err)
		}
		return errs
	}
	for start := 0; start < len(ws); start += sendMax {
		end := min(start+sendMax, len(ws))
		if err := k.batchPart(ws[start:end], errs[start:end]); err != nil {
			for i := end; i < len(ws); i++ {
				errs[i] = writeError(ws[i], fmt.Errorf("IPVS batch: not sent after an earlier part failed: %w", err))
			}
			break
		}
	}
	return errs
}

// sendMax is how many requests one sendmsg carries at most. The kernel
// queues every acknowledgement on the socket while the requests run, and
// the default receive buffer (net.core.rmem_default, 208 KiB) holds about
// 270: a run of 300 failed with ENOBUFS.
const sendMax = 128

// batchPart sends ws, at most sendMax, in one sendmsg and reads their
// acknowledgements into errs. Its error is the socket's, which it closes;
// every write of ws not acknowledged then has it in errs. The request
// buffer and the sequence map are kept for the next part.
func (k *Kernel) batchPart(ws []Write, errs []error) error {
	if k.batchSeqs == nil {
		k.batchSeqs = make(map[uint32]int, sendMax)
	}
	seq := k.batchSeqs
	clear(seq)
	buf := slices.Grow(k.batchBuf[:0], len(ws)*192) // an IPv6 real server: 168 bytes
	defer func() { k.batchBuf = buf[:0] }()
	for i, w := range ws {
		if err := validateWrite(w); err != nil {
			errs[i] = writeError(w, err)
			continue
		}
		k.batchSeq++
		seq[k.batchSeq] = i
		buf = appendWrite(buf, k.batchFamily, k.batchSeq, w)
	}
	if len(seq) == 0 {
		return nil
	}
	err := k.batchLocked(buf, seq, errs, ws)
	if err != nil {
		if k.batchSock != nil {
			k.batchSock.Close()
			k.batchSock = nil
		}
		for s, i := range seq {
			errs[i] = writeError(ws[i], fmt.Errorf("IPVS batch (message %d): %w", s, err))
		}
	}
	return err
}

// batchLocked sends buf and reads one acknowledgement per entry of seq
// (sequence number to index of ws), which it deletes; errs gets the
// failures. An error is the socket's.
func (k *Kernel) batchLocked(buf []byte, seq map[uint32]int, errs []error, ws []Write) error {
	fd := k.batchSock.GetFd()
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	settle := func(s uint32, errno syscall.Errno) {
		if i, ok := seq[s]; ok {
			delete(seq, s)
			if errno != 0 {
				errs[i] = writeError(ws[i], errno)
			}
		}
	}
	if k.acks == nil {
		k.acks = newAckReader(ackSlots)
	}
	for len(seq) > 0 {
		n, err := k.acks.read(fd)
		if errors.Is(err, unix.EAGAIN) {
			// None is queued, which the kernel does not do (it answers
			// each request while the batch is sent): wait for one.
			if err := waitReadable(fd, batchTimeout); err != nil {
				return fmt.Errorf("receiving: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		for i := range n {
			if s, errno, ok := parseAck(k.acks.message(i)); ok {
				settle(s, errno)
			}
		}
	}
	return nil
}

// ackSlots is how many acknowledgements one read takes at most.
const ackSlots = 64

// ackSlotSize is the room for one acknowledgement: with NETLINK_CAP_ACK
// one is 36 bytes; without it (a kernel before 4.3) an error's carries
// the request, which is cut short (its first bytes are all that is read).
const ackSlotSize = 128

// ackReader reads queued acknowledgements with one recvmmsg(2) each
// time, into buffers kept between batches (nl.NetlinkSocket.Receive
// clears a 64 KiB buffer and waits on the poller for each one, which
// costs more than the write it answers).
type ackReader struct {
	buf  []byte
	iovs []unix.Iovec
	hdrs []mmsghdr
}

// mmsghdr is struct mmsghdr of <sys/socket.h>; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func newAckReader(slots int) *ackReader {
	r := &ackReader{
		buf:  make([]byte, slots*ackSlotSize),
		iovs: make([]unix.Iovec, slots),
		hdrs: make([]mmsghdr, slots),
	}
	for i := range slots {
		r.iovs[i].Base = &r.buf[i*ackSlotSize]
		r.iovs[i].SetLen(ackSlotSize)
		r.hdrs[i].hdr.Iov = &r.iovs[i]
		r.hdrs[i].hdr.SetIovlen(1)
	}
	return r
}

// read takes what is queued on fd, up to one message per slot, without
// waiting: EAGAIN when nothing is.
func (r *ackReader) read(fd int) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd),
			uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		runtime.KeepAlive(r)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, errno
	}
}

// waitReadable waits until fd has something to read: EAGAIN when timeout
// passes first.
func waitReadable(fd int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.EAGAIN
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case n > 0:
			return nil
		}
	}
}

// message is what the i-th slot of the last read holds (cut to the slot
// when longer).
func (r *ackReader) message(i int) []byte {
	n := min(int(r.hdrs[i].len), ackSlotSize)
	return r.buf[i*ackSlotSize : i*ackSlotSize+n]
}

// parseAck reads an acknowledgement: its sequence number and the
// request's errno (0 for success). Anything else is not one (ok false).
func parseAck(b []byte) (seq uint32, errno syscall.Errno, ok bool) {
	if len(b) < unix.NLMSG_HDRLEN+4 || binary.NativeEndian.Uint16(b[4:6]) != unix.NLMSG_ERROR {
		return 0, 0, false
	}
	seq = binary.NativeEndian.Uint32(b[8:12])
	return seq, syscall.Errno(-int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:]))), true
}

// batchOpen opens the batch socket in k's namespace and learns the IPVS
// family's number, once.
func (k *Kernel) batchOpen() error {
	if k.batchSock != nil {
		return nil
	}
	if err := k.batchOpenLocked(); err != nil {
		return &openError{err}
	}
	return nil
}

// openError is a failure to open the socket: its errno (ENOENT when the
// IPVS module is not loaded or the namespace is gone) is not the answer
// to a request, so mapErrno leaves it alone.
type openError struct{ err error }

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

func (k *Kernel) batchOpenLocked() error {
	if k.batchFamily == 0 {
		f, err := netlink.GenlFamilyGet("IPVS")
		if err != nil {
			return fmt.Errorf("looking up the IPVS netlink family: %w", err)
		}
		k.batchFamily = f.ID
	}
	ns := netns.None()
	if k.Netns != "" {
		var err error
		if ns, err = netns.GetFromPath(k.Netns); err != nil {
			return err
		}
		defer ns.Close()
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_GENERIC)
	if err != nil {
		return fmt.Errorf("opening an IPVS netlink socket: %w", err)
	}
	// An error's acknowledgement then carries only the request's header,
	// so a batch of failures fits the receive buffer. Best effort: a
	// kernel before 4.3 lacks it.
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	k.batchSock = s
	return nil
}

// validateWrite checks a write as the single method does.
func validateWrite(w Write) error {
	switch w.Method {
	case MethodAddService:
		return validateService(w.Service)
	case MethodAddDestination:
		if err := validateKey(w.Key); err != nil {
			return err
		}
		return validateDest(w.Key, w.Dest)
	}
	return fmt.Errorf("%s cannot be batched", w.Method)
}

// writeError words a write's error as the single method does.
func writeError(w Write, err error) error {
	switch w.Method {
	case MethodAddService:
		return opError(MethodAddService, w.Service.Key, netip.AddrPort{}, mapErrno(err, ErrNoScheduler))
	default:
		return opError(w.Method, w.Key, w.Dest.Addr, mapErrno(err, ErrNotFound))
	}
}

// appendWrite appends w's request: a netlink header, a generic netlink
// header and the attributes github.com/moby/ipvs' fillService and
// fillDestination write, without an allocation but b's growth.
func appendWrite(b []byte, family uint16, seq uint32, w Write) []byte {
	start := len(b)
	cmd := uint8(cmdNewService)
	key := w.Service
	if w.Method == MethodAddDestination {
		cmd, key = cmdNewDest, Service{Key: w.Key}
	}
	b = appendHeaders(b, family, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, cmd)
	b = appendService(b, &key)
	if w.Method == MethodAddDestination {
		b = appendDest(b, &w.Dest)
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendHeaders appends a request's netlink header, its length 0 until
// the caller sets it, and its generic netlink header.
func appendHeaders(b []byte, family, flags uint16, seq uint32, cmd uint8) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0) // nlmsg_len
	b = binary.NativeEndian.AppendUint16(b, family)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // the kernel fills the port id
	return append(b, cmd, genlVersion, 0, 0)
}

// appendService appends IPVS_CMD_ATTR_SERVICE as toLibService and
// github.com/moby/ipvs' fillService make it: the family; the mark, or the
// protocol, address and port; the scheduler; the flags with an all-ones
// mask; the timeout (0 unless persistent) and the host netmask.
func appendService(b []byte, s *Service) []byte {
	start := len(b)
	b = beginNested(b, attrService)
	family, netmask := uint16(syscall.AF_INET), uint32(netmaskV4)
	if s.Key.Addr.Is6() {
		family, netmask = syscall.AF_INET6, netmaskV6
	}
	b = appendAttrU16(b, svcAF, family)
	if s.Key.IsMark() {
		b = appendAttrU32(b, svcFWMark, s.Key.Mark)
	} else {
		b = appendAttrU16(b, svcProtocol, uint16(s.Key.Proto))
		b = appendAttrAddr(b, svcAddr, s.Key.Addr)
		b = appendAttrBE16(b, svcPort, s.Key.Port)
	}
	b = appendAttrString(b, svcSched, s.Scheduler)
	flags, timeout := uint32(s.Flags&schedFlagsMask), uint32(0)
	if s.Persistent {
		flags, timeout = flags|flagPersistent, s.Timeout
	}
	b = appendAttrU32s(b, svcFlags, flags, 0xffffffff)
	b = appendAttrU32(b, svcTimeout, timeout)
	b = appendAttrU32(b, svcNetmask, netmask)
	return endNested(b, start)
}

// appendDest appends IPVS_CMD_ATTR_DEST as toLibDest and
// github.com/moby/ipvs' fillDestination make it (no family attribute,
// thresholds 0).
func appendDest(b []byte, d *Destination) []byte {
	start := len(b)
	b = beginNested(b, attrDest)
	b = appendAttrAddr(b, destAddr, d.Addr.Addr())
	b = appendAttrBE16(b, destPort, d.Addr.Port())
	b = appendAttrU32(b, destForward, uint32(d.Forward)&libipvs.ConnectionFlagFwdMask)
	b = appendAttrU32(b, destWeight, uint32(d.Weight))
	b = appendAttrU32(b, destUThresh, 0)
	b = appendAttrU32(b, destLThresh, 0)
	return endNested(b, start)
}

// appendAttrAddr appends an address as github.com/moby/ipvs sends it: 4
// bytes for IPv4 (also IPv4-mapped IPv6), 16 for IPv6.
func appendAttrAddr(b []byte, typ uint16, a netip.Addr) []byte {
	if a.Unmap().Is4() {
		v4 := a.Unmap().As4()
		return appendAttr(b, typ, v4[:])
	}
	v6 := a.As16()
	return appendAttr(b, typ, v6[:])
}

func appendAttrU16(b []byte, typ, v uint16) []byte {
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], v)
	return appendAttr(b, typ, p[:])
}

// appendAttrBE16 appends a port: network byte order.
func appendAttrBE16(b []byte, typ, v uint16) []byte {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], v)
	return appendAttr(b, typ, p[:])
}

func appendAttrU32(b []byte, typ uint16, v uint32) []byte {
	var p [4]byte
	binary.NativeEndian.PutUint32(p[:], v)
	return appendAttr(b, typ, p[:])
}

// appendAttrU32s appends two 32-bit values as one attribute (struct
// ip_vs_flags: flags, mask).
func appendAttrU32s(b []byte, typ uint16, v, w uint32) []byte {
	var p [8]byte
	binary.NativeEndian.PutUint32(p[:], v)
	binary.NativeEndian.PutUint32(p[4:], w)
	return appendAttr(b, typ, p[:])
}

// appendAttrString appends a NUL-terminated string.
func appendAttrString(b []byte, typ uint16, v string) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)+1))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(append(b, v...), 0)
	return pad4(b)
}

// appendAttr appends one netlink attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	return pad4(append(b, data...))
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// beginNested starts an attribute whose payload follows, as
// github.com/moby/ipvs nests them (without NLA_F_NESTED, which the
// kernel's IPVS family does not require); endNested, given where it
// started, sets its length.
func beginNested(b []byte, typ uint16) []byte {
	b = binary.NativeEndian.AppendUint16(b, 0)
	return binary.NativeEndian.AppendUint16(b, typ)
}

func endNested(b []byte, start int) []byte {
	binary.NativeEndian.PutUint16(b[start:], uint16(len(b)-start))
	return b
}
