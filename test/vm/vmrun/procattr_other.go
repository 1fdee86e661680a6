//go:build !linux

package vmrun

import "syscall"

// sysProcAttr: the VM bed runs on Linux only; elsewhere this package merely
// compiles.
func sysProcAttr() *syscall.SysProcAttr { return nil }
