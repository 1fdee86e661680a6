//go:build vmguest

package guest

import (
	"errors"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The serviceCIDRs tests: with `serviceCIDRs: [10.96.0.0/16]` the node
// accepts every address of the CIDR through one local route on kipvs0
// (`local 10.96.0.0/16 dev kipvs0 proto static scope host` in `ip route
// show table local`) instead of one address per ClusterIP, and KIPVS-FILTER
// rejects a new connection to any address of the CIDR that is not a
// ClusterIP virtual server (kubernetes#72236), allocated or not.

var (
	serviceCIDR  = netip.MustParsePrefix("10.96.0.0/16")
	unallocated  = netip.MustParseAddr("10.96.7.7") // in the CIDR, no Service has it
	outsideCIDR  = netip.MustParseAddr("10.97.0.5") // outside it, nothing owns it
	hostPort     = uint16(9999)                     // a host process's port
	cidrRouteRE  = routeRE(serviceCIDR)
	cidrRouteOp  = "ip route add local 10.96.0.0/16 dev kipvs0 table local"
	cidrFilterRE = regexp.MustCompile(`(?m)^-A KIPVS-FILTER -d 10\.96\.0\.0/16 -m conntrack --ctstate NEW -j REJECT --reject-with icmp-port-unreachable$`)
)

// serviceCIDRConfig writes a config file with serviceCIDRs: [10.96.0.0/16],
// or the CIDRs given.
func serviceCIDRConfig(t *testing.T, cidrs ...netip.Prefix) string {
	if len(cidrs) == 0 {
		cidrs = []netip.Prefix{serviceCIDR}
	}
	list := make([]string, len(cidrs))
	for i, c := range cidrs {
		list[i] = c.String()
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	WriteFile(t, cfg, "apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\nserviceCIDRs: ["+strings.Join(list, ", ")+"]\n")
	return cfg
}

// routeRE matches p's local route on kipvs0 in `ip route show table local`.
func routeRE(p netip.Prefix) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^local ` + regexp.QuoteMeta(p.String()) + ` dev kipvs0 proto static scope host\s*$`)
}

// localTable is `ip route show table local`.
func localTable(t testing.TB) string { return Run(t, Node, "ip", "route", "show", "table", "local") }

// hasCIDRRoute reports whether the Service CIDR's local route is on kipvs0.
func hasCIDRRoute(t testing.TB) bool { return cidrRouteRE.MatchString(localTable(t)) }

// waitUntil polls cond every 100 ms for up to timeout, failing with what.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			addrs, _ := Exec(Node, "ip", "addr", "show", "kipvs0")
			t.Fatalf("not within %v: %s\nip route show table local:\n%s\nip addr show kipvs0:\n%s", timeout, what, localTable(t), addrs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kipvs0IPv4 is the IPv4 addresses on kipvs0 (`ip -o -4 addr show dev
// kipvs0`), as prefixes, in order.
func kipvs0IPv4(t testing.TB) []string {
	var out []string
	for _, line := range strings.Split(Run(t, Node, "ip", "-o", "-4", "addr", "show", "dev", "kipvs0"), "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "inet"); i >= 0 && i+1 < len(f) {
			out = append(out, f[i+1])
		}
	}
	return out
}

// wantOnlyAnchor fails unless kipvs0's only IPv4 address is the anchor
// that keeps the Service CIDR's route: its network address. The kernel
// deletes a link's IPv4 routes with its last IPv4 address.
func wantOnlyAnchor(t testing.TB, what string) {
	t.Helper()
	anchor := netip.PrefixFrom(serviceCIDR.Addr(), 32).String()
	if got := kipvs0IPv4(t); !slices.Equal(got, []string{anchor}) {
		t.Errorf("%s: kipvs0 holds IPv4 %v, want only the anchor %s (the route accepts the ClusterIPs)", what, got, anchor)
	}
}

// pings reports whether one ICMP echo from ns to a is answered.
func pings(ns string, a netip.Addr) (bool, string) {
	out, err := Exec(ns, "ping", "-c", "1", "-W", "3", a.String())
	return err == nil, out
}

// ask makes one request over proto ("tcp" or "udp") from ns to addr.
func ask(proto, ns string, addr netip.AddrPort) (Reply, error) {
	if proto == "udp" {
		return AskUDP(ns, addr)
	}
	return AskTCP(ns, addr)
}

// nsName is how a test names a client namespace.
func nsName(ns string) string {
	if ns == Node {
		return "the node"
	}
	return ns
}

func TestServiceCIDRRouteAcceptsClusterIPs(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	dnsVS := netip.AddrPortFrom(dnsVIP, 53)
	b.objs.Put("dns", ServiceObject("dns", dnsVIP, dnsPort))
	b.objs.Put("dns-1", SliceObject("dns-1", "dns", []Port{dnsPort}, b.pods...))
	if ok, out := pings("client", unallocated); ok {
		t.Fatalf("before the agent runs, %s answers ping:\n%s", unallocated, out)
	}
	agent := StartAgent(t, b.objs, "--config", serviceCIDRConfig(t))
	out := WaitIPVS(t, VSLine("TCP", webVS(), "rr"), RSLine(rs(b.pods[0])), RSLine(rs(b.pods[1])), RSLine(rs(b.pods[2])),
		VSLine("UDP", dnsVS, "rr"))
	t.Logf("ipvsadm -Ln:\n%s", out)
	waitUntil(t, 10*time.Second, "the Service CIDR's local route on kipvs0", func() bool { return hasCIDRRoute(t) })
	t.Logf("ip route show table local:\n%s", localTable(t))
	wantOnlyAnchor(t, "with serviceCIDRs")
	if set := Run(t, Node, "ipset", "list", "KIPVS-VIP"); strings.Contains(set, webVIP.String()) || strings.Contains(set, dnsVIP.String()) {
		t.Errorf("a ClusterIP inside the Service CIDR is in KIPVS-VIP:\n%s", set)
	}
	if n := strings.Count(agent.Output(), cidrRouteOp); n != 1 {
		t.Errorf("the agent ran %q %d times, want once", cidrRouteOp, n)
	}

	t.Run("a pod's requests are spread over every pod", func(t *testing.T) {
		wantEven(t, CountTCP("client", webVS(), 60), b.pods, 20)
	})
	t.Run("the node reaches the ClusterIP, masqueraded", func(t *testing.T) {
		t.Logf("ip route get %s: %s", webVIP, Run(t, Node, "ip", "route", "get", webVIP.String()))
		got := CountTCP(Node, webVS(), 6)
		if got.Failed != 0 || len(got.ByName) != 3 {
			t.Errorf("answers: %v; want every pod and no failure", got)
		}
		for _, r := range got.Replies {
			if r.Source.Addr() != Gateway(b.pods[0].IP()) {
				t.Fatalf("%s saw the node as %s, want %s", r.Name, r.Source, Gateway(b.pods[0].IP()))
			}
		}
	})
	t.Run("UDP", func(t *testing.T) {
		got := CountUDP("client", dnsVS, 6)
		if got.Failed != 0 || len(got.ByName) != 3 {
			t.Errorf("UDP answers: %v; want every pod and no failure", got)
		}
	})
	t.Run("ping: the CIDR's addresses answer, an address outside it does not", func(t *testing.T) {
		for _, c := range []struct {
			ns   string
			addr netip.Addr
			want bool
		}{
			{"client", webVIP, true}, {"client", unallocated, true}, {"client", outsideCIDR, false},
			{Node, webVIP, true}, {Node, unallocated, true},
		} {
			if ok, out := pings(c.ns, c.addr); ok != c.want {
				t.Errorf("ping %s from %s: answered=%v, want %v\n%s", c.addr, nsName(c.ns), ok, c.want, out)
			}
		}
	})
	agent.Stop()
	t.Run("--cleanup removes the route with kipvs0", func(t *testing.T) {
		if !hasCIDRRoute(t) {
			t.Logf("the route went when the agent stopped")
		}
		Run(t, Node, AgentBin, "--cleanup", "--log-format", "console")
		if table := localTable(t); strings.Contains(table, serviceCIDR.String()) || strings.Contains(table, "kipvs0") {
			t.Errorf("after --cleanup the local table still has the route:\n%s", table)
		}
		if out, err := Exec(Node, "ip", "link", "show", "kipvs0"); err == nil {
			t.Errorf("kipvs0 is left: %s", out)
		}
		if out := Run(t, Node, "iptables-save"); strings.Contains(out, "KIPVS-") || strings.Contains(out, serviceCIDR.String()) {
			t.Errorf("iptables rules left:\n%s", out)
		}
		if out := Run(t, Node, "ipset", "list", "-n"); strings.Contains(out, "KIPVS-") {
			t.Errorf("ipsets left: %s", out)
		}
		if out := IPVS(t); strings.Contains(out, "10.96.") {
			t.Errorf("virtual servers left:\n%s", out)
		}
		if ok, out := pings("client", unallocated); ok {
			t.Errorf("after --cleanup %s still answers ping:\n%s", unallocated, out)
		}
	})
}

func TestServiceCIDRHostPortsAreNotReachable(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	StartBackend(t, Node, "hostproc", hostPort) // TCP and UDP on every address
	StartAgent(t, b.objs, "--config", serviceCIDRConfig(t))
	WaitIPVS(t, RSLine(rs(b.pods[2])))
	waitUntil(t, 10*time.Second, "the Service CIDR's local route on kipvs0", func() bool { return hasCIDRRoute(t) })
	filter := Run(t, Node, "iptables", "-S", "KIPVS-FILTER")
	t.Logf("iptables -S KIPVS-FILTER:\n%s", filter)
	if !cidrFilterRE.MatchString(filter) {
		t.Errorf("KIPVS-FILTER lacks the Service CIDR's REJECT")
	}

	// The node's own address as the client pod reaches it: not in the CIDR.
	nodeAddr := netip.AddrPortFrom(Gateway(outsider), hostPort)
	for _, ns := range []string{"client", Node} {
		for _, proto := range []string{"tcp", "udp"} {
			if r, err := ask(proto, ns, nodeAddr); err != nil || r.Name != "hostproc" {
				t.Errorf("%s from %s: the host process does not answer on the node's own %s: %+v, %v", proto, nsName(ns), nodeAddr, r, err)
			}
			for _, a := range []netip.Addr{webVIP, unallocated} {
				to := netip.AddrPortFrom(a, hostPort)
				start := time.Now()
				r, err := ask(proto, ns, to)
				took := time.Since(start).Round(time.Millisecond)
				switch {
				case err == nil:
					t.Errorf("%s from %s: the host process answered on %s (kubernetes#72236): %+v", proto, nsName(ns), to, r)
				case !errors.Is(err, syscall.ECONNREFUSED):
					t.Errorf("%s from %s to %s: %v after %v, want connection refused (REJECT)", proto, nsName(ns), to, err, took)
				default:
					t.Logf("%s from %s to %s: refused after %v", proto, nsName(ns), to, took)
				}
			}
		}
	}
	if got := CountTCP("client", webVS(), 3); got.Failed != 0 {
		t.Errorf("the Service port from the pod: %v", got)
	}
	if got := CountTCP(Node, webVS(), 3); got.Failed != 0 {
		t.Errorf("the Service port from the node: %v", got)
	}

	// Without the filter the host process does answer on the unallocated
	// address (the route makes it local), so the checks above are not
	// vacuous; the next full resync restores the rule.
	to := netip.AddrPortFrom(unallocated, hostPort)
	var r Reply
	var err error
	for range 3 {
		Run(t, Node, "iptables", "-F", "KIPVS-FILTER")
		if r, err = AskTCP("client", to); err == nil && r.Name == "hostproc" {
			break
		}
	}
	if err != nil || r.Name != "hostproc" {
		t.Errorf("with the filter flushed, expected the host process on %s: %+v, %v", to, r, err)
	}
	waitUntil(t, 10*time.Second, "a full resync restores the filter", func() bool {
		_, err := AskTCP("client", to)
		return errors.Is(err, syscall.ECONNREFUSED)
	})
}

// routeWatch polls `ip route show table local` every 100 ms until the
// test ends and records whether the Service CIDR's route was missing after
// armed first said it was made (an agent logs its `ip route add` once the
// route is there, so a poll may come too late to see it before it goes).
type routeWatch struct {
	mu      sync.Mutex
	lostNow bool
	lost    []time.Time
	stop    chan struct{}
	done    chan struct{}
}

func watchRoute(t *testing.T, armed func() bool) *routeWatch {
	w := &routeWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			made := armed() // before the read: the route was made before it
			out, err := Exec(Node, "ip", "route", "show", "table", "local")
			if err != nil || !made {
				continue
			}
			has := cidrRouteRE.MatchString(out)
			w.mu.Lock()
			switch {
			case has:
				w.lostNow = false
			case !w.lostNow:
				w.lostNow = true
				w.lost = append(w.lost, time.Now())
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *routeWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// losses is when the route was seen missing after it was made.
func (w *routeWatch) losses() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.lost...)
}

func TestServiceCIDRSwitchOnARunningNode(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	cfg := serviceCIDRConfig(t)
	off := StartAgent(t, b.objs)
	WaitIPVS(t, RSLine(rs(b.pods[2])))
	waitUntil(t, 10*time.Second, webVIP.String()+" bound on kipvs0", func() bool { return VIPBound(t, webVIP) })
	if hasCIDRRoute(t) {
		t.Fatalf("without serviceCIDRs the route is there:\n%s", localTable(t))
	}
	conn, err := DialTCP("client", webVS())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	held, err := conn.Ask()
	if err != nil {
		t.Fatal(err)
	}
	askHeld := func(when string) {
		t.Helper()
		if r, err := conn.Ask(); err != nil || r.Name != held.Name {
			t.Errorf("held connection %s: %+v, %v; it went to %s", when, r, err, held.Name)
		}
	}
	off.Stop()

	t.Log("restart with serviceCIDRs")
	on := StartAgent(t, b.objs, "--config", cfg) // returns before its first sync
	w := watchRoute(t, func() bool { return strings.Contains(on.Output(), cidrRouteOp) })
	if err := on.WaitOutput(`synced	{"full": true`, 60*time.Second); err != nil {
		t.Fatalf("the agent with serviceCIDRs never synced: %v", err)
	}
	waitUntil(t, 10*time.Second, "the route appears", func() bool { return hasCIDRRoute(t) })
	waitUntil(t, 10*time.Second, webVIP.String()+" unbound", func() bool { return !VIPBound(t, webVIP) })
	time.Sleep(5 * time.Second) // two periodic full syncs
	w.end()
	t.Logf("ip route show table local:\n%s", localTable(t))
	if lost := w.losses(); len(lost) > 0 {
		t.Errorf("the route was missing %d times after the agent made it (first at %v): unbinding the last IPv4 address of kipvs0 "+
			"makes the kernel drop every IPv4 route on it, the local route included, until a full sync adds it again", len(lost), lost[0].Format(time.StampMilli))
	}
	if n := strings.Count(on.Output(), cidrRouteOp); n != 1 {
		t.Errorf("the agent ran %q %d times, want once", cidrRouteOp, n)
	}
	wantOnlyAnchor(t, "after the switch")
	if strings.Contains(on.Output(), "ipvsadm -D -t "+webVS().String()) {
		t.Errorf("the virtual server was deleted across the switch:\n%s", on.Output())
	}
	askHeld("after the switch to the route")
	wantEven(t, CountTCP("client", webVS(), 6), b.pods, 2)
	if r, err := AskTCP(Node, webVS()); err != nil {
		t.Errorf("the node through the route: %+v, %v", r, err)
	}
	on.Stop()

	t.Log("restart without serviceCIDRs")
	back := StartAgent(t, b.objs)
	if err := back.WaitOutput(`synced	{"full": true`, 60*time.Second); err != nil {
		t.Fatalf("the agent without serviceCIDRs never synced: %v", err)
	}
	waitUntil(t, 10*time.Second, webVIP.String()+" bound again", func() bool { return VIPBound(t, webVIP) })
	waitUntil(t, 10*time.Second, "the route goes", func() bool { return !hasCIDRRoute(t) })
	waitUntil(t, 10*time.Second, "the anchor "+serviceCIDR.Addr().String()+" goes", func() bool { return !VIPBound(t, serviceCIDR.Addr()) })
	if filter := Run(t, Node, "iptables", "-S", "KIPVS-FILTER"); strings.Contains(filter, serviceCIDR.String()) {
		t.Errorf("the Service CIDR's REJECT is left:\n%s", filter)
	}
	askHeld("after the switch back to addresses")
	wantEven(t, CountTCP("client", webVS(), 6), b.pods, 2)
	if r, err := AskTCP(Node, webVS()); err != nil {
		t.Errorf("the node through the bound address: %+v, %v", r, err)
	}
}

func TestServiceCIDRMasqueradesTheNodeWithoutClusterCIDR(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	StartAgent(t, b.objs, "--config", serviceCIDRConfig(t), "--cluster-cidr", "")
	WaitIPVS(t, RSLine(rs(b.pods[2])))
	waitUntil(t, 10*time.Second, "the Service CIDR's local route on kipvs0", func() bool { return hasCIDRRoute(t) })
	// The node picks the ClusterIP itself as the source (a local route
	// without a preferred source): only the -s SERVICE-CIDR rule masquerades it.
	t.Logf("ip route get %s: %s", webVIP, Run(t, Node, "ip", "route", "get", webVIP.String()))
	t.Logf("iptables -t nat -S KIPVS-CLUSTER:\n%s", Run(t, Node, "iptables", "-t", "nat", "-S", "KIPVS-CLUSTER"))
	got := CountTCP(Node, webVS(), 6)
	if got.Failed != 0 || len(got.ByName) != 3 {
		t.Errorf("answers: %v; want every pod and no failure", got)
	}
	for _, r := range got.Replies {
		if r.Source.Addr() != Gateway(b.pods[0].IP()) {
			t.Fatalf("%s saw the node as %s, want the node's %s (not the ClusterIP)", r.Name, r.Source, Gateway(b.pods[0].IP()))
		}
	}
	// A pod still keeps its own address: without clusterCIDR only what the
	// node sends from a Service address is masqueraded.
	wantSource(t, CountTCP("client", webVS(), 3), outsider)
}

// A ClusterIP outside the Service CIDRs is still bound on kipvs0; when its
// Service goes, a partial sync unbinds it. If it was kipvs0's last IPv4
// address, the kernel drops every IPv4 route on kipvs0 with it (as `ip
// addr del` of the last address does), the Service CIDR's local route
// included: the ClusterIPs inside the CIDR must stay accepted all the same.
func TestServiceCIDRRouteOutlivesTheLastBoundAddress(t *testing.T) {
	b := newAgentBed(t)
	b.web(b.pods...)
	inside := netip.MustParsePrefix("10.96.0.0/24") // holds webVIP
	otherVIP := netip.MustParseAddr("10.96.1.10")   // outside it: bound
	otherVS := netip.AddrPortFrom(otherVIP, 80)
	b.objs.Put("other", ServiceObject("other", otherVIP, httpPort))
	b.objs.Put("other-1", SliceObject("other-1", "other", []Port{httpPort}, b.pods[0]))
	// A long sync period: only a full sync re-reads the routes.
	StartAgent(t, b.objs, "--config", serviceCIDRConfig(t, inside), "--sync-period", "20s")
	WaitIPVS(t, RSLine(rs(b.pods[2])), VSLine("TCP", otherVS, "rr"))
	re := routeRE(inside)
	waitUntil(t, 30*time.Second, inside.String()+"'s local route", func() bool { return re.MatchString(localTable(t)) })
	waitUntil(t, 10*time.Second, otherVIP.String()+" bound", func() bool { return VIPBound(t, otherVIP) })
	if VIPBound(t, webVIP) {
		t.Errorf("%s is bound, though %s's route accepts it", webVIP, inside)
	}
	if got := CountTCP("client", webVS(), 3); got.Failed != 0 {
		t.Fatalf("before: %v", got)
	}

	b.objs.Delete("other")
	b.objs.Delete("other-1")
	waitUntil(t, 10*time.Second, otherVIP.String()+" unbound", func() bool { return !VIPBound(t, otherVIP) })
	time.Sleep(time.Second)
	table := localTable(t)
	if !re.MatchString(table) {
		t.Errorf("%s's local route went with kipvs0's last address:\n%s", inside, table)
	}
	if got := CountTCP("client", webVS(), 3); got.Failed != 0 {
		t.Errorf("%s after the last bound address went: %v", webVS(), got)
	}
}
