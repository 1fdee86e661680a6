//go:build linux

package netif

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
)

// LocalAddrs returns the addresses of one family (IPv6 if ipv6, else IPv4)
// bound on every link of the caller's network namespace except the link
// named exceptLink ("" excepts none), sorted and without duplicates, like
// `ip -br -4 addr` less that link's lines. An address bound both on
// exceptLink and on another link is listed. IPv6 link-local addresses
// (fe80::/10) are left out; loopback addresses are not. It reads two
// dumps, the addresses then the links: an address whose link is gone by
// the second is left out, as it is gone too.
func LocalAddrs(ipv6 bool, exceptLink string) ([]netip.Addr, error) {
	family := netlink.FAMILY_V4
	if ipv6 {
		family = netlink.FAMILY_V6
	}
	raw, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("listing local %s addresses: %w", familyName(ipv6), err)
	}
	links, err := dump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("listing local %s addresses: listing links: %w", familyName(ipv6), err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return localAddrs(raw, names, exceptLink, ipv6), nil
}

// localAddrs keeps the addresses of raw of the family that are on a link
// of names other than exceptLink.
func localAddrs(raw []netlink.Addr, names map[int]string, exceptLink string, ipv6 bool) []netip.Addr {
	var kept []netlink.Addr
	for _, a := range raw {
		if name, ok := names[a.LinkIndex]; ok && name != exceptLink {
			kept = append(kept, a)
		}
	}
	return slices.DeleteFunc(addrsFromNetlink(kept), func(a netip.Addr) bool { return a.Is6() != ipv6 })
}

// dump runs a netlink dump, again when a concurrent change interrupted it.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for range dumpRetries {
		out, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

// WatchAddrs calls changed after every address added to or removed from a
// link of the caller's network namespace, like `ip monitor address`,
// except those of the link named exceptLink ("" excepts none) and IPv6
// link-local addresses: what LocalAddrs leaves out. The link of an event
// is told by its name when the event arrives (its index is remembered), so
// a dummy interface deleted and created again stays excepted; when the
// link is already gone and was not known as exceptLink, changed is called,
// as a call too many costs a read and one too few a stale list.
//
// changed runs on WatchAddrs' goroutine, one call at a time, and must not
// block (poke a buffered channel): events the kernel cannot queue are lost,
// and the watch then ends with an error.
//
// WatchAddrs returns nil once ctx is done. It returns an error when the
// subscription cannot be made or ends (the kernel dropped events: ENOBUFS);
// it never subscribes again by itself, so the caller re-reads LocalAddrs
// and falls back to reading it periodically.
func WatchAddrs(ctx context.Context, exceptLink string, changed func()) error {
	w, err := subscribeAddrs(exceptLink)
	if err != nil {
		return err
	}
	return w.run(ctx, changed)
}

// addrWatch is one subscription to the kernel's address events.
type addrWatch struct {
	updates <-chan netlink.AddrUpdate // closed by netlink when the subscription ends
	done    chan struct{}             // closed to end the subscription
	except  linkFilter

	mu  sync.Mutex
	err error // the last error the subscription reported
}

// subscribeAddrs subscribes to the address events (RTNLGRP_IPV4_IFADDR and
// RTNLGRP_IPV6_IFADDR), without listing the existing addresses. Events are
// queued from the moment it returns.
func subscribeAddrs(exceptLink string) (*addrWatch, error) {
	updates := make(chan netlink.AddrUpdate, 64)
	w := &addrWatch{updates: updates, done: make(chan struct{}), except: linkFilter{name: exceptLink, lookup: linkName}}
	opts := netlink.AddrSubscribeOptions{ErrorCallback: w.report, ListExisting: false}
	if err := netlink.AddrSubscribeWithOptions(updates, w.done, opts); err != nil {
		close(w.done)
		return nil, fmt.Errorf("watching addresses: %w", err)
	}
	if exceptLink != "" {
		if l, err := netlink.LinkByName(exceptLink); err == nil {
			w.except.index = l.Attrs().Index
		}
	}
	return w, nil
}

// run delivers the events until ctx is done or the subscription ends, then
// ends the subscription.
func (w *addrWatch) run(ctx context.Context, changed func()) error {
	defer w.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return w.ended()
			}
			if w.relevant(u) {
				changed()
			}
		}
	}
}

// stop ends the subscription and waits for netlink to close updates, so
// its goroutine is not left blocked on a send.
func (w *addrWatch) stop() {
	close(w.done)
	for range w.updates {
	}
}

// relevant reports whether u changes what LocalAddrs returns.
func (w *addrWatch) relevant(u netlink.AddrUpdate) bool {
	if ip, ok := netip.AddrFromSlice(u.LinkAddress.IP); ok {
		if ip = ip.Unmap(); ip.Is6() && ip.IsLinkLocalUnicast() {
			return false
		}
	}
	return !w.except.excepted(u.LinkIndex)
}

// report is the subscription's error callback.
func (w *addrWatch) report(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

// ended is the error of a subscription that ended by itself.
func (w *addrWatch) ended() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return fmt.Errorf("watching addresses: the subscription ended: %w", w.err)
	}
	return errors.New("watching addresses: the subscription ended")
}

// linkFilter tells the events of the excepted link from the others by the
// link's index, looking the name of an index up when it is not the one
// last seen for the excepted link.
type linkFilter struct {
	name   string                          // of the excepted link; "" excepts none
	index  int                             // its index when last seen; 0 unknown
	lookup func(index int) (string, error) // the name of the link with index
}

// excepted reports whether index is the excepted link's.
func (f *linkFilter) excepted(index int) bool {
	if f.name == "" {
		return false
	}
	if index > 0 && index == f.index {
		return true
	}
	name, err := f.lookup(index)
	if err != nil || name != f.name {
		return false
	}
	f.index = index
	return true
}

// linkName returns the name of the link with index.
func linkName(index int) (string, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}
