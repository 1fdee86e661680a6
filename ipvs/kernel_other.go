//go:build !linux

package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

var _ Interface = (*Kernel)(nil)

// errUnsupported is what every Kernel method returns off Linux, where
// there is no IPVS. The package still builds so the Fake can be used.
var errUnsupported = fmt.Errorf("IPVS needs Linux: %w", errors.ErrUnsupported)

// Kernel is the kernel's IPVS table; off Linux every call fails with
// errors.ErrUnsupported.
type Kernel struct {
	Modules
	// Netns is the path of the network namespace to program.
	Netns string
}

// NewKernel returns a Kernel; it has no side effects.
func NewKernel() *Kernel { return &Kernel{Modules: Modules{Root: "/"}} }

// Open fails off Linux.
func (k *Kernel) Open() error { return errUnsupported }

// Close does nothing.
func (k *Kernel) Close() error { return nil }

// ListServices fails off Linux.
func (k *Kernel) ListServices() ([]Service, error) { return nil, errUnsupported }

// AddService fails off Linux.
func (k *Kernel) AddService(Service) error { return errUnsupported }

// UpdateService fails off Linux.
func (k *Kernel) UpdateService(Service) error { return errUnsupported }

// DeleteService fails off Linux.
func (k *Kernel) DeleteService(ServiceKey) error { return errUnsupported }

// ListDestinations fails off Linux.
func (k *Kernel) ListDestinations(ServiceKey) ([]Destination, error) { return nil, errUnsupported }

// AddDestination fails off Linux.
func (k *Kernel) AddDestination(ServiceKey, Destination) error { return errUnsupported }

// UpdateDestination fails off Linux.
func (k *Kernel) UpdateDestination(ServiceKey, Destination) error { return errUnsupported }

// DeleteDestination fails off Linux.
func (k *Kernel) DeleteDestination(ServiceKey, netip.AddrPort) error { return errUnsupported }

// SetTimeouts fails off Linux.
func (k *Kernel) SetTimeouts(tcp, tcpFin, udp time.Duration) error { return errUnsupported }
