//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestE2ETakeOverFromKubeProxy: upstream kube-proxy v1.37 in IPVS mode
// serves a Service; a connection is held open through it and a client
// asks every 100 ms on new connections. kube-proxy is stopped (its state
// stays in the kernel) and kube-ipvs starts with
// --take-over-from-kube-proxy. The held connection keeps answering from
// its pod, no request fails, the virtual server's connection counter keeps
// counting (it was adopted, not recreated), and at the end nothing of
// kube-proxy is left: no kube-ipvs0, no KUBE-* chain, rule or set.
func TestE2ETakeOverFromKubeProxy(t *testing.T) {
	api := NeedAPI(t)
	NeedKubeProxy(t)
	CleanupAgent(t)
	AddPod(t, "client", outsider)
	pods := []*APIPod{api.StartPod(t, "take", 1), api.StartPod(t, "take", 2)}
	svc := api.CreateService(t, "take", e2eHTTP)
	vs := netip.AddrPortFrom(ClusterIP(svc), 80)
	api.Slices(t, svc).Sync(t)

	kp := StartKubeProxy(t)
	WaitIPVSFor(t, 60*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	held := connTo(t, vs, pods[0].Name)
	defer held.Close()

	loop := startRequestLoop(t, vs, 100*time.Millisecond)
	time.Sleep(5 * time.Second)
	StopKubeProxy(t, kp)
	// The kernel folds its per-CPU counters into the totals every 2 s.
	time.Sleep(3 * time.Second)
	before, askedBefore := vsConns(t, vs), loop.answered()
	t.Logf("kube-proxy stopped; %s has counted %d connections, %d of them the loop's", vs, before, askedBefore)

	agent := StartAPIAgent(t, "--take-over-from-kube-proxy")
	deadline := time.Now().Add(90 * time.Second)
	for left := kubeProxyRemains(); left != ""; left = kubeProxyRemains() {
		if time.Now().After(deadline) {
			t.Fatalf("90 s after kube-ipvs started, kube-proxy's state is still there:\n%s\nagent:\n%s", left, tail(agent.Output(), 40))
		}
		time.Sleep(time.Second)
	}
	t.Log("nothing of kube-proxy is left")
	time.Sleep(2 * time.Second) // requests after the removal too
	ok, failed := loop.stop()
	if len(failed) > 0 || ok < 20 {
		t.Errorf("request loop: %d answered, %d failed: %q", ok, len(failed), failed)
	}
	t.Logf("request loop: %d answered, none failed", ok)
	if r, err := held.Ask(); err != nil || r.Name != pods[0].Name {
		t.Errorf("the connection held through the take-over: %+v, %v; want an answer from %s", r, err, pods[0].Name)
	}
	time.Sleep(3 * time.Second)
	after, since := vsConns(t, vs), int64(ok-askedBefore)
	// A recreated virtual server would count only what came after it.
	if after < before+since*9/10 {
		t.Errorf("%s counted %d connections before the take-over and %d after %d more: it was recreated, not adopted", vs, before, after, since)
	}
	t.Logf("%s counted %d connections before, %d after %d more", vs, before, after, since)
	out := WaitIPVSFor(t, 10*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	t.Logf("ipvsadm -Ln -t %s after the take-over:\n%s", vs, out)
	if !VIPBound(t, vs.Addr()) {
		t.Errorf("%s is not bound on kipvs0", vs.Addr())
	}
	if !strings.Contains(agent.Output(), "took over from kube-proxy") {
		t.Errorf("the agent did not log the take-over:\n%s", tail(agent.Output(), 40))
	}
	checkAgent(t, agent)
}

// kubeProxyRemains describes what of kube-proxy's (but its virtual servers)
// the node holds: kube-ipvs0, KUBE-* chains and rules, KUBE-* sets; "" for
// nothing.
func kubeProxyRemains() string {
	var left []string
	if out, err := Exec(Node, "ip", "link", "show", KubeProxyDummy); err == nil {
		left = append(left, "link: "+out)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if out, err := Exec(Node, save); err != nil || strings.Contains(out, "KUBE-") {
			var lines []string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "KUBE-") {
					lines = append(lines, l)
				}
			}
			left = append(left, save+": "+strings.Join(lines, "\n"))
		}
	}
	if out, err := Exec(Node, "ipset", "list", "-n"); err != nil || strings.Contains(out, "KUBE-") {
		left = append(left, "ipset list -n: "+out)
	}
	return strings.Join(left, "\n")
}

// vsConns is the Conns counter of virtual server vs (ipvsadm -Ln --stats
// --exact): every connection it ever scheduled.
func vsConns(t *testing.T, vs netip.AddrPort) int64 {
	t.Helper()
	out := Run(t, Node, "ipvsadm", "-Ln", "--stats", "--exact", "-t", vs.String())
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "TCP" && f[1] == vs.String() {
			n, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("Conns of %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in:\n%s", vs, out)
	return 0
}

// requestLoop asks vs from the client pod on a new connection at every
// tick until stopped.
type requestLoop struct {
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	ok     int
	failed []string
}

// answered is how many requests were answered so far.
func (l *requestLoop) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

func startRequestLoop(t *testing.T, vs netip.AddrPort, every time.Duration) *requestLoop {
	l := &requestLoop{done: make(chan struct{})}
	l.wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-l.done:
				return
			case at := <-tick.C:
				_, err := AskTCP("client", vs)
				l.mu.Lock()
				if err != nil {
					l.failed = append(l.failed, fmt.Sprintf("%s: %v", at.Format("15:04:05.000"), err))
				} else {
					l.ok++
				}
				l.mu.Unlock()
			}
		}
	})
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the loop (once) and returns how many requests were answered
// and the failures.
func (l *requestLoop) stop() (int, []string) {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.wg.Wait()
	return l.ok, l.failed
}
