//go:build vmguest

package guest

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/iptables/iptablestest"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/ipvs/ipvstest"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/netif/netiftest"
)

// The contract tests run each adapter's contract suite (ipvs/ipvstest,
// iptables/iptablestest, netif/netiftest) against the real adapter on the
// VM's kernel, in the node's namespace. `go test` runs the same suites
// against the fakes, so a fake that drifts from the kernel fails one of the
// two. Each case removes what it made.

// dumpOnFailure logs the kernel's state as users see it when t fails.
func dumpOnFailure(t *testing.T, cmds ...[]string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, c := range cmds {
			out, err := Exec(Node, c...)
			t.Logf("%s (%v):\n%s", strings.Join(c, " "), err, out)
		}
	})
}

func TestContractIPVS(t *testing.T) {
	dumpOnFailure(t, []string{"ipvsadm", "-Ln"})
	ipvstest.Run(t, func(t *testing.T) ipvstest.Harness {
		k := ipvs.NewKernel()
		t.Cleanup(func() { _ = k.Close() })
		return ipvstest.Harness{IPVS: k, Connect: connectIPVS}
	})
}

// connectIPVS makes dest a pod answering on its port, binds the virtual
// server's address on a dummy so the node accepts it, and holds one TCP
// connection from the node through the virtual server.
func connectIPVS(t *testing.T, key ipvs.ServiceKey, dest netip.AddrPort) {
	AddPod(t, "ct-pod", dest.Addr())
	StartBackend(t, "ct-pod", "ct-pod", dest.Port())
	AddDummy(t, "kipvs-ct1", key.Addr)
	c, err := DialTCP(Node, key.AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if r, err := c.Ask(); err != nil || r.Name != "ct-pod" {
		t.Fatalf("through %s: %+v, %v; want an answer from ct-pod", key, r, err)
	}
}

// kernelTables is the real iptables of a family and the real ipsets.
func kernelTables(ipv6 bool) func(t *testing.T) iptablestest.Kernel {
	return func(t *testing.T) iptablestest.Kernel {
		return iptablestest.Kernel{
			IPTables: iptables.NewKernel(ipv6),
			Sets:     iptables.NewKernelSets(),
			IPv6:     ipv6,
			Restore: func(t *testing.T, text string) {
				cmd := exec.Command("ipset", "restore")
				cmd.Stdin = strings.NewReader(text)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("ipset restore: %v\n%s", err, out)
				}
			},
		}
	}
}

func TestContractIPTables(t *testing.T) {
	dumpOnFailure(t, []string{"iptables-save"}, []string{"ipset", "list", "-n"})
	iptablestest.RunChains(t, kernelTables(false))
}

func TestContractIP6Tables(t *testing.T) {
	dumpOnFailure(t, []string{"ip6tables-save"}, []string{"ipset", "list", "-n"})
	iptablestest.RunChains(t, kernelTables(true))
}

func TestContractIPSets(t *testing.T) {
	dumpOnFailure(t, []string{"ipset", "save"}, []string{"iptables-save"})
	iptablestest.RunSets(t, kernelTables(false))
}

func TestContractDummy(t *testing.T) {
	const name = "kipvs-ct0"
	dumpOnFailure(t, []string{"ip", "addr"})
	netiftest.RunAddrs(t, func(t *testing.T) netiftest.Link {
		return netiftest.Link{
			Addrs: netif.NewDummy(name),
			Foreign: func(t *testing.T) {
				Run(t, Node, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
				t.Cleanup(func() {
					if _, err := Exec(Node, "ip", "link", "del", name); err != nil {
						t.Errorf("cleanup: %v", err)
					}
				})
			},
		}
	})
}

func TestContractSysctl(t *testing.T) {
	netiftest.RunSysctl(t, func(t *testing.T) netif.Sysctl { return netif.NewProcSysctl() },
		"net/ipv4/vs/expire_nodest_conn")
}
