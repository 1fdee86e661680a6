//go:build linux

package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink/nl"
)

var _ Interface = (*Kernel)(nil)

// Kernel is the kernel's IPVS table, programmed over generic netlink
// through github.com/moby/ipvs (Batch and ListDestinations use a socket of
// their own, and ListServices another). The netlink socket is opened by
// Open or on first use and kept until Close; calls are serialized on it,
// but for ListServices, which may run while another call does (see
// lister). The embedded
// Modules gives the explicit setup steps EnsureModules and EnsureScheduler.
//
// Errors wrap ErrExists (EEXIST), ErrNotFound (ESRCH: no such virtual
// server; ENOENT: no such real server) and ErrNoScheduler (ENOENT from
// adding or updating a virtual server), with the kernel's errno kept in the
// chain.
type Kernel struct {
	Modules
	// Netns is the path of the network namespace to program, such as
	// /var/run/netns/test; "" is the caller's namespace.
	Netns string

	mu     sync.Mutex
	handle *libipvs.Handle
	// newHandle opens a handle; nil is libipvs.New. Tests replace it so
	// they can prove no socket is opened.
	newHandle func(netns string) (*libipvs.Handle, error)
	// batchSock is Batch's and the dumps' own socket
	// (github.com/moby/ipvs sends one message per request and allocates
	// a receive buffer per read), batchFamily the IPVS generic netlink
	// family's number and batchSeq its last sequence number.
	batchSock   *nl.NetlinkSocket
	batchFamily uint16
	batchSeq    uint32
	// dumpBuf is the dumps' receive buffer, kept between calls; acks,
	// batchBuf and batchSeqs are Batch's acknowledgement reader, request
	// buffer and sequence numbers.
	dumpBuf   []byte
	acks      *ackReader
	batchBuf  []byte
	batchSeqs map[uint32]int
	// lister is ListServices' own Kernel (its socket, buffer and lock),
	// made on first use: a full sync dumps the virtual servers in the
	// background while incremental syncs write on this one.
	lister *Kernel
}

// NewKernel returns a Kernel for the caller's network namespace. It has no
// side effects: no socket is opened and no module is loaded.
func NewKernel() *Kernel { return &Kernel{Modules: Modules{Root: "/"}} }

// Open opens the netlink socket now rather than on first use, so a broken
// setup shows at startup. Opening runs github.com/moby/ipvs' own one-time
// `modprobe -va ip_vs`; call EnsureModules first.
func (k *Kernel) Open() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err := k.handleLocked()
	return err
}

// Close closes the netlink socket; a later call opens a new one.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.handle != nil {
		k.handle.Close()
		k.handle = nil
	}
	if k.batchSock != nil {
		k.batchSock.Close()
		k.batchSock = nil
	}
	if k.lister != nil {
		return k.lister.Close()
	}
	return nil
}

func (k *Kernel) handleLocked() (*libipvs.Handle, error) {
	if k.handle != nil {
		return k.handle, nil
	}
	open := k.newHandle
	if open == nil {
		open = libipvs.New
	}
	h, err := open(k.Netns)
	if err != nil {
		return nil, fmt.Errorf("opening IPVS netlink socket: %w", err)
	}
	k.handle = h
	return h, nil
}

// do runs fn on the open handle. A failure that is not an errno from the
// kernel (a broken socket) drops the handle so the next call reopens it.
func (k *Kernel) do(fn func(h *libipvs.Handle) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, err := k.handleLocked()
	if err != nil {
		return err
	}
	err = fn(h)
	var errno syscall.Errno
	if err != nil && !errors.As(err, &errno) {
		h.Close()
		k.handle = nil
	}
	return err
}

// AddService creates a virtual server, like
// `ipvsadm -A -t VIP:PORT -s rr [-p TIMEOUT]` or `ipvsadm -A -f MARK -s rr`;
// ErrExists if the key is taken, ErrNoScheduler if the kernel lacks the
// scheduler.
func (k *Kernel) AddService(s Service) error {
	return k.serviceOp(MethodAddService, s, (*libipvs.Handle).NewService)
}

// UpdateService changes scheduler and persistence of an existing virtual
// server, like `ipvsadm -E …`; ErrNotFound if there is none.
func (k *Kernel) UpdateService(s Service) error {
	return k.serviceOp(MethodUpdateService, s, (*libipvs.Handle).UpdateService)
}

func (k *Kernel) serviceOp(method string, s Service, fn func(*libipvs.Handle, *libipvs.Service) error) error {
	if err := validateService(s); err != nil {
		return opError(method, s.Key, netip.AddrPort{}, err)
	}
	ls := toLibService(s)
	err := k.do(func(h *libipvs.Handle) error { return fn(h, ls) })
	return opError(method, s.Key, netip.AddrPort{}, mapErrno(err, ErrNoScheduler))
}

