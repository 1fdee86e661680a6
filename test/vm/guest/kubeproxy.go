//go:build vmguest

package guest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// Upstream kube-proxy (v1.37, built static by test/tools/build.sh) runs in
// the VM in IPVS mode against the host's kube-apiserver, so that a test can
// start from the kernel state kube-proxy leaves behind: the e2e driver
// (test/vm/e2e) puts it at KubeProxyBin, the plain VM suite does not.
//
//	p := guest.StartKubeProxy(t)   // synced; stopped and `kube-proxy --cleanup` at the end
//	guest.StopKubeProxy(t, p)      // SIGTERM: its IPVS, iptables and ipset state stays

// KubeProxyBin is upstream kube-proxy in the guest.
const KubeProxyBin = vmrun.GuestKubeProxy

// Where kube-proxy listens: off kube-ipvs' own 10256 and 10249, so both can
// run at once.
const (
	KubeProxyHealthz = "0.0.0.0:20256"   // healthzBindAddress: /healthz, /livez
	KubeProxyMetrics = "127.0.0.1:20249" // metricsBindAddress: /metrics
)

// KubeProxyDummy is the dummy interface kube-proxy's IPVS mode binds
// Service addresses on (kube-ipvs' own is kipvs0).
const KubeProxyDummy = "kube-ipvs0"

// kubeProxySysctls are the sysctls kube-proxy's IPVS proxier sets
// (NewProxier in k8s.io/kubernetes/pkg/proxy/ipvs); StartKubeProxy puts them
// back at cleanup, which `kube-proxy --cleanup` does not. The conntrack
// sysctls it would set too are left alone by KubeProxyConfig.
var kubeProxySysctls = []string{
	"net/ipv4/vs/conntrack",
	"net/ipv4/vs/conn_reuse_mode",
	"net/ipv4/vs/expire_nodest_conn",
	"net/ipv4/vs/expire_quiescent_template",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/arp_ignore",
	"net/ipv4/conf/all/arp_announce",
}

// NeedKubeProxy fails the test (never skips it) unless the guest has
// upstream kube-proxy and the admin kubeconfig it runs with: only the e2e
// driver provides them.
func NeedKubeProxy(t testing.TB) {
	t.Helper()
	for _, p := range []string{KubeProxyBin, AdminKubeconfig} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("this test runs upstream kube-proxy against the host's kube-apiserver, and the guest lacks %s (%v): "+
				"run it with `go test -tags vmtest ./test/vm/e2e` after test/tools/build.sh", p, err)
		}
	}
}

// KubeProxyConfig is the KubeProxyConfiguration StartKubeProxy runs with:
// IPVS mode (rr) for NodeName, the guest tests' cluster CIDR, the admin
// kubeconfig, and kube-proxy's conntrack sysctls left as they are (0 means
// "leave as-is"), so that cleanup need not undo them.
//
// kube-proxy authenticates with the admin kubeconfig (system:masters), the
// simplest credential that covers what it needs: list/watch Services,
// EndpointSlices and Nodes and create Events. deploy/ binds roles to
// kube-ipvs' ServiceAccount only; kubeadm binds kube-proxy's to the
// ClusterRole system:node-proxier.
func KubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
hostnameOverride: %s
clusterCIDR: %s
clientConnection:
  kubeconfig: %s
healthzBindAddress: %s
metricsBindAddress: %s
ipvs:
  scheduler: rr
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
logging:
  verbosity: 2
