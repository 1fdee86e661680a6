//go:build vmtest

// Package vm runs the real-kernel VM suite: the guest tests of ./guest that
// need no apiserver, each replayed here as a subtest of TestVM. The VM driver
// itself is ./vmrun; the suite against a real apiserver is ./e2e.
//
//	sudo test/vm/prepare.sh
//	go test -tags vmtest -v ./test/vm
//
// Environment: see ./vmrun (KIPVS_VM_RUN, KIPVS_VM_TIMEOUT, KIPVS_VM_GUESTFWD,
// KIPVS_GUEST_*, KIPVS_VM_SHELL, KIPVS_CACHE).
package vm

import (
	"testing"

	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// TestVM builds the binaries, boots the VM and replays every guest test as a
// subtest. Without KIPVS_VM_RUN the API suites (vmrun.APISuites) are left to
// ./e2e and the demo.
func TestVM(t *testing.T) {
	cfg, err := vmrun.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	vmrun.RunTests(t, cfg)
}
