//go:build !linux

package iptables

import (
	"errors"
	"fmt"
)

// errUnsupported is what every KernelSets method returns off Linux, where
// there are no ipsets. The package still builds so the fakes can be used.
var errUnsupported = fmt.Errorf("ipsets need Linux: %w", errors.ErrUnsupported)

// KernelSets is the kernel's ipset table; off Linux every call fails.
type KernelSets struct{}

var _ Sets = (*KernelSets)(nil)

// NewKernelSets returns a KernelSets; it has no side effects.
func NewKernelSets() *KernelSets { return &KernelSets{} }

// ListSets fails off Linux.
func (k *KernelSets) ListSets() ([]string, error) { return nil, errUnsupported }

// CreateSet fails off Linux.
func (k *KernelSets) CreateSet(Set) error { return errUnsupported }

// DestroySet fails off Linux.
func (k *KernelSets) DestroySet(string) error { return errUnsupported }

// ListEntries fails off Linux.
func (k *KernelSets) ListEntries(string) ([]Entry, error) { return nil, errUnsupported }

// AddEntry fails off Linux.
func (k *KernelSets) AddEntry(string, Entry) error { return errUnsupported }

// DelEntry fails off Linux.
func (k *KernelSets) DelEntry(string, Entry) error { return errUnsupported }
