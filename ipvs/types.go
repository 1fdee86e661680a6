// Package ipvs wraps the kernel's IP Virtual Server table behind a small
// interface in kube-ipvs' own types. The real implementation talks netlink
// through github.com/moby/ipvs; Fake is a stateful in-memory stand-in for
// tests. Both render their table with Dump, sorted like `ipvsadm -Sn`.
package ipvs

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Protocol is an IP protocol number as IPVS uses it.
type Protocol uint16

// The protocols Kubernetes Services can carry.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// String returns the lower-case name used in logs ("tcp").
func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", uint16(p))
}

// Flag returns ipvsadm's option for the protocol ("-t", "-u", "--sctp-service").
func (p Protocol) Flag() string {
	switch p {
	case TCP:
		return "-t"
	case UDP:
		return "-u"
	case SCTP:
		return "--sctp-service"
	}
	return fmt.Sprintf("--proto-%d", uint16(p))
}

// ServiceKey identifies a virtual server. It is one of two kinds:
//
//   - an address virtual server, keyed by address, protocol and port, like
//     `-t 10.96.0.10:53` in ipvsadm; Mark is 0.
//   - a firewall-mark virtual server, keyed by the packet mark netfilter set
//     (`iptables -t mangle … -j MARK --set-mark 8193`), like `-f 8193` in
//     ipvsadm; build it with MarkKey. Mark is not 0, Addr is the unspecified
//     address of the family (0.0.0.0 or ::), which is how the family is
//     carried, and Proto and Port are 0.
//
// Keys are comparable: two keys are the same virtual server exactly when
// they are ==.
type ServiceKey struct {
	Addr  netip.Addr
	Proto Protocol
	Port  uint16
	// Mark is the firewall mark of a firewall-mark virtual server; 0 for
	// an address virtual server.
	Mark uint32
}

// MarkKey returns the key of the firewall-mark virtual server of mark in
// one family, like `-f 8193` (IPv4) or `-f 8193 -6` (IPv6) in ipvsadm. The
// mark must not be 0: MarkKey(0, …) is no valid key of either kind, and
// every Interface method refuses it.
func MarkKey(mark uint32, ipv6 bool) ServiceKey {
	addr := netip.IPv4Unspecified()
	if ipv6 {
		addr = netip.IPv6Unspecified()
	}
	return ServiceKey{Addr: addr, Mark: mark}
}

// IsMark reports whether k is a firewall-mark virtual server (Mark != 0).
func (k ServiceKey) IsMark() bool { return k.Mark != 0 }

// AddrPort returns the key's address and port. It is meaningful for an
// address virtual server only; for a firewall-mark one it is the
// unspecified address with port 0.
func (k ServiceKey) AddrPort() netip.AddrPort { return netip.AddrPortFrom(k.Addr, k.Port) }

// String renders the key as `ipvsadm -Sn` does: "-t 10.96.0.10:53",
// "-u [fd00::a]:53", and for firewall marks "-f 8193" (IPv4) and
// "-f 8193 -6" (IPv6).
func (k ServiceKey) String() string {
	if k.IsMark() {
		if k.Addr.Is6() {
			return fmt.Sprintf("-f %d -6", k.Mark)
		}
		return fmt.Sprintf("-f %d", k.Mark)
	}
	return k.Proto.Flag() + " " + k.AddrPort().String()
}

// Compare is a total order of keys, consistent with ==: by mark first, so
// every address virtual server (mark 0) comes before every firewall-mark
// one, as `ipvsadm -Sn` lists them; then by address (IPv4 before IPv6, so
// the IPv4 virtual server of a mark comes before the IPv6 one), protocol
// and port.
func (k ServiceKey) Compare(o ServiceKey) int {
	return cmp.Or(
		cmp.Compare(k.Mark, o.Mark),
		k.Addr.Compare(o.Addr),
		cmp.Compare(k.Proto, o.Proto),
		cmp.Compare(k.Port, o.Port),
	)
}

// Service is a virtual server, like
// `ipvsadm -A -t VIP:PORT -s mh [-p 10800] [-b mh-port]` or, for a
// firewall mark, `ipvsadm -A -f 8193 -s rr`.
type Service struct {
	Key       ServiceKey
	Scheduler string // "rr", "wlc", … as the kernel names it
	// Persistent, when true, pins a client to one real server for Timeout
	// seconds (ipvsadm -p); it is how ClientIP session affinity is done.
	Persistent bool
	Timeout    uint32
	// Flags are the scheduler flags (ipvsadm -b).
	Flags SchedFlags
}

// SchedFlags are the three scheduler flags of a virtual server
// (IP_VS_SVC_F_SCHED1..3). What each means depends on the scheduler: for
// sh and mh, SchedFlag1 is "fallback" (skip real servers of weight 0) and
// SchedFlag2 is "port" (hash the source port too).
type SchedFlags uint32

// The scheduler flags, as the kernel numbers them.
const (
	SchedFlag1 SchedFlags = 0x0008
	SchedFlag2 SchedFlags = 0x0010
	SchedFlag3 SchedFlags = 0x0020

	schedFlagsMask = SchedFlag1 | SchedFlag2 | SchedFlag3
)

