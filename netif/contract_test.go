package netif_test

import (
	"testing"

	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/netif/netiftest"
)

// TestFakeContract runs the contracts Dummy and ProcSysctl pass in the VM
// (test/vm/guest/contract_test.go) against the fakes.
func TestFakeContract(t *testing.T) {
	t.Run("addrs", func(t *testing.T) {
		netiftest.RunAddrs(t, func(t *testing.T) netiftest.Link {
			f := netif.NewFakeAddrs("kipvs-ct0")
			foreign := func(t *testing.T) {
				f.SeedLink("veth", true)
				t.Cleanup(func() { // as `ip link del`: a dummy again, then gone
					f.SeedLink("dummy", false)
					if err := f.DeleteLink(); err != nil {
						t.Error(err)
					}
				})
			}
			return netiftest.Link{Addrs: f, Foreign: foreign}
		})
	})
	const key = "net/ipv4/vs/expire_nodest_conn"
	t.Run("sysctl", func(t *testing.T) {
		netiftest.RunSysctl(t, func(t *testing.T) netif.Sysctl {
			return netif.NewFakeSysctl(map[string]string{key: "0"})
		}, key)
	})
}
