//go:build vmguest

package guestbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	libipvs "github.com/moby/ipvs"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
	"github.com/kube-ipvs/kube-ipvs/test/vm/guest"
)

// readIPVS reads /proc/net/ip_vs in one pass into buf (grown as needed).
func readIPVS(buf *bytes.Buffer) ([]byte, error) {
	f, err := os.Open("/proc/net/ip_vs")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf.Reset()
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

// The pause after a read: pace times the CPU the read cost, from
// minPoll to maxPoll, so that the polling takes about a tenth of the
// VM's one CPU from the proxy (a sample of measure.SampleSize costs a
// few milliseconds). A sample that found every Service it checked
// complete is followed at once by the whole read it calls for; a join
// at 5,000 Services spends 1.5 to 2.5 s of CPU on polling in all.
const (
	pace    = 10
	minPoll = 100 * time.Millisecond
	maxPoll = 2 * time.Second
)

// selfCPU is the CPU this process used so far (wall time would count the
// time the proxy held the CPU).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitConverged polls IPVS until /proc/net/ip_vs holds exactly the
// layout (measure.Layout.Check) and returns the end of that read and how
// much later than the truth that may be: back to the start of the last
// read that saw the layout incomplete. Between whole reads of
// /proc/net/ip_vs (costly at thousands of Services) it checks samples
// of what the last whole read found incomplete over netlink, as
// measure.Convergence decides. start is when the layout was last known
// incomplete (the proxy's start or the burst's). It fails the test,
// with what the kernel held, if the proxy exits or p.timeout passes.
func waitConverged(t *testing.T, p params, proc *guest.Proc, start time.Time) (time.Time, time.Duration) {
	t.Helper()
	l := p.layout
	h, err := libipvs.New("")
	if err != nil {
		t.Fatalf("IPVS netlink: %v", err)
	}
	defer h.Close()
	var buf bytes.Buffer
	conv := measure.NewConvergence(start, uint64(start.UnixNano()))
	cpu0 := selfCPU()
	deadline := time.Now().Add(p.timeout)
	nextLog := time.Now().Add(15 * time.Second)
	var (
		v, r     int
		mismatch error
		pause    time.Duration
		wholes   int
		samples  int
	)
	for {
		at, cpu := time.Now(), selfCPU()
		if conv.WantWhole() {
			wholes++
			b, err := readIPVS(&buf)
			if err != nil {
				t.Fatalf("reading /proc/net/ip_vs: %v", err)
			}
			end := time.Now()
			v, r = measure.CountIPVS(b)
			tab, err := measure.ParseIPVS(b)
			if err != nil {
				t.Fatal(err)
			}
			if mismatch = l.Check(tab, 0); mismatch == nil {
				t.Logf("IPVS held the layout: %d whole reads of /proc/net/ip_vs and %d netlink samples took %v of CPU",
					wholes, samples, (selfCPU() - cpu0).Round(time.Millisecond))
				return end, end.Sub(conv.Since())
			}
			incomplete := l.Incomplete(tab)
			conv.Whole(at, incomplete)
			pause = min(max(pace*(selfCPU()-cpu), minPoll), maxPoll)
			if len(incomplete) > 0 {
				// What is pending is checked by samples; the first may
				// come soon, its cost paces the next.
				pause = minPoll
			}
		} else {
			samples++
			conv.Sampled(at, conv.Sample(), func(i int) bool { return completeOverNetlink(h, l, i) })
			pause = min(max(pace*(selfCPU()-cpu), minPoll), maxPoll)
			if conv.WantWhole() {
				pause = 0 // the whole read it calls for
			}
		}
		if done, err := proc.Exited(); done {
			t.Fatalf("the proxy exited (%v) with %d virtual and %d real servers in IPVS at the last whole read:\n%s", err, v, r, tail(proc.Output(), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("IPVS did not hold the %d Services within %v: %d virtual and %d real servers at the last whole read (want %d and %d): %v\nthe proxy's output:\n%s",
				l.Services, p.timeout, v, r, l.Services, l.Services*l.Endpoints, mismatch, tail(proc.Output(), 40))
		}
		if time.Now().After(nextLog) {
			t.Logf("IPVS: %d virtual servers, %d real servers at the last whole read (want %d and %d); %d Services pending",
				v, r, l.Services, l.Services*l.Endpoints, conv.Pending())
			nextLog = time.Now().Add(15 * time.Second)
		}
		time.Sleep(time.Until(at.Add(pause)))
	}
}

// completeOverNetlink reports whether Service i's virtual server holds
// exactly its real servers (measure.Layout.Complete), read alone.
func completeOverNetlink(h *libipvs.Handle, l measure.Layout, i int) bool {
	vs := &libipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
		Address: net.IP(measure.VIP(i).AsSlice()), Port: measure.ServicePort}
	dests, err := h.GetDestinations(vs)
	if err != nil {
		return false
	}
	real := make([]measure.RealServer, 0, len(dests))
	for _, d := range dests {
		a, _ := netip.AddrFromSlice(d.Address)
		fwd := "Masq"
		if d.ConnectionFlags&libipvs.ConnectionFlagFwdMask != libipvs.ConnectionFlagMasq {
			fwd = "other"
		}
		real = append(real, measure.RealServer{Addr: netip.AddrPortFrom(a.Unmap(), d.Port), Forward: fwd, Weight: d.Weight})
	}
	return l.Complete(i, real)
}

// cpuOf is the CPU the proxy used so far, children included.
func cpuOf(t *testing.T, proc *guest.Proc) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", proc.PID()))
	if err != nil {
		t.Fatalf("the proxy's CPU: %v", err)
	}
	d, err := measure.CPUTime(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// peakRSSOf is the proxy's VmHWM.
func peakRSSOf(t *testing.T, proc *guest.Proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.PID()))
	if err != nil {
		t.Fatalf("the proxy's status: %v", err)
	}
	n, err := measure.PeakRSS(b)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// logRSS logs what the proxy's resident set is made of now (anonymous
// memory, mapped files, shared memory such as its binary on the
// initramfs), beside its peak: the breakdown of the peak itself is not
// kept by the kernel.
func logRSS(t *testing.T, proc *guest.Proc) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.PID()))
	if err != nil {
		t.Fatalf("the proxy's status: %v", err)
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "VmHWM" || k == "VmRSS" || strings.HasPrefix(k, "Rss")) {
			parts = append(parts, k+" "+strings.Join(strings.Fields(v), " "))
		}
	}
	t.Logf("resident set now: %s", strings.Join(parts, ", "))
}