// Names returns the flags as ipvsadm names them for the scheduler, in
// ipvsadm's order: "mh-fallback", "mh-port" for mh (likewise sh),
// "flag-1".."flag-3" for others.
func (f SchedFlags) Names(scheduler string) []string {
	var names []string
	for i, bit := range []SchedFlags{SchedFlag1, SchedFlag2, SchedFlag3} {
		if f&bit == 0 {
			continue
		}
		switch {
		case (scheduler == "sh" || scheduler == "mh") && i == 0:
			names = append(names, scheduler+"-fallback")
		case (scheduler == "sh" || scheduler == "mh") && i == 1:
			names = append(names, scheduler+"-port")
		default:
			names = append(names, fmt.Sprintf("flag-%d", i+1))
		}
	}
	return names
}

// ParseSchedFlags reads ipvsadm's -b value ("mh-port", "sh-fallback,sh-port",
// "flag-2"); any scheduler's prefix is accepted.
func ParseSchedFlags(s string) (SchedFlags, error) {
	var f SchedFlags
	for name := range strings.SplitSeq(s, ",") {
		_, which, _ := strings.Cut(name, "-")
		switch which {
		case "fallback", "1":
			f |= SchedFlag1
		case "port", "2":
			f |= SchedFlag2
		case "3":
			f |= SchedFlag3
		default:
			return 0, fmt.Errorf("unknown scheduler flag %q", name)
		}
	}
	return f, nil
}

// Forward is how a real server is reached. kube-ipvs uses Masquerade (NAT).
type Forward uint32

// Forwarding methods, as the kernel numbers them.
const (
	Masquerade Forward = 0
	Local      Forward = 1
	Tunnel     Forward = 2
	Route      Forward = 3
)

// Flag returns ipvsadm's option for the method ("-m", "-g", "-i").
func (f Forward) Flag() string {
	switch f {
	case Masquerade:
		return "-m"
	case Tunnel:
		return "-i"
	case Route, Local:
		return "-g"
	}
	return fmt.Sprintf("--fwd-%d", uint32(f))
}

// Destination is a real server of a virtual server, like
// `ipvsadm -a -t VIP:80 -r 10.244.1.5:8080 -m -w 1`.
type Destination struct {
	Addr    netip.AddrPort
	Weight  int
	Forward Forward
	// ActiveConns and InactiveConns are the connection counts the kernel
	// reported (ipvsadm -Ln's ActiveConn and InActConn) when the real
	// server was listed. They are observations: writes ignore them, and
	// SameConfig does not compare them.
	ActiveConns, InactiveConns int
}

// SameConfig reports whether d and o program the same real server: same
// address, weight and forwarding, whatever their connection counts.
func (d Destination) SameConfig(o Destination) bool {
	return d.Addr == o.Addr && d.Weight == o.Weight && d.Forward == o.Forward
}

// Conns is the number of connections the kernel counted, active or not.
func (d Destination) Conns() int { return d.ActiveConns + d.InactiveConns }

// Errors returned (wrapped) by every Interface implementation.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrNoScheduler means the kernel has no scheduler of that name (the
	// ip_vs_<name> module is neither loaded nor built in); AddService and
	// UpdateService return it, as does Kernel.EnsureScheduler.
	ErrNoScheduler = errors.New("scheduler not available")
)

// Interface is the IPVS table. Every method is one kernel round trip
// (ListDestinations one dump per virtual server). ListServices may be
// called while another method runs, from another goroutine: a full sync
// dumps the virtual servers in the background.
type Interface interface {
	// ListServices returns every virtual server in the kernel, ours or not.
	ListServices() ([]Service, error)
	// AddService creates a virtual server; ErrExists if the key is taken.
	AddService(Service) error
	// UpdateService changes scheduler and persistence of an existing one.
	UpdateService(Service) error
	// DeleteService removes a virtual server and its real servers.
	DeleteService(ServiceKey) error
	// ListDestinations returns the real servers of one virtual server.
	ListDestinations(ServiceKey) ([]Destination, error)
	// AddDestination adds a real server; ErrExists if already there.
	AddDestination(ServiceKey, Destination) error
	// UpdateDestination changes weight or forwarding of a real server.
	UpdateDestination(ServiceKey, Destination) error
	// DeleteDestination removes a real server.
	DeleteDestination(ServiceKey, netip.AddrPort) error
}

// Batcher is an Interface that can make many writes in one request to
// the kernel, as a node's first sync makes thousands.
type Batcher interface {
	// Batch runs ws in order, each as its method would (AddService or
	// AddDestination), and returns one error per write, nil where it took
	// effect: a write that fails does not stop the next.
	Batch(ws []Write) []error
}

// Write is one write of a batch: AddService(Service), or
// AddDestination(Key, Dest).
type Write struct {
	Method  string // MethodAddService or MethodAddDestination
	Service Service
	Key     ServiceKey
	Dest    Destination
}

// Schedulers lists the schedulers kube-ipvs accepts in its configuration.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "mh", "sed", "nq"}
