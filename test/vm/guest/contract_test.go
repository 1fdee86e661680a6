//go:build vmguest

package guest

import (
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
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

// markedVIP is where connectIPVS connects for a firewall-mark virtual
// server: an address in the contract suite's range that no case uses.
var markedVIP = netip.MustParseAddrPort("10.96.240.250:80")

// connectIPVS makes dest a pod answering on its port, binds the virtual
// server's address on a dummy so the node accepts it, and holds one TCP
// connection from the node through the virtual server. For a
// firewall-mark virtual server it connects to markedVIP, whose packets an
// iptables rule marks with key.Mark.
func connectIPVS(t *testing.T, key ipvs.ServiceKey, dest netip.AddrPort) {
	AddPod(t, "ct-pod", dest.Addr())
	StartBackend(t, "ct-pod", "ct-pod", dest.Port())
	to := key.AddrPort()
	if key.IsMark() {
		to = markedVIP
		markTCP(t, to, key.Mark)
	}
	AddDummy(t, "kipvs-ct1", to.Addr())
	c, err := DialTCP(Node, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if r, err := c.Ask(); err != nil || r.Name != "ct-pod" {
		t.Fatalf("through %s: %+v, %v; want an answer from ct-pod", key, r, err)
	}
}

// markTCP marks the node's TCP packets to addr with mark until t ends,
// like `iptables -t mangle -A OUTPUT -d 10.96.240.250/32 -p tcp --dport 80
// -j MARK --set-mark 7937`.
func markTCP(t *testing.T, addr netip.AddrPort, mark uint32) {
	rule := []string{"OUTPUT", "-d", addr.Addr().String() + "/32", "-p", "tcp",
		"--dport", strconv.Itoa(int(addr.Port())), "-m", "comment", "--comment", "kipvs contract",
		"-j", "MARK", "--set-mark", strconv.FormatUint(uint64(mark), 10)}
	Run(t, Node, append([]string{"iptables", "-t", "mangle", "-A"}, rule...)...)
	t.Cleanup(func() {
		if _, err := Exec(Node, append([]string{"iptables", "-t", "mangle", "-D"}, rule...)...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// TestContractIPVSSpelling checks that ipvs.Format spells the kernel's
// table as `ipvsadm -Sn` does, firewall marks of both families included,
// and that ipvs.Parse reads ipvsadm's text back to the same table.
func TestContractIPVSSpelling(t *testing.T) {
	dumpOnFailure(t, []string{"ipvsadm", "-Sn"})
	k := ipvs.NewKernel()
	t.Cleanup(func() { _ = k.Close() })
	const text = `-A -t 10.96.240.30:80 -s rr
-a -t 10.96.240.30:80 -r 10.244.240.2:8080 -m -w 1
-A -t [fd00:96:240::30]:80 -s wlc -p 300
-A -f 7937 -s mh -p 10800 -b mh-port
-a -f 7937 -r 10.244.240.2:8080 -m -w 1
-a -f 7937 -r 10.244.240.3:8080 -g -w 0
-A -f 7937 -6 -s rr
-a -f 7937 -6 -r [fd00:244:240::2]:8080 -m -w 2
-A -f 7938 -s sh -b sh-fallback,sh-port
`
	svcs, dests, err := ipvs.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if err := k.AddService(s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := k.DeleteService(s.Key); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		for _, d := range dests[s.Key] {
			if err := k.AddDestination(s.Key, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := Run(t, Node, "ipvsadm", "-Sn")
	t.Logf("ipvsadm -Sn:\n%s", out)
	if got, want := sortedLines(out), sortedLines(text); !slices.Equal(got, want) {
		t.Errorf("ipvsadm -Sn, sorted:\n%s\nwant, sorted:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	ps, pd, err := ipvs.Parse(out)
	if err != nil {
		t.Fatalf("Parse of ipvsadm -Sn: %v", err)
	}
	if got := ipvs.Format(ps, pd); got != text {
		t.Errorf("Format(Parse(ipvsadm -Sn)):\n%s\nwant:\n%s", got, text)
	}
	listed, err := k.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	ld := map[ipvs.ServiceKey][]ipvs.Destination{}
	for _, s := range listed {
		if ld[s.Key], err = k.ListDestinations(s.Key); err != nil {
			t.Fatal(err)
		}
	}
	if got := ipvs.Format(listed, ld); got != text {
		t.Errorf("Format of the Kernel's lists:\n%s\nwant:\n%s", got, text)
	}
}

// sortedLines returns the non-empty lines of text, sorted.
func sortedLines(text string) []string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
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
