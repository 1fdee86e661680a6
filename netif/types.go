// Package netif owns the node-side plumbing IPVS needs outside the IPVS
// table: the dummy interface that holds the Service addresses and the local
// routes of the Service CIDRs (so the node accepts packets for them), the
// sysctls IPVS relies on, and the node's own local addresses (where
// NodePorts are served).
package netif

import (
	"errors"
	"net/netip"
)

// Errors returned (wrapped) by every implementation.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// DefaultLink is the dummy interface kube-ipvs creates and owns. It differs
// from kube-proxy's kube-ipvs0 so the two never claim each other's addresses.
const DefaultLink = "kipvs0"

// Addrs manages the addresses of the dummy interface.
type Addrs interface {
	// EnsureLink creates the dummy interface if missing and sets it up,
	// like `ip link add NAME type dummy && ip link set NAME up`.
	EnsureLink() error
	// DeleteLink removes the interface and with it every address on it.
	DeleteLink() error
	// ListAddrs returns the addresses bound on the interface; an empty list
	// (no error) when the interface does not exist.
	ListAddrs() ([]netip.Addr, error)
	// AddAddr binds addr as a host address (/32 or /128), like
	// `ip addr add 10.96.0.10/32 dev kipvs0`; ErrExists if already bound.
	AddAddr(netip.Addr) error
	// DelAddr unbinds addr; ErrNotFound if not bound.
	DelAddr(netip.Addr) error
	// ListRoutes returns the prefixes the interface accepts whole: the
	// `local` routes kube-ipvs made on it in the local table (not the host
	// routes of its addresses), sorted; empty (no error) when the
	// interface does not exist.
	ListRoutes() ([]netip.Prefix, error)
	// AddRoute makes the node accept every address of p as its own, like
	// `ip route add local 10.96.0.0/16 dev kipvs0 table local`; ErrExists
	// if the route is there, ErrNotFound without the interface.
	AddRoute(netip.Prefix) error
	// DelRoute removes p's local route; ErrNotFound if there is none.
	DelRoute(netip.Prefix) error
}

// Sysctl reads and writes /proc/sys keys such as "net/ipv4/vs/conntrack".
type Sysctl interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

// AddrSource lists the node's local addresses: those NodePorts may be
// served on.
type AddrSource interface {
	// LocalAddrs returns the addresses of one family (IPv6 if ipv6, else
	// IPv4) bound on the links of the network namespace, sorted and
	// without duplicates, like `ip -br addr`, leaving out the excepted
	// link of the implementation (kube-ipvs' dummy interface) and IPv6
	// link-local addresses. Loopback addresses are included: callers
	// filter them. An empty list has no error.
	LocalAddrs(ipv6 bool) ([]netip.Addr, error)
}
