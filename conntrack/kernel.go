//go:build linux

package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

var _ Interface = (*Kernel)(nil)

// Kernel is the kernel's conntrack table, reached over netlink
// (NFNL_SUBSYS_CTNETLINK; the nf_conntrack_netlink module). It opens a
// socket per call and has no state.
type Kernel struct{}

// NewKernel returns the kernel's conntrack table; it opens nothing.
func NewKernel() *Kernel { return &Kernel{} }

// DeleteUDP dumps the table once per address family that flows use and
// deletes every UDP entry that matches a flow.
func (k *Kernel) DeleteUDP(flows []Flow) (int, error) {
	byFamily := map[netlink.InetFamily][]netlink.CustomConntrackFilter{}
	for _, f := range flows {
		fam := netlink.InetFamily(syscall.AF_INET)
		if f.Service.Addr().Is6() {
			fam = syscall.AF_INET6
		}
		byFamily[fam] = append(byFamily[fam], udpFilter(f))
	}
	total := 0
	for fam, filters := range byFamily {
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...)
		total += int(n)
		if err != nil {
			return total, fmt.Errorf("deleting UDP conntrack entries: %w", err)
		}
	}
	return total, nil
}

// udpFilter matches a flow exactly: protocol, original destination address
// and port, and, when set, the reply's source address and port (which
// netlink's own ConntrackFilter cannot match on).
type udpFilter Flow

func (f udpFilter) MatchConntrackFlow(c *netlink.ConntrackFlow) bool {
	if c.Forward.Protocol != syscall.IPPROTO_UDP {
		return false
	}
	return Flow(f).matches(addrPort(c.Forward.DstIP, c.Forward.DstPort), addrPort(c.Reverse.SrcIP, c.Reverse.SrcPort))
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}
