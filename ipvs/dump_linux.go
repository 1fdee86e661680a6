//go:build linux

package ipvs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// The generic netlink commands and attributes of <linux/ip_vs.h> the
// dumps read.
const (
	cmdGetService = 4 // IPVS_CMD_GET_SERVICE
	cmdGetDest    = 8 // IPVS_CMD_GET_DEST

	svcFlagsAttr = 7 // IPVS_SVC_ATTR_FLAGS: struct ip_vs_flags, flags then mask

	destActiveConns = 7  // IPVS_DEST_ATTR_ACTIVE_CONNS
	destInactConns  = 8  // IPVS_DEST_ATTR_INACT_CONNS
	destFamily      = 11 // IPVS_DEST_ATTR_ADDR_FAMILY

	// nlaTypeMask clears NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	nlaTypeMask = 0x3fff

	// dumpBufSize is the receive buffer a dump reads into, allocated
	// once per Kernel: a netlink dump message never exceeds it.
	dumpBufSize = 64 << 10
)

// ListServices returns every virtual server in the kernel, sorted by key,
// like `ipvsadm -Ln`: address virtual servers and firewall-mark ones
// (MarkKey). Any whose family or address cannot be represented is left
// out.
//
// It reads the kernel's dump on a socket of its own (k's lister), so it
// may run while another call does, into a buffer kept for the next call,
// and converts each message as it comes (github.com/moby/ipvs allocates a
// receive buffer per read and every attribute of every message before
// converting).
//
// A virtual server appears once even when a write lands between two parts
// of the dump: the kernel resumes a dump at the count of virtual servers
// it has sent, so one added in an earlier hash bucket meanwhile makes it
// send again the one at that count. The later copy is kept.
func (k *Kernel) ListServices() ([]Service, error) {
	l := k.listerOf()
	var out []Service
	err := l.read(func() error {
		return l.request(cmdGetService, unix.NLM_F_DUMP, nil, attrService, func(attrs []byte) {
			if s, ok := fromLibService(parseService(attrs)); ok {
				out = append(out, s)
			}
		})
	})
	if err != nil {
		return nil, opError(MethodListServices, ServiceKey{}, netip.AddrPort{}, mapErrno(err, ErrNotFound))
	}
	slices.SortStableFunc(out, func(a, b Service) int { return a.Key.Compare(b.Key) })
	return lastOfEachKey(out), nil
}

// lastOfEachKey drops from sorted, whose equal keys are in the order they
// were read, all but the last service of each key.
func lastOfEachKey(sorted []Service) []Service {
	out := sorted[:0]
	for i, s := range sorted {
		if i+1 < len(sorted) && sorted[i+1].Key == s.Key {
			continue
		}
		out = append(out, s)
	}
	return out
}

// listerOf returns k's lister, making it on first use: a Kernel of k's
// namespace that only ListServices uses, with a socket and a lock of its
// own.
func (k *Kernel) listerOf() *Kernel {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lister == nil {
		k.lister = &Kernel{Netns: k.Netns, batchFamily: k.batchFamily}
	}
	return k.lister
}

// ListDestinations returns the real servers of one virtual server, sorted
// by address, like `ipvsadm -Ln -t VIP:PORT`; ErrNotFound if the virtual
// server does not exist. Real servers whose address is of another family
// than the virtual server's are left out.
//
// It reads as ListServices does: a full resync lists every virtual
// server's real servers in turn, and github.com/moby/ipvs' 64 KB receive
// buffer per call came to a third of a gigabyte per resync of 5,000.
func (k *Kernel) ListDestinations(key ServiceKey) ([]Destination, error) {
	if err := validateKey(key); err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, err)
	}
	var ds []Destination
	err := k.read(func() error {
		err := k.request(cmdGetDest, unix.NLM_F_DUMP, &key, attrDest, func(attrs []byte) {
			if d, ok := parseDest(key, attrs); ok {
				ds = append(ds, d)
			}
		})
		if err != nil || len(ds) > 0 {
			return err
		}
		// The kernel answers the dump of a virtual server that does not
		// exist with no real server, not an error: ask for it.
		return k.request(cmdGetService, 0, &key, attrService, func([]byte) {})
	})
	if err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, mapErrno(err, ErrNotFound))
	}
	sortDests(ds)
	return ds, nil
}

// read runs fn on the open own socket, serialized with every other call;
// a failure that is not the kernel's errno (a broken socket) closes it,
// so the next call opens another.
func (k *Kernel) read(fn func() error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.batchOpen(); err != nil {
		return err
	}
	err := fn()
	var errno syscall.Errno
	if err != nil && !errors.As(err, &errno) && k.batchSock != nil {
		k.batchSock.Close()
		k.batchSock = nil
	}
	return err
}

