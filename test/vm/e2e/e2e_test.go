//go:build vmtest

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/controlplane"
	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// TestE2E starts kube-apiserver and etcd on the host, applies deploy/, boots
// the VM with the guestfwd to the apiserver and upstream kube-proxy in its
// initramfs, and runs the guest's TestE2E* tests (or KIPVS_VM_RUN's), each
// replayed as a subtest. It needs the binaries of test/tools/build.sh
// (kube-apiserver, etcd and the static kube-proxy) and the tree of
// test/vm/prepare.sh, and fails (never skips) without them.
func TestE2E(t *testing.T) {
	cfg, err := vmrun.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := AddKubeProxy(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Run == "" {
		cfg.Run, cfg.Skip = GuestSuites, ""
	}
	began := time.Now()
	cp := controlplane.Start(t, ControlPlaneOptions(t.Logf))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Setup(ctx, cp, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane ready for the VM in %v", time.Since(began).Round(time.Millisecond))
	c.Configure(&cfg)
	vmrun.RunTests(t, cfg)
}
