package iptables_test

import (
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/iptables/iptablestest"
)

// fakeKernel is a linked Fake and FakeSets, as NewFakeKernel makes them.
func fakeKernel(ipv6 bool) func(t *testing.T) iptablestest.Kernel {
	return func(t *testing.T) iptablestest.Kernel {
		f, s := iptables.NewFakeKernel()
		return iptablestest.Kernel{
			IPTables: f,
			Sets:     s,
			IPv6:     ipv6,
			Restore: func(t *testing.T, text string) {
				if err := s.Load(text); err != nil {
					t.Fatal(err)
				}
			},
		}
	}
}

// TestFakeContract runs the contracts Kernel and KernelSets pass in the VM
// (test/vm/guest/contract_test.go) against the fakes.
func TestFakeContract(t *testing.T) {
	t.Run("chains", func(t *testing.T) { iptablestest.RunChains(t, fakeKernel(false)) })
	t.Run("chains IPv6", func(t *testing.T) { iptablestest.RunChains(t, fakeKernel(true)) })
	t.Run("sets", func(t *testing.T) { iptablestest.RunSets(t, fakeKernel(false)) })
}
