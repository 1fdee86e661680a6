package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/inspect"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// fakeProxier is a real proxier on fake kernel parts, with one Service,
// default/web (ClusterIP 10.96.0.10, port http 80/TCP), one ready pod web-a.
func fakeProxier(t *testing.T) *proxier.Proxier {
	t.Helper()
	ipt, sets := iptables.NewFakeKernel()
	k := proxier.Kernel{IPVS: ipvs.NewFake(), Addrs: netif.NewFakeAddrs(netif.DefaultLink), IPTables: ipt, Sets: sets, Conntrack: conntrack.NewFake()}
	p := proxier.New(zap.NewNop(), k, proxier.Options{
		Build: proxier.BuildConfig{NodeName: "node-a", Scheduler: "rr", Family: v1.IPv4Protocol},
		Rules: proxier.RuleConfig{Family: v1.IPv4Protocol, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, MasqueradeBit: 14},
	})
	p.OnService(&v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	})
	p.OnSlice(&discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discovery.LabelServiceName: "web"}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(8080))}},
		Endpoints: []discovery.Endpoint{{Addresses: []string{"10.244.1.2"}, NodeName: ptr.To("node-a"),
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &v1.ObjectReference{Kind: "Pod", Name: "web-a"}}},
	})
	if err := p.Sync(true); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDebug serves p on path until the test ends; it returns when the
// socket answers, and the channel serveDebug's result comes on.
func startDebug(t *testing.T, path string, p *proxier.Proxier) (context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveDebug(ctx, zaptest.NewLogger(t), path, p) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return cancel, done
		}
		select {
		case err := <-done:
			t.Fatalf("serveDebug: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the debug socket never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runInspect(args[0], args[1:], &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestShowAndExplainOverTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "kube-ipvs.sock")
	cancel, done := startDebug(t, path, fakeProxier(t))
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket 0600", fi.Mode())
	}
	if dir, _ := os.Stat(filepath.Dir(path)); dir.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode = %v, want 0700", dir.Mode())
	}

	code, out, errOut := run(t, "show", "--debug-socket", path, "-o", "json")
	if code != 0 {
		t.Fatalf("show -o json: %d %s", code, errOut)
	}
	var s inspect.Show
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("show -o json: %v\n%s", err, out)
	}
	if len(s.VirtualServers) != 1 || s.VirtualServers[0].Service != "default/web" || s.VirtualServers[0].RealServers[0].Pod != "default/web-a" {
		t.Errorf("show = %+v", s)
	}

	code, out, _ = run(t, "show", "--debug-socket", path)
	if code != 0 || !strings.Contains(out, "TCP  10.96.0.10:80") || !strings.Contains(out, "default/web-a") {
		t.Errorf("show: %d\n%s", code, out)
	}

	// Flags after the target too.
	code, out, _ = run(t, "explain", "10.96.0.10:81", "--debug-socket", path)
	if code != 0 || !strings.Contains(out, "REJECTED") || !strings.Contains(out, "kubernetes#72236") {
		t.Errorf("explain 10.96.0.10:81: %d\n%s", code, out)
	}
	code, out, _ = run(t, "explain", "--debug-socket", path, "-o", "json", "--from", "10.244.1.2", "10.96.0.10:80/tcp")
	var e inspect.Explanation
	if err := json.Unmarshal([]byte(out), &e); code != 0 || err != nil {
		t.Fatalf("explain -o json: %d %v\n%s", code, err, out)
	}
	if len(e.Paths) != 1 || e.Paths[0].Source != "10.244.1.2" || e.Paths[0].Verdict != inspect.VerdictServed || !e.Paths[0].Endpoints[0].Masquerade {
		t.Errorf("explain from the endpoint itself (hairpin) = %+v", e.Paths)
	}

	// Bad requests: usage errors before asking, the agent's 400 after.
	for _, args := range [][]string{{"explain", "--debug-socket", path}, {"explain", "--debug-socket", path, "10.96.0.10"},
		{"show", "--debug-socket", path, "-o", "yaml"}, {"show", "--debug-socket", path, "extra"}} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	code, _, errOut = run(t, "explain", "--debug-socket", path, "--from", "nope", "10.96.0.10:80")
	if code != 1 || !strings.Contains(errOut, "from: ") {
		t.Errorf("explain --from nope: %d %s", code, errOut)
	}

	// Go's profiles, for root on the node only.
	hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := hc.Get("http://kube-ipvs/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Errorf("GET /debug/pprof/heap: %d %.200s", resp.StatusCode, body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveDebug: %v", err)
	}
	done <- nil // for the cleanup
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after the agent stopped: %v", err)
	}
	if code, _, errOut := run(t, "show", "--debug-socket", path); code != 1 || !strings.Contains(errOut, "no kube-ipvs agent answers on "+path) {
		t.Errorf("show without an agent: %d %s", code, errOut)
	}
}

func TestDebugSocketReplacesAStaleOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kube-ipvs.sock")
	// What a killed agent leaves: a socket file nobody listens on.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	startDebug(t, path, fakeProxier(t))
	if code, out, errOut := run(t, "show", "--debug-socket", path); code != 0 || !strings.Contains(out, "default/web") {
		t.Errorf("show: %d %s%s", code, out, errOut)
	}
}

func TestDebugSocketLeavesOthersAlone(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{live: "served by another process", file: "is not a socket"} {
		err := serveDebug(context.Background(), zap.NewNop(), path, fakeProxier(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("serveDebug on %s: %v, want %q", path, err, want)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s was removed: %v", path, err)
		}
	}
	if err := serveDebug(context.Background(), zap.NewNop(), filepath.Join(file, "sub.sock"), fakeProxier(t)); err == nil {
		t.Error("serveDebug under a regular file: no error")
	}
}
