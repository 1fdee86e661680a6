//go:build !linux

package controlplane

import "syscall"

// sysProcAttr has nothing to add off Linux: there is no parent-death signal,
// so only the cleanups stop the children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
