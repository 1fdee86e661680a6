package netif

import (
	"context"
	"net/netip"
)

var _ AddrSource = (*KernelAddrSource)(nil)

// KernelAddrSource is the AddrSource of the caller's network namespace:
// LocalAddrs and WatchAddrs, leaving out one link (kube-ipvs' dummy
// interface, whose Service addresses are not the node's own).
type KernelAddrSource struct {
	exceptLink string
}

// NewAddrSource returns a KernelAddrSource that leaves out the addresses of
// the link named exceptLink ("" is DefaultLink). It has no side effects.
func NewAddrSource(exceptLink string) *KernelAddrSource {
	if exceptLink == "" {
		exceptLink = DefaultLink
	}
	return &KernelAddrSource{exceptLink: exceptLink}
}

// ExceptLink returns the name of the link whose addresses are left out.
func (s *KernelAddrSource) ExceptLink() string { return s.exceptLink }

// LocalAddrs is LocalAddrs(ipv6, s.ExceptLink()).
func (s *KernelAddrSource) LocalAddrs(ipv6 bool) ([]netip.Addr, error) {
	return LocalAddrs(ipv6, s.exceptLink)
}

// Watch is WatchAddrs(ctx, s.ExceptLink(), changed).
func (s *KernelAddrSource) Watch(ctx context.Context, changed func()) error {
	return WatchAddrs(ctx, s.exceptLink, changed)
}

// familyName names the family of LocalAddrs' ipv6 argument in messages.
func familyName(ipv6 bool) string {
	if ipv6 {
		return "IPv6"
	}
	return "IPv4"
}