`, NodeName, ClusterCIDR, AdminKubeconfig, KubeProxyHealthz, KubeProxyMetrics)
}

// StartKubeProxy runs upstream kube-proxy on the node with KubeProxyConfig
// (extra flags come after --config and override it), like `kube-proxy
// --config FILE`, and waits until it has synced: /healthz answers 200 and
// its metrics record a completed sync of every IP family it runs. At
// cleanup it stops kube-proxy by its PID (if StopKubeProxy has not), runs
// `kube-proxy --cleanup`, fails the test if anything of kube-proxy is left
// in the kernel (KubeProxyLeftovers), and puts kube-proxy's sysctls back.
//
// `kube-proxy --cleanup` is not ownership-aware: it flushes every IPVS
// virtual server of the node, kube-proxy's or not.
func StartKubeProxy(t testing.TB, extra ...string) *Proc {
	t.Helper()
	NeedKubeProxy(t)
	saved := readKubeProxySysctls(kubeProxySysctls)
	var p *Proc
	t.Cleanup(func() {
		if p != nil {
			p.Stop()
		}
		CleanupKubeProxy(t)
		restoreKubeProxySysctls(t, saved)
	})
	cfg := filepath.Join(t.TempDir(), "kube-proxy.yaml")
	WriteFile(t, cfg, KubeProxyConfig())
	p = Start(t, Node, append([]string{KubeProxyBin, "--config", cfg}, extra...)...)
	// Its first sync (about 34 ipsets and 4 iptables tables, IPv4 and
	// IPv6) took 20-50 s under TCG.
	began := time.Now()
	if err := waitKubeProxySynced(p, 3*time.Minute); err != nil {
		t.Fatalf("kube-proxy did not sync: %v", err)
	}
	t.Logf("kube-proxy (pid %d) synced %v after it started", p.PID(), time.Since(began).Round(100*time.Millisecond))
	return p
}

// StopKubeProxy stops kube-proxy WITHOUT cleaning up, as a DaemonSet's pod
// is stopped: SIGTERM, then it waits (up to 30 s) for the process to end.
// kube-proxy (v1.37) has no SIGTERM handler and dies of the signal; it
// removes nothing from the kernel, so what it programmed (virtual servers,
// kube-ipvs0 and its addresses, KUBE-* chains and ipsets, sysctls) stays
// and keeps serving. StartKubeProxy's cleanup still removes it all at the
// end of the test.
func StopKubeProxy(t testing.TB, p *Proc) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to kube-proxy (pid %d): %v", p.PID(), err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("kube-proxy (pid %d) still runs 30s after SIGTERM:\n%s", p.PID(), kubeProxyTail(p.Output(), 30))
	}
	t.Logf("kube-proxy (pid %d) stopped (%v)", p.PID(), p.err)
}

// CleanupKubeProxy removes what kube-proxy's IPVS mode leaves in the node's
// kernel and fails the test if anything of it is left (KubeProxyLeftovers).
// It runs `kube-proxy --cleanup`, and again if that failed, then destroys
// the KUBE-6-* ipsets, because upstream's cleanup (v1.37) does not do it
// all in one go:
//
//   - It first runs the iptables mode's cleanup, whose single
//     iptables-restore per table deletes KUBE-MARK-MASQ (nat) and
//     KUBE-PROXY-FIREWALL (filter) while IPVS mode's KUBE-LOAD-BALANCER and
//     its INPUT/FORWARD jumps still use them: "CHAIN_DEL failed (Device or
//     resource busy)", exit status 1. The IPVS mode's cleanup that follows
//     removes them, so a second run succeeds.
//   - It destroys only the IPv4 ipsets (KUBE-CLUSTER-IP, …), never the
//     IPv6 proxier's KUBE-6-* ones.
func CleanupKubeProxy(t testing.TB) {
	t.Helper()
	if out, err := Exec(Node, KubeProxyBin, "--cleanup"); err != nil {
		t.Logf("kube-proxy --cleanup failed, as it does after IPVS mode; running it again. %v", err)
		if _, err := Exec(Node, KubeProxyBin, "--cleanup"); err != nil {
			t.Errorf("kube-proxy --cleanup, the second time: %v\n(the first time: %s)", err, out)
		}
	}
	sets, err := Exec(Node, "ipset", "list", "-n")
	if err != nil {
		t.Errorf("listing ipsets: %v", err)
	}
	for _, name := range strings.Fields(sets) {
		if strings.HasPrefix(name, "KUBE-6-") {
			if _, err := Exec(Node, "ipset", "destroy", name); err != nil {
				t.Errorf("destroying kube-proxy's ipset %s: %v", name, err)
			}
		}
	}
	if left := KubeProxyLeftovers(); left != "" {
		t.Errorf("kube-proxy --cleanup left:\n%s", left)
	}
}

