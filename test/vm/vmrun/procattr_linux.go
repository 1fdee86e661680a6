package vmrun

import "syscall"

// sysProcAttr makes the kernel SIGKILL qemu when this process dies without
// cleaning up (panic, go test -timeout), so no VM outlives its driver.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
