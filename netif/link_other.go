//go:build !linux

package netif

import (
	"errors"
	"fmt"
	"net/netip"
)

var _ Addrs = (*Dummy)(nil)

// errUnsupported is what every Dummy method returns off Linux. The package
// still builds so the fakes can be used.
var errUnsupported = fmt.Errorf("dummy interfaces need Linux: %w", errors.ErrUnsupported)

// Dummy manages a dummy interface; off Linux every call fails with
// errors.ErrUnsupported.
type Dummy struct {
	name string
}

// NewDummy returns a Dummy for the interface name ("" is DefaultLink).
func NewDummy(name string) *Dummy {
	if name == "" {
		name = DefaultLink
	}
	return &Dummy{name: name}
}

// Name returns the interface name.
func (d *Dummy) Name() string { return d.name }

// EnsureLink fails off Linux.
func (d *Dummy) EnsureLink() error { return errUnsupported }

// DeleteLink fails off Linux.
func (d *Dummy) DeleteLink() error { return errUnsupported }

// ListAddrs fails off Linux.
func (d *Dummy) ListAddrs() ([]netip.Addr, error) { return nil, errUnsupported }

// AddAddr fails off Linux.
func (d *Dummy) AddAddr(netip.Addr) error { return errUnsupported }

// DelAddr fails off Linux.
func (d *Dummy) DelAddr(netip.Addr) error { return errUnsupported }

// ListRoutes fails off Linux.
func (d *Dummy) ListRoutes() ([]netip.Prefix, error) { return nil, errUnsupported }

// AddRoute fails off Linux.
func (d *Dummy) AddRoute(netip.Prefix) error { return errUnsupported }

// DelRoute fails off Linux.
func (d *Dummy) DelRoute(netip.Prefix) error { return errUnsupported }
