package ipvs_test

import (
	"net/netip"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/ipvs/ipvstest"
)

// TestFakeContract runs the contract the Kernel passes in the VM
// (test/vm/guest/contract_test.go) against the Fake.
func TestFakeContract(t *testing.T) {
	ipvstest.Run(t, func(t *testing.T) ipvstest.Harness {
		f := ipvs.NewFake()
		return ipvstest.Harness{
			IPVS: f,
			Connect: func(t *testing.T, key ipvs.ServiceKey, dest netip.AddrPort) {
				if err := f.SetConns(key, dest, 1, 0); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}