// idleSample is how often waitIdle reads the proxy's CPU.
const idleSample = 250 * time.Millisecond

// waitIdle samples the proxy's CPU until the idle rule holds
// (measure.IdleWindow, measure.IdleCPU), for at most limit: the start of
// the idle window and the CPU used by then.
func waitIdle(t *testing.T, proc *guest.Proc, limit time.Duration) (time.Time, time.Duration, bool) {
	t.Helper()
	var d measure.IdleDetector
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if done, err := proc.Exited(); done {
			t.Fatalf("the proxy exited (%v):\n%s", err, tail(proc.Output(), 40))
		}
		if at, cpu, ok := d.Add(time.Now(), cpuOf(t, proc)); ok {
			return at, cpu, true
		}
		time.Sleep(idleSample)
	}
	return time.Time{}, 0, false
}

// resyncFollower scrapes the proxy's sync histogram every half second.
type resyncFollower struct {
	r    measure.Resyncs
	mu   sync.Mutex
	quit chan struct{}
	done chan struct{}
}

func followResyncs(px proxy) *resyncFollower {
	f := &resyncFollower{quit: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Timeout: 5 * time.Second}
	go func() {
		defer close(f.done)
		for {
			if body, err := get(c, px.metrics); err == nil {
				if sum, count, ok := measure.HistogramSumCount(body, px.histogram, `ip_family="IPv4"`); ok {
					f.mu.Lock()
					f.r.Add(sum, count)
					f.mu.Unlock()
				}
			}
			select {
			case <-f.quit:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return f
}

// stop takes a last scrape and stops.
func (f *resyncFollower) stop() {
	close(f.quit)
	<-f.done
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// makeChanges makes the layout's changes through the API, one every
// spread/changes, each replacing endpoint 0 of its Service's slice, and
// times each from the Update call's return until the kernel holds the
// new real server (polled over netlink, the interval a fifth of the time
// waited so far: the latency reads at most 25% high, and at most 500 ms).
// One interval before them it makes the warm-up change (see
// measure.Result.WarmUp), timed alike, and returns its latency apart.
func makeChanges(t *testing.T, api *guest.API, p params, proc *guest.Proc) (lat []time.Duration, warmUp time.Duration) {
	t.Helper()
	l := p.layout
	if l.Changes == 0 {
		return nil, 0
	}
	every := p.spread / time.Duration(l.Changes)
	var wg sync.WaitGroup
	wait := func(i int, want netip.Addr, lat *time.Duration, err *error) {
		returned := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			*lat, *err = waitRealServer(i, want, returned, p.timeout)
		}()
	}
	var warmErr error
	if i := l.WarmUpService(); i >= 0 {
		if err := changeSlice(api, i, l.WarmUpAddress()); err != nil {
			t.Fatalf("warm-up change (EndpointSlice %s): %v", measure.Name(i), err)
		}
		wait(i, l.WarmUpAddress(), &warmUp, &warmErr)
	}
	t.Logf("making %d EndpointSlice changes, one every %v (over %v; kube-ipvs' syncPeriod %v)",
		l.Changes, every.Round(time.Millisecond), p.spread, p.syncPeriod)
	lat = make([]time.Duration, l.Changes)
	errs := make([]error, l.Changes)
	began := time.Now().Add(every)
	for k := 0; k < l.Changes; k++ {
		time.Sleep(time.Until(began.Add(time.Duration(k) * every)))
		i := l.ChangedService(k)
		if err := changeSlice(api, i, l.Replacement(k)); err != nil {
			t.Fatalf("change %d (EndpointSlice %s): %v", k, measure.Name(i), err)
		}
		wait(i, l.Replacement(k), &lat[k], &errs[k])
	}
	wg.Wait()
	for k, err := range append([]error{warmErr}, errs...) {
		if err == nil {
			continue
		}
		if done, perr := proc.Exited(); done {
			t.Logf("the proxy exited (%v)", perr)
		}
		what := fmt.Sprintf("change %d", k-1)
		if k == 0 {
			what = "warm-up change"
		}
		t.Fatalf("%s: %v\nthe proxy's output:\n%s", what, err, tail(proc.Output(), 40))
	}
	return lat, warmUp
}

// changeSlice gives endpoint 0 of Service i's slice the address to.
func changeSlice(api *guest.API, i int, to netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slices := api.Client.DiscoveryV1().EndpointSlices(measure.Namespace)
	s, err := slices.Get(ctx, measure.Name(i), metav1.GetOptions{})
	if err == nil {
		s.Endpoints[0].Addresses = []string{to.String()}
		_, err = slices.Update(ctx, s, metav1.UpdateOptions{})
	}
	return err
}

// waitRealServer polls Service i's virtual server until it has real
// server want:TargetPort with a weight; the latency is from returned until
// the start of the poll that saw it.
func waitRealServer(i int, want netip.Addr, returned time.Time, timeout time.Duration) (time.Duration, error) {
	h, err := libipvs.New("")
	if err != nil {
		return 0, fmt.Errorf("IPVS netlink: %w", err)
	}
	defer h.Close()
	vs := &libipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
		Address: net.IP(measure.VIP(i).AsSlice()), Port: measure.ServicePort}
	ip := net.IP(want.AsSlice())
	for {
		at := time.Now()
		dests, err := h.GetDestinations(vs)
		if err == nil {
			for _, d := range dests {
				if d.Address.Equal(ip) && d.Port == measure.TargetPort && d.Weight > 0 {
					return at.Sub(returned), nil
				}
			}
		}
		waited := time.Since(returned)
		if waited > timeout {
			return 0, fmt.Errorf("virtual server %s had no real server %s:%d %v after the Update (%v)",
				measure.VS(i), want, measure.TargetPort, timeout, err)
		}
		time.Sleep(min(max(waited/5, time.Millisecond), 500*time.Millisecond))
	}
}

// checkFinal waits until IPVS holds exactly the layout with every change
// applied: old real servers may linger at weight 0 until the next full
// resync (kube-ipvs drains them), so it waits up to three sync periods
// and a minute.
func checkFinal(t *testing.T, p params, proc *guest.Proc) {
	t.Helper()
	var buf bytes.Buffer
	deadline := time.Now().Add(3*p.syncPeriod + time.Minute)
	for {
		b, err := readIPVS(&buf)
		if err != nil {
			t.Fatal(err)
		}
		tab, err := measure.ParseIPVS(b)
		if err != nil {
			t.Fatal(err)
		}
		mismatch := p.layout.Check(tab, p.layout.Changes)
		if mismatch == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the changes, IPVS never held exactly the expected table: %v\nthe proxy's output:\n%s", mismatch, tail(proc.Output(), 40))
		}
		time.Sleep(time.Second)
	}
}

// floorOutput is what the floor program prints.
type floorOutput struct {
	Seconds, AcceptSeconds      float64
	VirtualServers, RealServers int
}

// runFloor runs the floor program and checks it made the layout; its
// time is from its start until it exited, its CPU and peak RSS from
// wait4's rusage.
func runFloor(t *testing.T, p params) measure.Result {
	t.Helper()
	l := p.layout
	cmd := exec.Command(measure.FloorBin, "-services", strconv.Itoa(l.Services), "-endpoints", strconv.Itoa(l.Endpoints))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	began := time.Now()
	err := cmd.Run()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", measure.FloorBin, err, out.String(), stderr.String())
	}
	var fo floorOutput
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &fo); err != nil {
		t.Fatalf("the floor's output %q: %v", out.String(), err)
	}
	var buf bytes.Buffer
	b, err := readIPVS(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := measure.ParseIPVS(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(tab, 0); err != nil {
		t.Fatalf("the floor did not make the layout: %v", err)
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r := measure.Result{Proxy: measure.Floor, Time: took, Notes: []string{fmt.Sprintf(
		"kernel work %.3gs of it (the link and local route %.3gs)", fo.Seconds, fo.AcceptSeconds)}}
	if ru != nil {
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.PeakRSS = ru.Maxrss * 1024
	}
	t.Logf("floor: %d virtual servers and %d real servers in %v (%s)", fo.VirtualServers, fo.RealServers, took.Round(time.Millisecond), r.Notes[0])
	return r
}
