//go:build !linux

package conntrack

import (
	"errors"
	"fmt"
)

var _ Interface = (*Kernel)(nil)

// Kernel is the kernel's conntrack table; off Linux every call fails.
type Kernel struct{}

// NewKernel returns a Kernel; it has no side effects.
func NewKernel() *Kernel { return &Kernel{} }

// DeleteUDP fails off Linux.
func (k *Kernel) DeleteUDP([]Flow) (int, error) {
	return 0, fmt.Errorf("conntrack needs Linux: %w", errors.ErrUnsupported)
}