// DeleteService removes a virtual server and its real servers, like
// `ipvsadm -D -t VIP:PORT`; ErrNotFound if there is none.
func (k *Kernel) DeleteService(key ServiceKey) error {
	if err := validateKey(key); err != nil {
		return opError(MethodDeleteService, key, netip.AddrPort{}, err)
	}
	ls := toLibService(Service{Key: key})
	err := k.do(func(h *libipvs.Handle) error { return h.DelService(ls) })
	return opError(MethodDeleteService, key, netip.AddrPort{}, mapErrno(err, ErrNotFound))
}

// dumpDests is the kernel's dump of one virtual server's real servers,
// counters included, for ListDestinations and ListDestinationStats.
func (k *Kernel) dumpDests(key ServiceKey) ([]*libipvs.Destination, error) {
	if err := validateKey(key); err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, err)
	}
	ls := toLibService(Service{Key: key})
	var raw []*libipvs.Destination
	err := k.do(func(h *libipvs.Handle) (err error) {
		if raw, err = h.GetDestinations(ls); err != nil || len(raw) > 0 {
			return err
		}
		_, err = h.GetService(ls) // an empty dump: tell "none" from "no such virtual server"
		return err
	})
	if err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, mapErrno(err, ErrNotFound))
	}
	return raw, nil
}

// AddDestination adds a real server, like
// `ipvsadm -a -t VIP:PORT -r EP:PORT -m -w 1`; ErrNotFound if the virtual
// server does not exist, ErrExists if the real server is already there.
func (k *Kernel) AddDestination(key ServiceKey, d Destination) error {
	return k.destOp(MethodAddDestination, key, d, (*libipvs.Handle).NewDestination)
}

// UpdateDestination changes weight or forwarding of a real server, like
// `ipvsadm -e …`; ErrNotFound if it or its virtual server does not exist.
func (k *Kernel) UpdateDestination(key ServiceKey, d Destination) error {
	return k.destOp(MethodUpdateDestination, key, d, (*libipvs.Handle).UpdateDestination)
}

// DeleteDestination removes a real server, like
// `ipvsadm -d -t VIP:PORT -r EP:PORT`; ErrNotFound if it or its virtual
// server does not exist.
func (k *Kernel) DeleteDestination(key ServiceKey, addr netip.AddrPort) error {
	d := Destination{Addr: addr}
	return k.destOp(MethodDeleteDestination, key, d, (*libipvs.Handle).DelDestination)
}

func (k *Kernel) destOp(method string, key ServiceKey, d Destination,
	fn func(*libipvs.Handle, *libipvs.Service, *libipvs.Destination) error) error {
	err := validateKey(key)
	if err == nil {
		err = validateDest(key, d)
	}
	if err != nil {
		return opError(method, key, d.Addr, err)
	}
	ls, ld := toLibService(Service{Key: key}), toLibDest(d)
	err = k.do(func(h *libipvs.Handle) error { return fn(h, ls, ld) })
	return opError(method, key, d.Addr, mapErrno(err, ErrNotFound))
}

// mapErrno turns the kernel's errno into our errors, keeping the errno in
// the chain: EEXIST is ErrExists, ESRCH (no such virtual server) is
// ErrNotFound, ENOENT is onENOENT (no such real server, or no such
// scheduler when adding or updating a virtual server).
func mapErrno(err error, onENOENT error) error {
	var (
		sentinel error
		open     *openError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &open):
		return err
	case errors.Is(err, syscall.EEXIST):
		sentinel = ErrExists
	case errors.Is(err, syscall.ESRCH):
		sentinel = ErrNotFound
	case errors.Is(err, syscall.ENOENT):
		sentinel = onENOENT
	default:
		return err
	}
	return fmt.Errorf("%w (%w)", sentinel, err)
}

// The kernel's IP_VS_SVC_F_PERSISTENT flag and the host netmasks kube-proxy
// also uses (a mask for IPv4, a prefix length for IPv6).
const (
	flagPersistent = 0x1
	netmaskV4      = 0xffffffff
	netmaskV6      = 128
)

