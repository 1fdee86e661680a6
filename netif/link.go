//go:build linux

package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

var _ Addrs = (*Dummy)(nil)

// ifaFNoDAD is the kernel's IFA_F_NODAD: an IPv6 address bound with it is
// usable at once, without duplicate address detection.
const ifaFNoDAD = 0x02

// dumpRetries bounds how often an address dump interrupted by a concurrent
// change is repeated.
const dumpRetries = 3

// Dummy manages a dummy interface and its host addresses in the caller's
// network namespace, over rtnetlink. It never touches a link of that name
// that is not a dummy. Errors wrap ErrExists and ErrNotFound, with the
// kernel's errno kept in the chain.
type Dummy struct {
	name string
}

// NewDummy returns a Dummy for the interface name ("" is DefaultLink). It
// has no side effects: nothing is created until EnsureLink.
func NewDummy(name string) *Dummy {
	if name == "" {
		name = DefaultLink
	}
	return &Dummy{name: name}
}

// Name returns the interface name.
func (d *Dummy) Name() string { return d.name }

// link returns the interface; ErrNotFound if there is none.
func (d *Dummy) link() (netlink.Link, error) {
	l, err := netlink.LinkByName(d.name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("link %s: %w", d.name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", d.name, err)
	}
	return l, nil
}

// dummy returns the interface if it exists and is a dummy.
func (d *Dummy) dummy() (netlink.Link, error) {
	l, err := d.link()
	if err != nil {
		return nil, err
	}
	if l.Type() != "dummy" {
		return nil, fmt.Errorf("link %s exists and is a %q, not a dummy; kube-ipvs will not use or change it", d.name, l.Type())
	}
	return l, nil
}

// EnsureLink creates the dummy interface if missing and sets it up, like
// `ip link add kipvs0 type dummy && ip link set kipvs0 up`. It is an error
// if a link of that name exists and is not a dummy.
func (d *Dummy) EnsureLink() error {
	l, err := d.dummy()
	if errors.Is(err, ErrNotFound) {
		add := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: d.name}}
		if err := netlink.LinkAdd(add); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("creating dummy link %s: %w", d.name, err)
		}
		l, err = d.dummy()
	}
	if err != nil {
		return fmt.Errorf("ensuring link: %w", err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting link %s up: %w", d.name, err)
	}
	return nil
}

// DeleteLink removes the dummy interface and every address on it, like
// `ip link del kipvs0`; ErrNotFound if it does not exist. A link of that
// name that is not a dummy is left alone, with an error.
func (d *Dummy) DeleteLink() error {
	l, err := d.dummy()
	if err == nil {
		err = netlink.LinkDel(l)
		if errors.Is(err, syscall.ENODEV) {
			err = fmt.Errorf("link %s: %w (%w)", d.name, ErrNotFound, err)
		}
	}
	if err != nil {
		return fmt.Errorf("deleting link: %w", err)
	}
	return nil
}

// ListAddrs returns the addresses bound on the interface, IPv4 and IPv6,
// sorted, like `ip -br addr show kipvs0`; empty (no error) when the
// interface does not exist. IPv6 link-local addresses (fe80::/10), which
// the kernel assigns by itself, are left out: kube-ipvs never binds one.
func (d *Dummy) ListAddrs() ([]netip.Addr, error) {
	l, err := d.link()
	if errors.Is(err, ErrNotFound) {
		return []netip.Addr{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	raw, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", d.name, err)
	}
	return addrsFromNetlink(raw), nil
}

// addrsFromNetlink converts, filters link-local IPv6, dedupes and sorts.
func addrsFromNetlink(raw []netlink.Addr) []netip.Addr {
	set := map[netip.Addr]bool{}
	for _, a := range raw {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		set[ip] = true
	}
	return sortedAddrs(set)
}

// hostAddr returns addr as a host route netlink address: /32 or /128,
// IPv6 without duplicate address detection.
func hostAddr(addr netip.Addr) *netlink.Addr {
	bits := addr.BitLen()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(bits, bits)}}
	if addr.Is6() {
		a.Flags = ifaFNoDAD
	}
	return a
}

// AddAddr binds addr as a host address, like
// `ip addr add 10.96.0.10/32 dev kipvs0` (IPv6 with nodad); ErrExists if
// already bound, ErrNotFound if the interface does not exist.
func (d *Dummy) AddAddr(addr netip.Addr) error {
	if err := validateAddr(addr); err != nil {
		return addrError(verbAdd, addr, d.name, err)
	}
	l, err := d.link()
	if err == nil {
		err = netlink.AddrAdd(l, hostAddr(addr))
		if errors.Is(err, syscall.EEXIST) {
			err = fmt.Errorf("%w (%w)", ErrExists, err)
		}
	}
	return addrError(verbAdd, addr, d.name, err)
}

// DelAddr unbinds addr, like `ip addr del 10.96.0.10/32 dev kipvs0`;
// ErrNotFound if it is not bound or the interface does not exist.
func (d *Dummy) DelAddr(addr netip.Addr) error {
	if err := validateAddr(addr); err != nil {
		return addrError(verbDel, addr, d.name, err)
	}
	l, err := d.link()
	if err == nil {
		err = netlink.AddrDel(l, hostAddr(addr))
		if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) {
			err = fmt.Errorf("%w (%w)", ErrNotFound, err)
		}
	}
	return addrError(verbDel, addr, d.name, err)
}
