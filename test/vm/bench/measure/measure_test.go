package measure

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// procIPVS is /proc/net/ip_vs for Layout{2, 2}: 10.96.16.0:80 and
// 10.96.16.1:80, endpoints 10.244.1.0-3:8080, and the kubernetes Service.
const procIPVS = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A600001:01BB rr
TCP  0A601000:0050 rr
  -> 0AF40100:1F90      Masq    1      0          0
  -> 0AF40101:1F90      Masq    1      0          0
TCP  0A601001:0050 rr
  -> 0AF40102:1F90      Masq    1      0          0
  -> 0AF40103:1F90      Masq    1      0          0
FWM  00002001 rr persistent 10800 FFFFFFFF
`

func TestLayoutAddresses(t *testing.T) {
	l := Layout{Services: 1000, Endpoints: 5, Changes: 40}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{VIP(0).String(), "10.96.16.0"},
		{VIP(300).String(), "10.96.17.44"},
		{l.Endpoint(0, 0).String(), "10.244.1.0"},
		{l.Endpoint(1, 2).String(), "10.244.1.7"},
		{l.Replacement(0).String(), "10.244.20.136"}, // 10.244.1.0 + 5000
		{VS(2).String(), "10.96.16.2:80"},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
	}
	seen := map[int]bool{}
	for k := 0; k < l.Changes; k++ {
		i := l.ChangedService(k)
		if seen[i] || i < 0 || i >= l.Services {
			t.Errorf("change %d touches Service %d twice or out of range", k, i)
		}
		seen[i] = true
	}
	if w := l.WarmUpService(); w != 999 || seen[w] {
		t.Errorf("WarmUpService = %d, want 999, which no change touches", w)
	}
	if got := l.WarmUpAddress().String(); got != "10.244.20.176" { // after the 40 replacements
		t.Errorf("WarmUpAddress = %s", got)
	}
	if w := (Layout{Services: 3, Endpoints: 1, Changes: 3}).WarmUpService(); w != -1 {
		t.Errorf("every Service changed: WarmUpService = %d, want -1", w)
	}
	if w := (Layout{Services: 4, Endpoints: 1, Changes: 2}).WarmUpService(); w != 3 {
		t.Errorf("changes touch 0 and 2: WarmUpService = %d, want 3", w)
	}
	if err := (Layout{Services: 20000, Endpoints: 5}).Validate(); err == nil {
		t.Error("100,000 pod addresses validated")
	}
	if err := (Layout{Services: 20, Endpoints: 2, Changes: 21}).Validate(); err == nil {
		t.Error("more changes than Services validated")
	}
}

func TestCountAndParseIPVS(t *testing.T) {
	v, r := CountIPVS([]byte(procIPVS))
	if v != 4 || r != 4 {
		t.Errorf("CountIPVS = %d, %d; want 4, 4", v, r)
	}
	if v, r := CountIPVS([]byte(strings.Join(strings.Split(procIPVS, "\n")[:3], "\n") + "\n")); v != 0 || r != 0 {
		t.Errorf("CountIPVS of an empty table = %d, %d", v, r)
	}
	tab, err := ParseIPVS([]byte(procIPVS))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 4 {
		t.Fatalf("parsed %d virtual servers: %v", len(tab), tab)
	}
	vs := tab[VSKey{Proto: "TCP", Addr: VS(1)}]
	if vs == nil || vs.Scheduler != "rr" || len(vs.Real) != 2 || vs.Real[1].Addr.String() != "10.244.1.3:8080" || vs.Real[1].Forward != "Masq" {
		t.Errorf("10.96.16.1:80 parsed as %+v", vs)
	}
	if tab[VSKey{Proto: "FWM", Mark: 0x2001}] == nil {
		t.Error("no FWM 0x2001")
	}
	if _, err := ParseIPVS([]byte("a\nb\nc\n  -> 0A000001:0050 Masq 1 0 0\n")); err == nil {
		t.Error("a real server before any virtual server parsed")
	}
}

func TestLayoutCheck(t *testing.T) {
	l := Layout{Services: 2, Endpoints: 2, Changes: 1}
	tab, err := ParseIPVS([]byte(procIPVS))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(tab, 0); err != nil {
		t.Errorf("the expected table: %v", err)
	}
	// Change 0 replaces endpoint 0 (10.244.1.0) of Service 0 by 10.244.1.4,
	// and the warm-up before it endpoint 0 (10.244.1.2) of Service 1 by
	// 10.244.1.5.
	if err := l.Check(tab, 1); err == nil || !strings.Contains(err.Error(), "missing 10.244.1.4:8080") ||
		!strings.Contains(err.Error(), "unexpected 10.244.1.0:8080") || !strings.Contains(err.Error(), "missing 10.244.1.5:8080") {
		t.Errorf("before change 0 and the warm-up are applied: %v", err)
	}
	changed := strings.Replace(procIPVS, "0AF40100:1F90", "0AF40104:1F90", 1)
	tab, _ = ParseIPVS([]byte(changed))
	if err := l.Check(tab, 1); err == nil || !strings.Contains(err.Error(), "missing 10.244.1.5:8080") {
		t.Errorf("after change 0 but not the warm-up: %v", err)
	}
	changed = strings.Replace(changed, "0AF40102:1F90", "0AF40105:1F90", 1)
	tab, _ = ParseIPVS([]byte(changed))
	if err := l.Check(tab, 1); err != nil {
		t.Errorf("after change 0 and the warm-up: %v", err)
	}
	bad := strings.Replace(procIPVS, "0AF40103:1F90      Masq    1", "0AF40103:1F90      Masq    0", 1)
	bad += "TCP  0A601005:0050 rr\n"
	tab, _ = ParseIPVS([]byte(bad))
	err = (Layout{Services: 6, Endpoints: 2}).Check(tab, 0)
	for _, want := range []string{"TCP 10.96.16.1:80: 10.244.1.3:8080 Masq weight 0", "TCP 10.96.16.2:80 missing", "TCP 10.96.16.5:80: missing 10.244.1.10:8080"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	if err := (Layout{Services: 1, Endpoints: 2}).Check(tab, 0); err == nil || !strings.Contains(err.Error(), "10.96.16.1:80: not a benchmark") {
		t.Errorf("a virtual server beyond the layout: %v", err)
	}
}

func TestCPUTimeAndPeakRSS(t *testing.T) {
	stat := "1234 (kube proxy (x)) S 1 1234 1234 0 -1 4194560 5000 0 0 0 150 50 7 3 20 0 12 0 400 1000000 2000 18446744073709551615\n"
	got, err := CPUTime([]byte(stat))
	if err != nil || got != 2100*time.Millisecond {
		t.Errorf("CPUTime = %v, %v; want 2.1s", got, err)
	}
	if _, err := CPUTime([]byte("1234 (x) S 1 2")); err == nil {
		t.Error("a short stat parsed")
	}
	status := "Name:\tkube-ipvs\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n"
	if rss, err := PeakRSS([]byte(status)); err != nil || rss != 50<<20 {
		t.Errorf("PeakRSS = %d, %v; want 50 MiB", rss, err)
	}
	if _, err := PeakRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmHWM parsed")
	}
}

func TestIdleDetector(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var d IdleDetector
	// Busy (50% CPU) for 5 s, then nothing: idle from the first sample after 5 s.
	cpu := time.Duration(0)
	var idleAt time.Time
	for i := 0; i <= 40; i++ {
		at := t0.Add(time.Duration(i) * 250 * time.Millisecond)
		if i <= 20 {
			cpu = time.Duration(i) * 125 * time.Millisecond
		}
		if got, used, ok := d.Add(at, cpu); ok {
			idleAt = got
			if used != 2500*time.Millisecond {
				t.Errorf("CPU by the idle point %v, want 2.5s", used)
			}
			break
		}
	}
	if want := t0.Add(5 * time.Second); !idleAt.Equal(want) {
		t.Errorf("idle at %v, want %v", idleAt.Sub(t0), want.Sub(t0))
	}
	// Never idle at 10% CPU.
	var busy IdleDetector
	for i := 0; i <= 40; i++ {
		if _, _, ok := busy.Add(t0.Add(time.Duration(i)*250*time.Millisecond), time.Duration(i)*25*time.Millisecond); ok {
			t.Fatalf("idle at 10%% CPU after sample %d", i)
		}
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 10; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(ds)
	if s.N != 10 || s.Min != time.Millisecond || s.Median != 5*time.Millisecond || s.P90 != 9*time.Millisecond || s.Max != 10*time.Millisecond {
		t.Errorf("Summarize = %+v", s)
	}
	if ds[0] != 10*time.Millisecond {
		t.Error("Summarize sorted its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not zero")
	}
}

func TestHistogramAndResyncs(t *testing.T) {
	scrape := func(sum, count string) string {
		return "# TYPE kubeproxy_sync_full_proxy_rules_duration_seconds histogram\n" +
			`kubeproxy_sync_full_proxy_rules_duration_seconds_bucket{ip_family="IPv4",le="+Inf"} ` + count + "\n" +
			`kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv4"} ` + sum + "\n" +
			`kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} ` + count + "\n" +
			`kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 99` + "\n"
	}
	const name, labels = "kubeproxy_sync_full_proxy_rules_duration_seconds", `ip_family="IPv4"`
	sum, count, ok := HistogramSumCount(scrape("12.5", "3"), name, labels)
	if !ok || sum != 12.5 || count != 3 {
		t.Fatalf("HistogramSumCount = %v, %v, %v", sum, count, ok)
	}
	if _, _, ok := HistogramSumCount(scrape("1", "1"), name, `ip_family="IPv6"`); ok {
		t.Error("found an IPv6 series")
	}
	var r Resyncs
	for _, s := range [][2]float64{{10, 1}, {10, 1}, {12, 2}, {12, 2}, {12.5, 3}, {17.5, 5}} {
		r.Add(s[0], s[1])
	}
	if r.Count() != 4 || r.Mean() != 1875*time.Millisecond || r.Max() != 2500*time.Millisecond || r.MaxExact() {
		t.Errorf("Resyncs: count %d mean %v max %v exact %v", r.Count(), r.Mean(), r.Max(), r.MaxExact())
	}
}