// request sends one generic netlink request, about key's virtual server
// if key is not nil, and hands the payload of each attribute of type
// attr of the answers to each, until the answer ends: the dump's
// NLMSG_DONE, a single answer, or an error (the kernel's errno).
func (k *Kernel) request(cmd uint8, flags uint16, key *ServiceKey, attr uint16, each func([]byte)) error {
	k.batchSeq++
	seq := k.batchSeq
	b := appendHeaders(make([]byte, 0, 128), k.batchFamily, unix.NLM_F_REQUEST|flags, seq, cmd)
	if key != nil {
		b = appendService(b, &Service{Key: *key})
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	fd := k.batchSock.GetFd()
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if k.dumpBuf == nil {
		k.dumpBuf = make([]byte, dumpBufSize)
	}
	for {
		n, _, rflags, _, err := unix.Recvmsg(fd, k.dumpBuf, nil, 0)
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		if rflags&unix.MSG_TRUNC != 0 {
			return fmt.Errorf("receiving: a message longer than %d bytes", len(k.dumpBuf))
		}
		done, err := walkAnswer(k.dumpBuf[:n], seq, flags&unix.NLM_F_DUMP != 0, attr, each)
		if done || err != nil {
			return err
		}
	}
}

// walkAnswer walks the netlink messages of one read, handing each the
// payload of every attribute of type attr; those of another sequence
// number are skipped (the late answer of an earlier request). It reports
// whether the answer ended.
func walkAnswer(b []byte, seq uint32, dump bool, attr uint16, each func([]byte)) (bool, error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("a netlink message of %d bytes in %d", l, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		mseq := binary.NativeEndian.Uint32(b[8:12])
		data := b[unix.NLMSG_HDRLEN:l]
		b = b[min(nlAlign(l), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return false, errors.New("a short netlink error")
			}
			if errno := -int32(binary.NativeEndian.Uint32(data[:4])); errno != 0 {
				return false, syscall.Errno(errno)
			}
			return true, nil // an acknowledgement
		}
		if len(data) < 4 { // the generic netlink header
			continue
		}
		walkAttrs(data[4:], func(typ uint16, v []byte) {
			if typ == attr {
				each(v)
			}
		})
		if !dump {
			return true, nil
		}
	}
	return false, nil
}

// walkAttrs calls f with the type (without the nested and byte-order
// flags) and payload of each netlink attribute in b.
func walkAttrs(b []byte, f func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[2:4])&nlaTypeMask, b[unix.SizeofRtAttr:l])
		b = b[min(nlAlign(l), len(b)):]
	}
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

// parseDest reads one IPVS_CMD_ATTR_DEST of key's virtual server; false
// when its address is missing, malformed or of another family. A kernel
// before 3.18 sends no family: the real server then has the virtual
// server's.
func parseDest(key ServiceKey, attrs []byte) (Destination, bool) {
	var (
		d      Destination
		raw    []byte
		family uint16
		port   uint16
	)
	walkAttrs(attrs, func(typ uint16, v []byte) {
		switch typ {
		case destAddr:
			raw = v
		case destPort:
			port = be16(v)
		case destForward:
			d.Forward = Forward(u32(v) & libipvs.ConnFwdMask)
		case destWeight:
			d.Weight = int(int32(u32(v)))
		case destActiveConns:
			d.ActiveConns = int(u32(v))
		case destInactConns:
			d.InactiveConns = int(u32(v))
		case destFamily:
			family = u16(v)
		}
	})
	if family == 0 {
		family = syscall.AF_INET6
		if key.Addr.Is4() {
			family = syscall.AF_INET
		}
	}
	var a netip.Addr
	switch {
	case family == syscall.AF_INET && len(raw) >= 4:
		a = netip.AddrFrom4([4]byte(raw[:4]))
	case family == syscall.AF_INET6 && len(raw) >= 16:
		a = netip.AddrFrom16([16]byte(raw[:16]))
	default:
		return Destination{}, false
	}
	if a.Is4() != key.Addr.Is4() || a.Is4In6() {
		return Destination{}, false
	}
	d.Addr = netip.AddrPortFrom(a, port)
	return d, true
}

// parseService reads one IPVS_CMD_ATTR_SERVICE as github.com/moby/ipvs'
// assembleService does (the flags are the first word of struct
// ip_vs_flags), for fromLibService. Its address points into attrs, which
// fromLibService copies out of.
func parseService(attrs []byte) *libipvs.Service {
	var (
		s   libipvs.Service
		raw []byte
	)
	walkAttrs(attrs, func(typ uint16, v []byte) {
		switch typ {
		case svcAF:
			s.AddressFamily = u16(v)
		case svcProtocol:
			s.Protocol = u16(v)
		case svcAddr:
			raw = v
		case svcPort:
			s.Port = be16(v)
		case svcFWMark:
			s.FWMark = u32(v)
		case svcSched:
			s.SchedName = schedName(v)
		case svcFlagsAttr:
			s.Flags = u32(v)
		case svcTimeout:
			s.Timeout = u32(v)
		case svcNetmask:
			s.Netmask = u32(v)
		}
	})
	switch {
	case s.AddressFamily == syscall.AF_INET && len(raw) >= 4:
		s.Address = net.IP(raw[:4])
	case s.AddressFamily == syscall.AF_INET6 && len(raw) >= 16:
		s.Address = net.IP(raw[:16])
	}
	return &s
}

// schedName is a scheduler's name from its NUL-terminated attribute, the
// kernel's own names (kernelSchedulers) without an allocation each.
func schedName(v []byte) string {
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	for _, n := range kernelSchedulers {
		if string(v) == n {
			return n
		}
	}
	return string(v)
}

// u16, u32 and be16 read an attribute's value; 0 when it is too short.
func u16(v []byte) uint16 {
	if len(v) < 2 {
		return 0
	}
	return binary.NativeEndian.Uint16(v)
}

func u32(v []byte) uint32 {
	if len(v) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(v)
}

func be16(v []byte) uint16 {
	if len(v) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}
