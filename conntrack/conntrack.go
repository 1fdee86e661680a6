// Package conntrack removes netfilter connection-tracking entries that
// would keep a UDP client on an endpoint that is gone. IPVS (with
// net.ipv4.vs.conntrack=1) records each UDP flow to a virtual server in
// conntrack, with the real server as the reply's source; while that entry
// lives, a client that keeps sending from the same port is never
// rescheduled. The real implementation talks netlink through
// github.com/vishvananda/netlink (no `conntrack` binary); Fake is an
// in-memory table for tests.
package conntrack

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Flow names the UDP conntrack entries of one Service port and one of its
// endpoints: original destination Service, reply source Endpoint. A zero
// Endpoint matches every endpoint of the Service port (the whole virtual
// server went). It is comparable.
type Flow struct {
	Service  netip.AddrPort
	Endpoint netip.AddrPort
}

// String renders the flow the way `conntrack -D` would select it.
func (f Flow) String() string {
	s := fmt.Sprintf("-p udp --orig-dst %s --orig-port-dst %d", f.Service.Addr(), f.Service.Port())
	if f.Endpoint.IsValid() {
		s += fmt.Sprintf(" --reply-src %s --reply-port-src %d", f.Endpoint.Addr(), f.Endpoint.Port())
	}
	return s
}

// matches reports whether an entry with this original destination and
// reply source belongs to f.
func (f Flow) matches(origDst, replySrc netip.AddrPort) bool {
	return origDst == f.Service && (!f.Endpoint.IsValid() || replySrc == f.Endpoint)
}

// Interface is the node's conntrack table, as far as kube-ipvs uses it.
type Interface interface {
	// DeleteUDP removes every UDP entry that matches one of flows, in one
	// pass over the table, like `conntrack -D -p udp --orig-dst VIP
	// --orig-port-dst PORT --reply-src EP` for each. It returns how many
	// entries went; entries of one address family only are looked at per
	// flow's family.
	DeleteUDP(flows []Flow) (int, error)
}

var _ Interface = (*Fake)(nil)

// Entry is one UDP conntrack entry of the Fake: the client, the address it
// sent to, and the real server IPVS chose (the reply's source).
type Entry struct {
	Client, OrigDst, ReplySrc netip.AddrPort
}

// Fake is an in-memory conntrack table of UDP entries. Add seeds it; Dump
// shows what is left; Deleted lists every flow DeleteUDP was asked for.
type Fake struct {
	mu      sync.Mutex
	entries []Entry
	asked   []Flow
	// Err, when set, is returned by DeleteUDP, which then deletes nothing.
	Err error
}

// NewFake returns an empty table.
func NewFake() *Fake { return &Fake{} }

// Add records an entry, as if a client had sent a UDP packet.
func (f *Fake) Add(e Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, e)
}

// DeleteUDP removes the matching entries.
func (f *Fake) DeleteUDP(flows []Flow) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, flows...)
	if f.Err != nil {
		return 0, f.Err
	}
	n := len(f.entries)
	f.entries = slices.DeleteFunc(f.entries, func(e Entry) bool {
		return slices.ContainsFunc(flows, func(fl Flow) bool { return fl.matches(e.OrigDst, e.ReplySrc) })
	})
	return n - len(f.entries), nil
}

// Deleted returns the flows DeleteUDP was asked to delete, in order.
func (f *Fake) Deleted() []Flow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// Dump lists the entries left, one per line like `conntrack -L`:
// "udp src=CLIENT dst=ORIGDST reply-src=REPLYSRC".
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, e := range f.entries {
		fmt.Fprintf(&b, "udp src=%s dst=%s reply-src=%s\n", e.Client, e.OrigDst, e.ReplySrc)
	}
	return b.String()
}