func TestTableAndTargets(t *testing.T) {
	ms := time.Millisecond
	lat := func(median, max time.Duration) []time.Duration {
		return []time.Duration{median, median, median, max}
	}
	rows := map[string]Row{
		Floor:                    {Result: &Result{Proxy: Floor, Time: 2000 * ms, CPU: 1500 * ms, PeakRSS: 8 << 20}},
		RowName(KubeIPVS, Join):  {Result: &Result{Proxy: KubeIPVS, Situation: Join, Time: 2600 * ms, PeakRSS: 40 << 20, IdleAfter: 3 * time.Second, Changes: lat(50*ms, 900*ms), Resyncs: 3, ResyncMean: 400 * ms, ResyncMax: 500 * ms, ResyncMaxExact: true}},
		RowName(KubeIPVS, Burst): {Err: errFake},
		RowName(KubeProxy, Join): {Result: &Result{Proxy: KubeProxy, Situation: Join, Time: 60 * time.Second, PeakRSS: 100 << 20, IdleAfter: -1, IdleLimit: 5 * time.Minute, Changes: lat(10*time.Second, 20*time.Second)}},
	}
	tab := Table(rows)
	for _, want := range []string{
		"| floor | 2s |",
		"| kube-ipvs join | 2.6s | 1.30 | 0.043 | 0.00 | 40.0 | 3s | 50ms / 50ms / 900ms / 900ms (4) | 400ms / 500ms (3) |",
		"| kube-ipvs burst | FAILED |",
		"| > 5m0s after |",
	} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	got := FormatTargets(Targets(rows))
	for _, want := range []string{
		"kube-ipvs join ≤ 0.15 × kube-proxy join:", "met      0.043",
		"kube-ipvs join ≤ 1.5 × floor:", "met      1.300",
		"kube-ipvs burst ≤ 0.15 × kube-proxy burst:", "not judged: a run it needs failed",
		"kube-ipvs median change latency ≤ 0.01 × kube-proxy's (join):", "met      0.005",
		"kube-ipvs join: slowest change ≤ 20 × its median:", "met      18.0 (900ms / 50ms)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("targets lack %q:\n%s", want, got)
		}
	}
}

