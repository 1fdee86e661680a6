package controlplane

import "syscall"

// sysProcAttr makes the kernel SIGKILL the child when the test binary dies
// without cleaning up, so no etcd or kube-apiserver outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
