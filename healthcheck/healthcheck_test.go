package healthcheck

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/types"
)

// fakeNet is the listen function of most tests. Each address the Server asks
// for gets a real listener on 127.0.0.1 at a port the kernel picks, so the
// tests listen on loopback only whatever address is asked (":30001",
// "[fd00::1]:30001"), and they choose the health-check ports freely. Like the
// kernel, it refuses an address another process holds and one that overlaps
// an open one (same port, same host or either on all addresses).
type fakeNet struct {
	mu      sync.Mutex
	held    map[string]bool          // asked-for addresses another process holds
	open    map[string]*fakeListener // asked-for address -> its open listener
	real    map[string]string        // asked-for address -> last real address
	listens map[string]int           // asked-for address -> successful listens

	accepting atomic.Int64 // Accept calls in progress, over all listeners
}

func newFakeNet() *fakeNet {
	return &fakeNet{held: map[string]bool{}, open: map[string]*fakeListener{},
		real: map[string]string{}, listens: map[string]int{}}
}

func (f *fakeNet) listen(network, addr string) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if network != "tcp" {
		return nil, fmt.Errorf("listen %s %s: unexpected network", network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	for other := range f.open {
		oh, op, _ := net.SplitHostPort(other)
		if op == port && (host == "" || oh == "" || host == oh) {
			return nil, fmt.Errorf("listen tcp %s: overlaps open %s: %w", addr, other, syscall.EADDRINUSE)
		}
	}
	if f.held[addr] {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, syscall.EADDRINUSE)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &fakeListener{Listener: ln, f: f, asked: addr, closed: make(chan struct{})}
	f.open[addr] = l
	f.real[addr] = ln.Addr().String()
	f.listens[addr]++
	return l, nil
}

// openAddrs returns the asked-for addresses that have an open listener, sorted.
func (f *fakeNet) openAddrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for a := range f.open {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (f *fakeNet) listenCount(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listens[addr]
}

func (f *fakeNet) realAddr(t *testing.T, addr string) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.real[addr]
	if !ok {
		t.Fatalf("%s was never listened on; listened: %v", addr, f.listens)
	}
	return r
}

func (f *fakeNet) setHeld(addr string, held bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[addr] = held
}

func (f *fakeNet) listener(t *testing.T, addr string) *fakeListener {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.open[addr]
	if l == nil {
		t.Fatalf("%s is not open", addr)
	}
	return l
}

type fakeListener struct {
	net.Listener
	f      *fakeNet
	asked  string
	once   sync.Once
	closed chan struct{}
	broken atomic.Bool
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.f.accepting.Add(1)
	defer l.f.accepting.Add(-1)
	c, err := l.Listener.Accept()
	if l.broken.Load() {
		if c != nil {
			_ = c.Close()
		}
		return nil, errors.New("accept: broken by the test")
	}
	return c, err
}

func (l *fakeListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		l.f.mu.Lock()
		if l.f.open[l.asked] == l {
			delete(l.f.open, l.asked)
		}
		l.f.mu.Unlock()
		close(l.closed)
	})
	return err
}

// probe is one HTTP answer of a health-check port.
type probe struct {
	code    int
	ctype   string
	nosniff string
	body    string
}

var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// get asks http://addr/path, where addr is a real address.
func get(t *testing.T, addr, path string) probe {
	t.Helper()
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s%s: %v", addr, path, err)
	}
	return probe{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"), string(body)}
}

// refused checks that nothing listens on the real address addr any more.
func refused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		_ = c.Close()
		t.Fatalf("dial %s: connected, want connection refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// kubeProxyBody is the body kube-proxy's service_health.go writes: its
// dedented template, indented with tabs, trimmed of newlines.
func kubeProxyBody(ns, name string, local int, healthy bool) string {
	return fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
		ns, name, local, healthy)
}

type harness struct {
	s    *Server
	net  *fakeNet
	logs *observer.ObservedLogs
}