type fakeErr struct{}

func (fakeErr) Error() string { return "fake" }

var errFake error = fakeErr{}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		1500 * time.Microsecond: "1.5ms", 812 * time.Millisecond: "812ms", 4270 * time.Millisecond: "4.27s",
		192 * time.Second: "3m12s", 300 * time.Microsecond: "300µs",
	} {
		if got := Short(d); got != want {
			t.Errorf("Short(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestFasterFloor(t *testing.T) {
	floor := func(d time.Duration, notes ...string) Row {
		return Row{Name: Floor, Result: &Result{Proxy: Floor, Time: d, CPU: d, Notes: notes}}
	}
	slow, fast := floor(6730*time.Millisecond, "kernel work 6.6s of it"), floor(2580*time.Millisecond, "kernel work 2.5s of it")
	for _, pair := range [][2]Row{{slow, fast}, {fast, slow}} {
		got := FasterFloor(pair[0], pair[1])
		if got.Err != nil || got.Result == nil || got.Result.Time != 2580*time.Millisecond || got.Name != Floor {
			t.Fatalf("FasterFloor = %+v, want the 2.58s boot", got)
		}
		want := []string{"kernel work 2.5s of it", fmt.Sprintf("the faster of two boots, one before the proxies' runs and one after: %v and %v",
			pair[0].Result.Time, pair[1].Result.Time)}
		if !slices.Equal(got.Result.Notes, want) {
			t.Errorf("notes %q, want %q", got.Result.Notes, want)
		}
	}
	if len(fast.Result.Notes) != 1 || len(slow.Result.Notes) != 1 {
		t.Errorf("the boots' own notes changed: %q, %q", fast.Result.Notes, slow.Result.Notes)
	}
	failed := Row{Name: Floor, Err: errors.New("the floor exited 1")}
	for _, pair := range [][2]Row{{failed, fast}, {fast, failed}} {
		if got := FasterFloor(pair[0], pair[1]); got.Err == nil {
			t.Errorf("FasterFloor(%v, %v) = %+v, want the failure", pair[0].Err, pair[1].Err, got)
		}
	}
}