// toLibService converts a virtual server for github.com/moby/ipvs. Only
// Key is needed to find one; the timeout is sent only when persistent. A
// firewall-mark virtual server is sent as its family and FWMark, with no
// address, protocol or port (github.com/moby/ipvs sends none of them when
// FWMark is set).
func toLibService(s Service) *libipvs.Service {
	ls := &libipvs.Service{
		SchedName:     s.Scheduler,
		AddressFamily: syscall.AF_INET,
		Netmask:       netmaskV4,
	}
	if s.Key.IsMark() {
		ls.FWMark = s.Key.Mark
	} else {
		ls.Address, ls.Protocol, ls.Port = net.IP(s.Key.Addr.AsSlice()), uint16(s.Key.Proto), s.Key.Port
	}
	if s.Key.Addr.Is6() {
		ls.AddressFamily, ls.Netmask = syscall.AF_INET6, netmaskV6
	}
	ls.Flags = uint32(s.Flags & schedFlagsMask)
	if s.Persistent {
		ls.Flags, ls.Timeout = ls.Flags|flagPersistent, s.Timeout
	}
	return ls
}

// fromLibService converts a virtual server from a kernel dump; false for
// one whose family or address is not plain IPv4 or IPv6.
func fromLibService(ls *libipvs.Service) (Service, bool) {
	if ls == nil {
		return Service{}, false
	}
	key, ok := keyFromLib(ls)
	if !ok {
		return Service{}, false
	}
	s := Service{
		Key:        key,
		Scheduler:  ls.SchedName,
		Persistent: ls.Flags&flagPersistent != 0,
		Timeout:    ls.Timeout,
		// The kernel also reports internal flags (IP_VS_SVC_F_HASHED);
		// only the scheduler flags are ours to compare.
		Flags: SchedFlags(ls.Flags) & schedFlagsMask,
	}
	return normalize(s), true
}

// keyFromLib returns the key of a virtual server from a kernel dump. The
// kernel reports a firewall-mark virtual server with its family and mark
// only, so github.com/moby/ipvs lists it with FWMark set, Address nil and
// Protocol and Port 0; it becomes MarkKey of that family.
func keyFromLib(ls *libipvs.Service) (ServiceKey, bool) {
	if ls.FWMark != 0 {
		switch ls.AddressFamily {
		case syscall.AF_INET:
			return MarkKey(ls.FWMark, false), true
		case syscall.AF_INET6:
			return MarkKey(ls.FWMark, true), true
		}
		return ServiceKey{}, false
	}
	addr, ok := addrFromLib(ls.AddressFamily, ls.Address)
	if !ok {
		return ServiceKey{}, false
	}
	return ServiceKey{Addr: addr, Proto: Protocol(ls.Protocol), Port: ls.Port}, true
}

// addrFromLib converts an address of the given family; false when the
// family is not AF_INET/AF_INET6 or the bytes do not match it.
func addrFromLib(family uint16, ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	switch family {
	case syscall.AF_INET:
		a = a.Unmap()
		return a, a.Is4()
	case syscall.AF_INET6:
		return a, a.Is6() && !a.Is4In6()
	}
	return netip.Addr{}, false
}

// toLibDest converts a real server for github.com/moby/ipvs.
func toLibDest(d Destination) *libipvs.Destination {
	ld := &libipvs.Destination{
		Address:         net.IP(d.Addr.Addr().AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: uint32(d.Forward),
		AddressFamily:   syscall.AF_INET,
	}
	if d.Addr.Addr().Is6() {
		ld.AddressFamily = syscall.AF_INET6
	}
	return ld
}

// fromLibDest converts a real server of key from a kernel dump; false when
// its address cannot be represented or is of another family than key.
func fromLibDest(key ServiceKey, ld *libipvs.Destination) (Destination, bool) {
	if ld == nil {
		return Destination{}, false
	}
	addr, ok := addrFromLib(ld.AddressFamily, ld.Address)
	if !ok || addr.Is4() != key.Addr.Is4() {
		return Destination{}, false
	}
	return Destination{
		Addr:          netip.AddrPortFrom(addr, ld.Port),
		Weight:        ld.Weight,
		Forward:       Forward(ld.ConnectionFlags & libipvs.ConnFwdMask),
		ActiveConns:   ld.ActiveConnections,
		InactiveConns: ld.InactiveConnections,
	}, true
}

// SetTimeouts sets the kernel's IPVS connection timeouts, like
// `ipvsadm --set TCP TCPFIN UDP`; a zero duration leaves that timeout as it
// is. It is a setup step, not part of Interface: the values are global to
// the network namespace.
func (k *Kernel) SetTimeouts(tcp, tcpFin, udp time.Duration) error {
	if tcp == 0 && tcpFin == 0 && udp == 0 {
		return nil
	}
	err := k.do(func(h *libipvs.Handle) error {
		return h.SetConfig(&libipvs.Config{TimeoutTCP: tcp, TimeoutTCPFin: tcpFin, TimeoutUDP: udp})
	})
	if err != nil {
		return fmt.Errorf("setting IPVS timeouts: %w", err)
	}
	return nil
}