// KubeProxyLeftovers describes what of kube-proxy's IPVS (or iptables)
// mode the node's kernel holds, "" for nothing: any IPVS virtual server
// (`ipvsadm -Sn`), the kube-ipvs0 link, KUBE-* chains or rules in
// iptables-save or ip6tables-save, KUBE-* ipsets.
func KubeProxyLeftovers() string {
	var left []string
	if out, err := Exec(Node, "ipvsadm", "-Sn"); err != nil || strings.TrimSpace(out) != "" {
		left = append(left, "ipvsadm -Sn:\n"+out)
	}
	if out, err := Exec(Node, "ip", "link", "show", KubeProxyDummy); err == nil {
		left = append(left, "link: "+out)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if out, err := Exec(Node, save); err != nil || strings.Contains(out, "KUBE-") {
			left = append(left, save+":\n"+out)
		}
	}
	if out, err := Exec(Node, "ipset", "list", "-n"); err != nil || strings.Contains(out, "KUBE-") {
		left = append(left, "ipset list -n:\n"+out)
	}
	return strings.Join(left, "\n")
}

// kubeProxySyncMetric is kube-proxy's gauge of its last successful sync, per IP family.
var kubeProxySyncMetric = regexp.MustCompile(`(?m)^kubeproxy_sync_proxy_rules_last_timestamp_seconds\{ip_family="(IPv[46])"\} (\S+)$`)

// waitKubeProxySynced polls kube-proxy until /healthz answers 200 and
// /metrics shows a completed sync for IPv4 (and IPv6 once it said it runs
// dual-stack). /healthz alone does not tell: it answers 200 while the
// proxier is still starting up.
func waitKubeProxySynced(p *Proc, timeout time.Duration) error {
	c := &http.Client{Timeout: 3 * time.Second}
	healthz := "http://127.0.0.1:" + kubeProxyPort(KubeProxyHealthz) + "/healthz"
	metrics := "http://" + KubeProxyMetrics + "/metrics"
	deadline := time.Now().Add(timeout)
	last := "nothing yet"
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("kube-proxy exited (%v):\n%s", err, kubeProxyTail(p.Output(), 40))
		}
		families := []string{"IPv4"}
		if strings.Contains(p.Output(), "running in dual-stack mode") {
			families = append(families, "IPv6")
		}
		code, _, err := kubeProxyGet(c, healthz)
		switch {
		case err != nil:
			last = err.Error()
		case code != http.StatusOK:
			last = fmt.Sprintf("/healthz answered %d", code)
		default:
			_, body, err := kubeProxyGet(c, metrics)
			if err != nil {
				last = err.Error()
				break
			}
			synced := map[string]bool{}
			for _, m := range kubeProxySyncMetric.FindAllStringSubmatch(body, -1) {
				v, err := strconv.ParseFloat(m[2], 64)
				synced[m[1]] = err == nil && v > 0
			}
			missing := ""
			for _, f := range families {
				if !synced[f] {
					missing += " " + f
				}
			}
			if missing == "" {
				return nil
			}
			last = "no completed sync yet for" + missing
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %s\n%s", timeout, last, kubeProxyTail(p.Output(), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func kubeProxyGet(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// kubeProxyPort is the port of "HOST:PORT".
func kubeProxyPort(hostPort string) string { return hostPort[strings.LastIndexByte(hostPort, ':')+1:] }

// readKubeProxySysctls reads /proc/sys/NAME for each name that exists.
func readKubeProxySysctls(names []string) map[string]string {
	vals := map[string]string{}
	for _, n := range names {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", n)); err == nil {
			vals[n] = strings.TrimSpace(string(b))
		}
	}
	return vals
}

// restoreKubeProxySysctls writes back what readKubeProxySysctls read that
// has changed since, like `sysctl -w NAME=VALUE`, and logs it.
func restoreKubeProxySysctls(t testing.TB, vals map[string]string) {
	t.Helper()
	now := readKubeProxySysctls(kubeProxySysctls)
	for _, n := range kubeProxySysctls {
		v, ok := vals[n]
		if !ok || now[n] == v {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", n), []byte(v+"\n"), 0o644); err != nil {
			t.Errorf("restoring sysctl %s=%s: %v", n, v, err)
			continue
		}
		t.Logf("sysctl %s back to %s (kube-proxy had set %s)", n, v, now[n])
	}
}

// kubeProxyTail is the last n lines of s.
func kubeProxyTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
