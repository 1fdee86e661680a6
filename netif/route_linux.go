//go:build linux

package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// localRoute is the route that makes the node accept every address of p
// on link: `ip route add local P dev kipvs0 table local proto static`.
func localRoute(link int, p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link,
		Dst:       &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Table:     unix.RT_TABLE_LOCAL,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  unix.RTPROT_STATIC,
	}
}

// ListRoutes returns the local routes kube-ipvs made on the interface,
// IPv4 and IPv6, sorted, like `ip route show table local type local dev
// kipvs0 proto static` (and `ip -6 …`): the host routes the kernel adds for
// bound addresses (proto kernel) are not listed. Empty (no error) when the
// interface does not exist.
func (d *Dummy) ListRoutes() ([]netip.Prefix, error) {
	l, err := d.link()
	if errors.Is(err, ErrNotFound) {
		return []netip.Prefix{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing local routes: %w", err)
	}
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Protocol: unix.RTPROT_STATIC}
	mask := netlink.RT_FILTER_OIF | netlink.RT_FILTER_TABLE | netlink.RT_FILTER_TYPE | netlink.RT_FILTER_PROTOCOL
	raw, err := dump(func() ([]netlink.Route, error) { return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, mask) })
	if err != nil {
		return nil, fmt.Errorf("listing local routes of %s: %w", d.name, err)
	}
	set := map[netip.Prefix]bool{}
	for _, r := range raw {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		set[netip.PrefixFrom(a.Unmap(), bits)] = true
	}
	return sortedPrefixes(set), nil
}

// AddRoute makes the node accept every address of p as its own, like
// `ip route add local 10.96.0.0/16 dev kipvs0 table local proto static`;
// ErrExists if the route is there, ErrNotFound without the interface.
func (d *Dummy) AddRoute(p netip.Prefix) error {
	if err := validatePrefix(p); err != nil {
		return routeError(verbAdd, p, d.name, err)
	}
	l, err := d.link()
	if err == nil {
		err = netlink.RouteAdd(localRoute(l.Attrs().Index, p))
		if errors.Is(err, syscall.EEXIST) {
			err = fmt.Errorf("%w (%w)", ErrExists, err)
		}
	}
	return routeError(verbAdd, p, d.name, err)
}

// DelRoute removes the local route of p, like `ip route del local
// 10.96.0.0/16 dev kipvs0 table local`; ErrNotFound if there is none or
// the interface does not exist.
func (d *Dummy) DelRoute(p netip.Prefix) error {
	if err := validatePrefix(p); err != nil {
		return routeError(verbDel, p, d.name, err)
	}
	l, err := d.link()
	if err == nil {
		err = netlink.RouteDel(localRoute(l.Attrs().Index, p))
		if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV) {
			err = fmt.Errorf("%w (%w)", ErrNotFound, err)
		}
	}
	return routeError(verbDel, p, d.name, err)
}