func newHarness(t *testing.T, healthy func() bool) *harness {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	f := newFakeNet()
	h := &harness{s: New(zap.New(core), healthy, f.listen), net: f, logs: logs}
	t.Cleanup(func() {
		if err := h.s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// get probes the port the Server opened at the asked-for address addr.
func (h *harness) get(t *testing.T, addr string) probe {
	t.Helper()
	return get(t, h.net.realAddr(t, addr), "/")
}

// webAddr is where webHarness serves default/web, as asked of fakeNet.
const webAddr = "127.0.0.1:30001"

// webHarness is a harness that already serves default/web, with one local
// endpoint, on webAddr.
func webHarness(t *testing.T, healthy func() bool) (*harness, Service) {
	t.Helper()
	h := newHarness(t, healthy)
	web := Service{Name: nsn("default", "web"), Port: 30001, LocalEndpoints: 1}
	h.sync(t, lo, web)
	return h, web
}

func (h *harness) sync(t *testing.T, addrs []netip.Addr, svcs ...Service) {
	t.Helper()
	if err := h.s.Sync(addrs, svcs); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func (h *harness) errorLogs() int {
	return h.logs.FilterMessage("health check port not served").Len()
}

func nsn(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

var lo = []netip.Addr{netip.MustParseAddr("127.0.0.1")}

func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		local    int
		healthy  func() bool
		wantCode int
		wantBody string
	}{
		{"one local endpoint", 1, nil, http.StatusOK, kubeProxyBody("default", "web", 1, true)},
		{"several local endpoints, healthy proxy", 3, func() bool { return true }, http.StatusOK, kubeProxyBody("default", "web", 3, true)},
		{"no local endpoint", 0, nil, http.StatusServiceUnavailable, kubeProxyBody("default", "web", 0, true)},
		{"unhealthy proxy with endpoints", 2, func() bool { return false }, http.StatusServiceUnavailable, kubeProxyBody("default", "web", 2, false)},
		{"unhealthy proxy, no endpoint", 0, func() bool { return false }, http.StatusServiceUnavailable, kubeProxyBody("default", "web", 0, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.healthy)
			h.sync(t, lo, Service{Name: nsn("default", "web"), Port: 30001, LocalEndpoints: tc.local})
			for _, path := range []string{"/", "/healthz", "/any/path?with=query"} {
				got := get(t, h.net.realAddr(t, "127.0.0.1:30001"), path)
				want := probe{tc.wantCode, "application/json", "nosniff", tc.wantBody}
				if got != want {
					t.Errorf("GET %s = %+v\nwant %+v", path, got, want)
				}
			}
		})
	}
}

// TestAnswerBytes pins the body to the bytes kube-proxy writes, without
// going through kubeProxyBody.
func TestAnswerBytes(t *testing.T) {
	h := newHarness(t, nil)
	h.sync(t, lo, Service{Name: nsn("kube-system", "ingress"), Port: 30001, LocalEndpoints: 1})
	want := "{\n" +
		"\t\"service\": {\n" +
		"\t\t\"namespace\": \"kube-system\",\n" +
		"\t\t\"name\": \"ingress\"\n" +
		"\t},\n" +
		"\t\"localEndpoints\": 1,\n" +
		"\t\"serviceProxyHealthy\": true\n" +
		"}"
	if got := h.get(t, "127.0.0.1:30001").body; got != want {
		t.Errorf("body = %q\nwant %q", got, want)
	}
}

func TestHealthyIsAskedAtEachRequest(t *testing.T) {
	var healthy atomic.Bool
	h, _ := webHarness(t, healthy.Load)
	if got := h.get(t, webAddr); got.code != http.StatusServiceUnavailable || !strings.Contains(got.body, `"serviceProxyHealthy": false`) {
		t.Errorf("unhealthy: %+v", got)
	}
	healthy.Store(true)
	if got := h.get(t, webAddr); got.code != http.StatusOK || !strings.Contains(got.body, `"serviceProxyHealthy": true`) {
		t.Errorf("healthy: %+v", got)
	}
}

func TestCountUpdateDoesNotReopen(t *testing.T) {
	h := newHarness(t, nil)
	web := Service{Name: nsn("default", "web"), Port: 30001}
	for _, local := range []int{0, 2, 1, 0, 5} {
		web.LocalEndpoints = local
		h.sync(t, lo, web)
		got := h.get(t, "127.0.0.1:30001")
		if got.body != kubeProxyBody("default", "web", local, true) {
			t.Errorf("local %d: body %q", local, got.body)
		}
	}
	// Another Service taking over the same port in one Sync: new name, same socket.
	h.sync(t, lo, Service{Name: nsn("other", "api"), Port: 30001, LocalEndpoints: 1})
	if got := h.get(t, "127.0.0.1:30001"); got.code != http.StatusOK || got.body != kubeProxyBody("other", "api", 1, true) {
		t.Errorf("after takeover: %+v", got)
	}
	if n := h.net.listenCount("127.0.0.1:30001"); n != 1 {
		t.Errorf("127.0.0.1:30001 listened %d times, want 1", n)
	}
}

func TestRemovedServiceClosesItsPort(t *testing.T) {
	h := newHarness(t, nil)
	a := Service{Name: nsn("default", "a"), Port: 30001, LocalEndpoints: 1}
	b := Service{Name: nsn("default", "b"), Port: 30002, LocalEndpoints: 1}
	h.sync(t, lo, a, b)
	if got := h.s.Ports(); !slices.Equal(got, []uint16{30001, 30002}) {
		t.Fatalf("Ports = %v", got)
	}
	h.sync(t, lo, b)
	if got := h.s.Ports(); !slices.Equal(got, []uint16{30002}) {
		t.Errorf("Ports = %v, want [30002]", got)
	}
	refused(t, h.net.realAddr(t, "127.0.0.1:30001"))
	if got := h.get(t, "127.0.0.1:30002"); got.code != http.StatusOK {
		t.Errorf("b: %+v", got)
	}
	h.sync(t, lo)
	if got := h.s.Ports(); len(got) != 0 {
		t.Errorf("Ports = %v, want none", got)
	}
	refused(t, h.net.realAddr(t, "127.0.0.1:30002"))
	if got := h.net.openAddrs(); len(got) != 0 {
		t.Errorf("still open: %v", got)
	}
}

func TestHeldPortIsReportedAndRetried(t *testing.T) {
	h := newHarness(t, nil)
	a := Service{Name: nsn("default", "a"), Port: 30001, LocalEndpoints: 1}
	b := Service{Name: nsn("default", "b"), Port: 30002, LocalEndpoints: 1}
	h.net.setHeld("127.0.0.1:30001", true)
	for i := range 3 {
		err := h.s.Sync(lo, []Service{a, b})
		var pe *PortError
		if !errors.As(err, &pe) || pe.Service != a.Name || pe.Port != 30001 || pe.Addr != "127.0.0.1:30001" || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("Sync %d: %v, want a PortError for default/a on 127.0.0.1:30001", i, err)
		}
		if !strings.Contains(err.Error(), "default/a") || !strings.Contains(err.Error(), "30001") {
			t.Errorf("error %q names neither the Service nor the port", err)
		}
		if got := h.get(t, "127.0.0.1:30002"); got.code != http.StatusOK {
			t.Errorf("b while a fails: %+v", got)
		}
		if got := h.s.Ports(); !slices.Equal(got, []uint16{30002}) {
			t.Errorf("Ports = %v, want [30002]", got)
		}
	}
	if n := h.errorLogs(); n != 1 {
		t.Errorf("the error was logged %d times over 3 Syncs, want once", n)
	}
	h.net.setHeld("127.0.0.1:30001", false)
	h.sync(t, lo, a, b)
	if got := h.get(t, "127.0.0.1:30001"); got.code != http.StatusOK || got.body != kubeProxyBody("default", "a", 1, true) {
		t.Errorf("a once freed: %+v", got)
	}
	if got := h.s.Ports(); !slices.Equal(got, []uint16{30001, 30002}) {
		t.Errorf("Ports = %v", got)
	}
	if n := h.net.listenCount("127.0.0.1:30002"); n != 1 {
		t.Errorf("b listened %d times, want 1", n)
	}
	// Held again after it was freed: a new occurrence, logged again.
	h.sync(t, lo, b)
	h.net.setHeld("127.0.0.1:30001", true)
	if err := h.s.Sync(lo, []Service{a, b}); err == nil {
		t.Fatal("Sync with the port held again: no error")
	}
	if n := h.errorLogs(); n != 2 {
		t.Errorf("error logs = %d, want 2", n)
	}
}

// TestHeldPortRealListen uses net.Listen itself (listen nil) on 127.0.0.1,
// with the port held by a real listener of the test.
func TestHeldPortRealListen(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Close() }()
	held := uint16(holder.Addr().(*net.TCPAddr).Port)
	free := freePort(t)

	s := New(zap.NewNop(), nil, nil)
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	svcs := []Service{
		{Name: nsn("default", "a"), Port: held, LocalEndpoints: 1},
		{Name: nsn("default", "b"), Port: free, LocalEndpoints: 1},
	}
	err = s.Sync(lo, svcs)
	var pe *PortError
	if !errors.As(err, &pe) || pe.Service != svcs[0].Name || pe.Port != held || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Sync = %v, want EADDRINUSE for default/a", err)
	}
	freeAddr := netip.AddrPortFrom(lo[0], free).String()
	if got := get(t, freeAddr, "/"); got.code != http.StatusOK || got.body != kubeProxyBody("default", "b", 1, true) {
		t.Errorf("b: %+v", got)
	}
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(lo, svcs); err != nil {
		t.Fatalf("Sync once freed: %v", err)
	}
	heldAddr := netip.AddrPortFrom(lo[0], held).String()
	if got := get(t, heldAddr, "/"); got.code != http.StatusOK || got.body != kubeProxyBody("default", "a", 1, true) {
		t.Errorf("a: %+v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	refused(t, heldAddr)
	refused(t, freeAddr)
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func TestDuplicatePort(t *testing.T) {
	for _, tc := range []struct {
		name         string
		svcs         []Service
		winner, lost types.NamespacedName
	}{
		{"same namespace: first name wins",
			[]Service{{Name: nsn("default", "b"), Port: 30001, LocalEndpoints: 1}, {Name: nsn("default", "a"), Port: 30001, LocalEndpoints: 1}},
			nsn("default", "a"), nsn("default", "b")},
		{"namespace before name",
			[]Service{{Name: nsn("ns1", "z"), Port: 30001, LocalEndpoints: 1}, {Name: nsn("ns2", "a"), Port: 30001, LocalEndpoints: 1}},
			nsn("ns1", "z"), nsn("ns2", "a")},
		{"namespace before name, listed the other way",
			[]Service{{Name: nsn("ns2", "a"), Port: 30001, LocalEndpoints: 1}, {Name: nsn("ns1", "z"), Port: 30001, LocalEndpoints: 1}},
			nsn("ns1", "z"), nsn("ns2", "a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			err := h.s.Sync(lo, tc.svcs)
			var pe *PortError
			if !errors.As(err, &pe) || pe.Service != tc.lost || pe.Port != 30001 {
				t.Fatalf("Sync = %v, want a PortError for %s", err, tc.lost)
			}
			if !strings.Contains(err.Error(), tc.winner.String()) {
				t.Errorf("error %q does not name the winner %s", err, tc.winner)
			}
			if got := h.get(t, "127.0.0.1:30001"); got.body != kubeProxyBody(tc.winner.Namespace, tc.winner.Name, 1, true) {
				t.Errorf("body %q, want %s's", got.body, tc.winner)
			}
		})
	}
}

func TestBadInputIsReportedNotServed(t *testing.T) {
	h := newHarness(t, nil)
	err := h.s.Sync([]netip.Addr{{}, lo[0]}, []Service{
		{Name: nsn("default", "zero"), Port: 0, LocalEndpoints: 1},
		{Name: nsn("default", "web"), Port: 30001, LocalEndpoints: 1},
	})
	var pe *PortError
	if !errors.As(err, &pe) || pe.Service != nsn("default", "zero") || !strings.Contains(err.Error(), "invalid address") {
		t.Fatalf("Sync = %v, want port 0 of default/zero and the invalid address reported", err)
	}
	if got := h.net.openAddrs(); !slices.Equal(got, []string{"127.0.0.1:30001"}) {
		t.Errorf("open = %v, want only 127.0.0.1:30001", got)
	}
}

func TestListenAddresses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		want  []string
	}{
		{"none means all addresses", nil, []string{":30001", ":30002"}},
		{"IPv4", []string{"10.0.0.1"}, []string{"10.0.0.1:30001", "10.0.0.1:30002"}},
		{"IPv6 is bracketed", []string{"fd00::1"}, []string{"[fd00::1]:30001", "[fd00::1]:30002"}},
		{"dual-stack, duplicates once", []string{"10.0.0.1", "fd00::1", "10.0.0.1"},
			[]string{"10.0.0.1:30001", "10.0.0.1:30002", "[fd00::1]:30001", "[fd00::1]:30002"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			var addrs []netip.Addr
			for _, a := range tc.addrs {
				addrs = append(addrs, netip.MustParseAddr(a))
			}
			h.sync(t, addrs, Service{Name: nsn("default", "a"), Port: 30001, LocalEndpoints: 1},
				Service{Name: nsn("default", "b"), Port: 30002})
			if got := h.net.openAddrs(); !slices.Equal(got, tc.want) {
				t.Errorf("open = %v, want %v", got, tc.want)
			}
			for _, addr := range tc.want {
				want := http.StatusOK
				if strings.HasSuffix(addr, ":30002") {
					want = http.StatusServiceUnavailable
				}
				if got := h.get(t, addr); got.code != want {
					t.Errorf("%s: %d, want %d", addr, got.code, want)
				}
			}
		})
	}
}

