//go:build vmguest

package guest

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"testing"
)

// The smoke tests prove the bed on the real kernel with real packets: pods with
// backends, a VIP on a dummy interface, an IPVS virtual server made with ipvsadm,
// and requests counted per backend.

var (
	smokeVIP    = netip.MustParseAddr("10.96.0.10")
	smokeClient = netip.MustParseAddr("10.244.1.100")
)

const backendPort = BackendPort

// startPods creates pod1..podN (10.244.1.2...) each running a backend on backendPort.
func startPods(t *testing.T, n int) []*Pod {
	t.Helper()
	var pods []*Pod
	for i := range n {
		name := fmt.Sprintf("pod%d", i+1)
		p := AddPod(t, name, netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + i)}))
		StartBackend(t, name, name, backendPort)
		r, err := AskTCP(Node, netip.AddrPortFrom(p.IP(), backendPort))
		if err != nil || r.Name != name {
			t.Fatalf("backend %s direct from the node: %+v, %v", name, r, err)
		}
		pods = append(pods, p)
	}
	return pods
}

// addVirtualServer is `ipvsadm -A -PROTO VS -s rr` plus `-a -PROTO VS -r POD:8080 -m`
// per pod, deleted at cleanup; it checks `ipvsadm -Ln` lists every real server.
func addVirtualServer(t *testing.T, proto string, vs netip.AddrPort, pods []*Pod) {
	t.Helper()
	flag := map[string]string{"tcp": "-t", "udp": "-u"}[proto]
	Run(t, Node, "ipvsadm", "-A", flag, vs.String(), "-s", "rr")
	t.Cleanup(func() {
		if _, err := Exec(Node, "ipvsadm", "-D", flag, vs.String()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for _, p := range pods {
		rs := netip.AddrPortFrom(p.IP(), backendPort).String()
		Run(t, Node, "ipvsadm", "-a", flag, vs.String(), "-r", rs, "-m")
	}
	out := Run(t, Node, "ipvsadm", "-Ln")
	header := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(map[string]string{"tcp": "TCP", "udp": "UDP"}[proto]+"  "+vs.String()) + ` rr\s*$`)
	if !header.MatchString(out) {
		t.Errorf("ipvsadm -Ln lacks the virtual server %s %s:\n%s", proto, vs, out)
	}
	for _, p := range pods {
		rs := regexp.MustCompile(`(?m)^  -> ` + regexp.QuoteMeta(netip.AddrPortFrom(p.IP(), backendPort).String()) + `\s+Masq\s+1\s`)
		if !rs.MatchString(out) {
			t.Errorf("ipvsadm -Ln lacks real server %s:%d (Masq, weight 1):\n%s", p.IP(), backendPort, out)
		}
	}
}

// wantEven checks that every pod answered exactly per requests and none failed.
func wantEven(t *testing.T, got Tally, pods []*Pod, per int) {
	t.Helper()
	want := map[string]int{}
	for _, p := range pods {
		want[p.Name] = per
	}
	if !maps.Equal(got.ByName, want) || got.Failed != 0 {
		t.Errorf("answers: %v; want %d from each of %d pods and no failure", got, per, len(pods))
	}
}

// wantSource checks that the backends saw the client's own address (no masquerade).
func wantSource(t *testing.T, got Tally, client netip.Addr) {
	t.Helper()
	for _, r := range got.Replies {
		if r.Source.Addr() != client {
			t.Errorf("%s saw the client as %v, want %v", r.Name, r.Source, client)
			return
		}
	}
}

func TestSmokeIPVS(t *testing.T) {
	pods := startPods(t, 3)
	AddPod(t, "client", smokeClient)
	AddDummy(t, "kipvs-smoke", smokeVIP)
	vs := netip.AddrPortFrom(smokeVIP, 80)
	addVirtualServer(t, "tcp", vs, pods)

	t.Run("from the node", func(t *testing.T) {
		wantEven(t, CountTCP(Node, vs, 300), pods, 100)
	})
	t.Run("from a pod", func(t *testing.T) {
		got := CountTCP("client", vs, 300)
		wantEven(t, got, pods, 100)
		wantSource(t, got, smokeClient)
	})
	t.Run("long-lived connection", func(t *testing.T) {
		c, err := DialTCP("client", vs)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		first, err := c.Ask()
		for i := 0; err == nil && i < 5; i++ {
			var r Reply
			if r, err = c.Ask(); err == nil && r != first {
				t.Errorf("answer %d on one connection: %+v, want %+v", i+2, r, first)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

func TestSmokeUDP(t *testing.T) {
	pods := startPods(t, 3)
	AddPod(t, "client", smokeClient)
	AddDummy(t, "kipvs-smoke", smokeVIP)
	vs := netip.AddrPortFrom(smokeVIP, 53)
	addVirtualServer(t, "udp", vs, pods)

	t.Run("from a pod", func(t *testing.T) {
		got := CountUDP("client", vs, 300)
		wantEven(t, got, pods, 100)
		wantSource(t, got, smokeClient)
	})
	t.Run("from the node", func(t *testing.T) {
		wantEven(t, CountUDP(Node, vs, 300), pods, 100)
	})
}

// TestSmokeMasquerade proves the netfilter pieces the agent relies on: an ipset,
// an iptables (nft) nat rule matching it, and IPVS handing its connections to
// conntrack (net.ipv4.vs.conntrack=1) so MASQUERADE applies to them. Only pod1's
// endpoint is in the set: pod1 sees the node, the other pods see the client.
func TestSmokeMasquerade(t *testing.T) {
	pods := startPods(t, 3)
	AddPod(t, "client", smokeClient)
	AddDummy(t, "kipvs-smoke", smokeVIP)
	vs := netip.AddrPortFrom(smokeVIP, 80)
	addVirtualServer(t, "tcp", vs, pods)

	Run(t, Node, "sysctl", "-qw", "net.ipv4.vs.conntrack=1")
	t.Cleanup(func() { _, _ = Exec(Node, "sysctl", "-qw", "net.ipv4.vs.conntrack=0") })
	Run(t, Node, "ipset", "create", "kipvs-smoke", "hash:ip,port")
	t.Cleanup(func() {
		if _, err := Exec(Node, "ipset", "destroy", "kipvs-smoke"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	Run(t, Node, "ipset", "add", "kipvs-smoke", fmt.Sprintf("%s,tcp:%d", pods[0].IP(), backendPort))
	rule := []string{"POSTROUTING", "-m", "comment", "--comment", "kipvs smoke",
		"-m", "set", "--match-set", "kipvs-smoke", "dst,dst", "-j", "MASQUERADE"}
	Run(t, Node, append([]string{"iptables", "-t", "nat", "-A"}, rule...)...)
	t.Cleanup(func() {
		if _, err := Exec(Node, append([]string{"iptables", "-t", "nat", "-D"}, rule...)...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	saved := Run(t, Node, "iptables-save", "-t", "nat")
	wantRule := `-A POSTROUTING -m comment --comment "kipvs smoke" -m set --match-set kipvs-smoke dst,dst -j MASQUERADE`
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(wantRule) + `$`).MatchString(saved) {
		t.Errorf("iptables-save -t nat lacks %q:\n%s", wantRule, saved)
	}
	set := Run(t, Node, "ipset", "list", "kipvs-smoke")
	if want := fmt.Sprintf("%s,tcp:%d", pods[0].IP(), backendPort); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(set) {
		t.Errorf("ipset list lacks %s:\n%s", want, set)
	}

	got := CountTCP("client", vs, 30)
	wantEven(t, got, pods, 10)
	node := Gateway(pods[0].IP())
	for _, r := range got.Replies {
		want := smokeClient
		if r.Name == pods[0].Name {
			want = node
		}
		if r.Source.Addr() != want {
			t.Errorf("%s saw the client as %v, want %v", r.Name, r.Source.Addr(), want)
		}
	}
}
