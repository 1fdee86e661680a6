//go:build vmguest

package guest

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// ipvsModules are the IPVS modules the VM loads at boot, in the order
// they can be unloaded (the schedulers before ip_vs).
func ipvsModules(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	var sched []string
	for line := range strings.SplitSeq(string(data), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if strings.HasPrefix(name, "ip_vs_") {
			sched = append(sched, name)
		}
	}
	return append(sched, "ip_vs")
}

// `kube-ipvs --cleanup` on a node without ip_vs: it removes the rest, and
// neither fails nor loads ip_vs. `--cleanup --mode dry-run` lists what it
// would remove and removes nothing.
func TestCleanupWithoutIPVSAndInDryRun(t *testing.T) {
	CleanupAgent(t)
	objs := NewObjects(t)
	objs.Put("web", ServiceObject("web", webVIP, httpPort))
	agent := StartAgent(t, objs)
	WaitIPVS(t, VSLine("TCP", netip.AddrPortFrom(webVIP, 80), "rr"))
	agent.Stop()

	out, err := Exec(Node, AgentBin, "--cleanup", "--mode", "dry-run", "--log-format", "console")
	if err != nil {
		t.Fatalf("kube-ipvs --cleanup --mode dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"ipvsadm -D -t " + webVIP.String() + ":80", "ipset destroy KIPVS-OWNED", "iptables -t nat -X KIPVS-SERVICES", "ip link del kipvs0"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run cleanup does not list %q:\n%s", want, out)
		}
	}
	if !strings.Contains(IPVS(t), webVIP.String()+":80") || !strings.Contains(Run(t, Node, "ipset", "list", "-n"), "KIPVS-OWNED") {
		t.Fatalf("dry-run cleanup removed something:\n%s", IPVS(t))
	}

	// Remove the virtual server as an operator would, then ip_vs itself.
	Run(t, Node, "ipvsadm", "-D", "-t", webVIP.String()+":80")
	mods := ipvsModules(t)
	t.Cleanup(func() {
		if out, err := Exec(Node, "modprobe", "-a", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"); err != nil {
			t.Errorf("loading IPVS back: %v\n%s", err, out)
		}
	})
	// A namespace an earlier test deleted may still hold its virtual
	// servers for a moment (netns teardown is asynchronous): retry.
	for _, m := range mods {
		var out string
		var err error
		for range 20 {
			if out, err = Exec(Node, "rmmod", m); err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("rmmod %s: %v\n%s (modules %v)", m, err, out, mods)
		}
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Fatal("/proc/net/ip_vs is still there after rmmod ip_vs")
	}
	out, err = Exec(Node, AgentBin, "--cleanup", "--log-format", "console")
	if err != nil {
		t.Fatalf("kube-ipvs --cleanup without ip_vs: %v\n%s", err, out)
	}
	if !strings.Contains(out, "IPVS is not loaded") {
		t.Errorf("cleanup did not say IPVS is not loaded:\n%s", out)
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Error("--cleanup loaded ip_vs")
	}
	if s := Run(t, Node, "iptables-save"); strings.Contains(s, "KIPVS-") {
		t.Errorf("cleanup left rules:\n%s", s)
	}
	if s := Run(t, Node, "ipset", "list", "-n"); strings.Contains(s, "KIPVS-") {
		t.Errorf("cleanup left sets: %s", s)
	}
	if out, err := Exec(Node, "ip", "link", "show", "kipvs0"); err == nil {
		t.Errorf("cleanup left kipvs0: %s", out)
	}
}