func TestChangingAddresses(t *testing.T) {
	h := newHarness(t, nil)
	web := Service{Name: nsn("default", "web"), Port: 30001, LocalEndpoints: 1}
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	steps := []struct {
		addrs []netip.Addr
		want  []string
	}{
		{nil, []string{":30001"}},
		// ":30001" overlaps "10.0.0.1:30001" in fakeNet as in the kernel: it
		// must be closed before the new one opens.
		{[]netip.Addr{v4}, []string{"10.0.0.1:30001"}},
		{[]netip.Addr{v4, v6}, []string{"10.0.0.1:30001", "[fd00::1]:30001"}},
		{[]netip.Addr{v6}, []string{"[fd00::1]:30001"}},
		{nil, []string{":30001"}},
	}
	for i, step := range steps {
		h.sync(t, step.addrs, web)
		if got := h.net.openAddrs(); !slices.Equal(got, step.want) {
			t.Fatalf("step %d (%v): open = %v, want %v", i, step.addrs, got, step.want)
		}
		for _, addr := range step.want {
			if got := h.get(t, addr); got.code != http.StatusOK {
				t.Errorf("step %d: %s answered %d", i, addr, got.code)
			}
		}
	}
	if got := h.s.Ports(); !slices.Equal(got, []uint16{30001}) {
		t.Errorf("Ports = %v", got)
	}
	// 10.0.0.1 was kept, not reopened, when fd00::1 was added beside it.
	for addr, want := range map[string]int{":30001": 2, "10.0.0.1:30001": 1, "[fd00::1]:30001": 1} {
		if n := h.net.listenCount(addr); n != want {
			t.Errorf("%s listened %d times, want %d", addr, n, want)
		}
	}
}

func TestClose(t *testing.T) {
	h := newHarness(t, nil)
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}
	svcs := []Service{
		{Name: nsn("default", "a"), Port: 30001, LocalEndpoints: 1},
		{Name: nsn("default", "b"), Port: 30002, LocalEndpoints: 1},
	}
	h.sync(t, addrs, svcs...)
	open := h.net.openAddrs()
	if len(open) != 4 {
		t.Fatalf("open = %v, want 4 listeners", open)
	}
	if err := h.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := h.net.openAddrs(); len(got) != 0 {
		t.Errorf("open after Close = %v", got)
	}
	if n := h.net.accepting.Load(); n != 0 {
		t.Errorf("%d Accept calls still running after Close: a Serve goroutine outlived it", n)
	}
	if got := h.s.Ports(); len(got) != 0 {
		t.Errorf("Ports after Close = %v", got)
	}
	for _, addr := range open {
		refused(t, h.net.realAddr(t, addr))
	}
	if err := h.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// A closed Server can be synced again.
	h.sync(t, addrs, svcs...)
	if got := h.get(t, "[fd00::1]:30002"); got.code != http.StatusOK {
		t.Errorf("after reopening: %+v", got)
	}
}

func TestStoppedListenerIsReopened(t *testing.T) {
	h, web := webHarness(t, nil)
	l := h.net.listener(t, webAddr)
	l.broken.Store(true)
	// Wake the Accept up; it fails, and Serve stops and closes the listener.
	if c, err := net.Dial("tcp", h.net.realAddr(t, webAddr)); err == nil {
		_ = c.Close()
	}
	<-l.closed
	// Serve returns just after closing its listener: the Sync that sees it
	// stopped reopens it.
	deadline := time.Now().Add(10 * time.Second)
	for h.net.listenCount(webAddr) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the stopped listener was not reopened")
		}
		time.Sleep(time.Millisecond)
		h.sync(t, lo, web)
	}
	if got := h.get(t, webAddr); got.code != http.StatusOK {
		t.Errorf("after reopening: %+v", got)
	}
	if n := h.logs.FilterMessage("health check server stopped").Len(); n != 1 {
		t.Errorf("stop logged %d times, want 1", n)
	}
}

// TestProbesDuringSyncs is for the race detector: handlers read the status
// while Sync replaces it.
func TestProbesDuringSyncs(t *testing.T) {
	h, web := webHarness(t, nil)
	addr := h.net.realAddr(t, webAddr)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					t.Errorf("GET: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	for i := range 50 {
		web.LocalEndpoints = i % 3
		h.sync(t, lo, web)
	}
	wg.Wait()
	want := strconv.Itoa(49 % 3)
	if got := h.get(t, webAddr); !strings.Contains(got.body, `"localEndpoints": `+want) {
		t.Errorf("final body %q, want localEndpoints %s", got.body, want)
	}
}
