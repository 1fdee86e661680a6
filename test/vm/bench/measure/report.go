package measure

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Proxies and situations of a benchmark run.
const (
	Floor     = "floor"
	KubeIPVS  = "kube-ipvs"
	KubeProxy = "kube-proxy"
	Join      = "join"
	Burst     = "burst"
)

// FloorBin is where the host puts the floor program (../floor) in the guest.
const FloorBin = "/bin/kipvs-floor"

// ResultPrefix starts the console line by which the guest hands a
// Result (JSON) to the host.
const ResultPrefix = "KIPVS-BENCH-RESULT "

// Result is what one VM boot measured: a proxy in one situation, or the floor.
type Result struct {
	Proxy     string `json:"proxy"`     // Floor, KubeIPVS or KubeProxy
	Situation string `json:"situation"` // Join or Burst; "" for the floor
	Services  int    `json:"services"`
	Endpoints int    `json:"endpoints"`
	// Time is, for join, from the proxy's start until IPVS holds every
	// virtual and real server; for burst, from the last create until
	// then; for the floor, from its start until it exited with all made.
	Time time.Duration `json:"time"`
	// TimeError bounds how much later than the truth Time may read: back
	// to the last IPVS read that saw the layout incomplete, plus for
	// burst the console's delay.
	TimeError time.Duration `json:"timeError"`
	// CPU is the proxy's CPU (children included) from its start (join) or
	// from the burst's first create until it went idle.
	CPU     time.Duration `json:"cpu"`
	PeakRSS int64         `json:"peakRSS"` // VmHWM, bytes
	// IdleAfter is from Time's origin until the idle rule held; negative
	// if it never did within IdleLimit after IPVS held everything.
	IdleAfter time.Duration `json:"idleAfter"`
	IdleLimit time.Duration `json:"idleLimit"`
	// Changes are the latencies of the EndpointSlice changes, from the
	// Update call's return until the kernel held the new real server.
	Changes []time.Duration `json:"changes"`
	// WarmUp is the latency of the warm-up change, made one interval
	// before the timed ones, alike, on a Service none of them touches (0:
	// none). It is the first change the proxy syncs after its start, its
	// first run of the paths a change takes: a one-time cost, printed in
	// the notes and kept out of Changes.
	WarmUp time.Duration `json:"warmUp"`
	// Full resyncs that ended after the proxy went idle (their count,
	// mean and longest), from its sync-duration histogram.
	Resyncs        int           `json:"resyncs"`
	ResyncMean     time.Duration `json:"resyncMean"`
	ResyncMax      time.Duration `json:"resyncMax"`
	ResyncMaxExact bool          `json:"resyncMaxExact"`
	Notes          []string      `json:"notes,omitempty"`
}

// Row is one line of a size's table: a Result, or why there is none.
type Row struct {
	Name   string // "kube-ipvs join"
	Result *Result
	Err    error
}

// FasterFloor is the floor's row from two boots of it: the faster, with
// both times in its notes. The floor's kernel work is the same in every
// boot, so only what else ran on the host (the VM's one vCPU is one host
// thread) makes one slower: the faster is the better bound. A boot that
// failed makes the row fail.
func FasterFloor(a, b Row) Row {
	switch {
	case a.Err != nil || a.Result == nil:
		return a
	case b.Err != nil || b.Result == nil:
		return b
	}
	best := *a.Result
	if b.Result.Time < a.Result.Time {
		best = *b.Result
	}
	best.Notes = append(slices.Clip(best.Notes), fmt.Sprintf("the faster of two boots, one before the proxies' runs and one after: %v and %v",
		a.Result.Time.Round(time.Millisecond), b.Result.Time.Round(time.Millisecond)))
	return Row{Name: a.Name, Result: &best}
}

// RowName is the table's name of a proxy in a situation.
func RowName(proxy, situation string) string {
	if proxy == Floor {
		return Floor
	}
	return proxy + " " + situation
}

// RowOrder is the order of a size's rows.
var RowOrder = []string{Floor, RowName(KubeIPVS, Join), RowName(KubeIPVS, Burst), RowName(KubeProxy, Join), RowName(KubeProxy, Burst)}

// Table renders one size's rows as a Markdown table. A row with an error
// has no figures, only "FAILED". kube-ipvs' times are also given as a
// ratio to kube-proxy's in the same situation.
func Table(rows map[string]Row) string {
	var b strings.Builder
	b.WriteString("| run | time | × floor | × kube-proxy | CPU s | peak RSS MiB | idle after | change latency min / median / p90 / max (n) | full resync mean / max (n) |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	floor := rows[Floor].Result
	for _, name := range RowOrder {
		row, ok := rows[name]
		if !ok {
			continue
		}
		r := row.Result
		if r == nil {
			fmt.Fprintf(&b, "| %s | FAILED | | | | | | | |\n", name)
			continue
		}
		ratioFloor, ratioKP := "", ""
		if floor != nil && name != Floor && floor.Time > 0 {
			ratioFloor = fmt.Sprintf("%.2f", ratio(r.Time, floor.Time))
		}
		if kp := rows[RowName(KubeProxy, r.Situation)].Result; r.Proxy == KubeIPVS && kp != nil && kp.Time > 0 {
			ratioKP = fmt.Sprintf("%.3f", ratio(r.Time, kp.Time))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | %.1f | %s | %s | %s |\n", name, Short(r.Time), ratioFloor, ratioKP,
			r.CPU.Seconds(), float64(r.PeakRSS)/(1<<20), idle(r), latencies(r), resyncs(r))
	}
	return b.String()
}

func idle(r *Result) string {
	switch {
	case r.Proxy == Floor:
		return ""
	case r.IdleAfter < 0:
		return "> " + Short(r.IdleLimit) + " after"
	}
	return Short(r.IdleAfter)
}

func latencies(r *Result) string {
	if len(r.Changes) == 0 {
		return ""
	}
	s := Summarize(r.Changes)
	return fmt.Sprintf("%s / %s / %s / %s (%d)", Short(s.Min), Short(s.Median), Short(s.P90), Short(s.Max), s.N)
}

func resyncs(r *Result) string {
	if r.Proxy == Floor {
		return ""
	}
	if r.Resyncs == 0 {
		return "none ended"
	}
	maxNote := ""
	if !r.ResyncMaxExact {
		maxNote = "≥ "
	}
	return fmt.Sprintf("%s / %s%s (%d)", Short(r.ResyncMean), maxNote, Short(r.ResyncMax), r.Resyncs)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// Short prints a duration with three significant digits: 812ms, 4.27s, 3m12s.
func Short(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + Short(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	case d < time.Minute:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// Target is one of issue 11's targets, judged on one size's rows.
type Target struct {
	What   string // "kube-ipvs join ≤ 0.15 × kube-proxy join"
	Got    string // "0.042" or why it could not be judged
	Met    bool
	Judged bool // false: a row it needs failed
}

// Targets judges issue 11's targets (set for 5,000 × 5) on one size's rows.
func Targets(rows map[string]Row) []Target {
	get := func(name string) *Result { return rows[name].Result }
	kj, kb := get(RowName(KubeIPVS, Join)), get(RowName(KubeIPVS, Burst))
	pj, pb := get(RowName(KubeProxy, Join)), get(RowName(KubeProxy, Burst))
	floor := get(Floor)
	var out []Target
	vs := func(what string, a, b *Result, limit float64, value func(*Result) float64) {
		t := Target{What: what}
		if a != nil && b != nil && value(b) > 0 {
			x := value(a) / value(b)
			t.Got, t.Met, t.Judged = fmt.Sprintf("%.3f", x), x <= limit, true
		} else {
			t.Got = "not judged: a run it needs failed"
		}
		out = append(out, t)
	}
	timeOf := func(r *Result) float64 { return float64(r.Time) }
	rss := func(r *Result) float64 { return float64(r.PeakRSS) }
	median := func(r *Result) float64 { return float64(Summarize(r.Changes).Median) }
	vs("kube-ipvs join ≤ 0.15 × kube-proxy join", kj, pj, 0.15, timeOf)
	vs("kube-ipvs join ≤ 1.5 × floor", kj, floor, 1.5, timeOf)
	vs("kube-ipvs burst ≤ 0.15 × kube-proxy burst", kb, pb, 0.15, timeOf)
	vs("kube-ipvs peak RSS ≤ 0.5 × kube-proxy's (join)", kj, pj, 0.5, rss)
	vs("kube-ipvs peak RSS ≤ 0.5 × kube-proxy's (burst)", kb, pb, 0.5, rss)
	vs("kube-ipvs median change latency ≤ 0.01 × kube-proxy's (join)", kj, pj, 0.01, median)
	vs("kube-ipvs median change latency ≤ 0.01 × kube-proxy's (burst)", kb, pb, 0.01, median)
	for _, r := range []*Result{kj, kb} {
		if r == nil {
			continue
		}
		s := Summarize(r.Changes)
		t := Target{What: fmt.Sprintf("kube-ipvs %s: slowest change ≤ 20 × its median", r.Situation), Judged: s.N > 0}
		if s.N > 0 && s.Median > 0 {
			x := ratio(s.Max, s.Median)
			t.Got, t.Met = fmt.Sprintf("%.1f (%s / %s)", x, Short(s.Max), Short(s.Median)), x <= 20
		}
		out = append(out, t)
	}
	return out
}

// FormatTargets renders the targets as a list, each met, missed or not judged.
func FormatTargets(ts []Target) string {
	var b strings.Builder
	for _, t := range ts {
		verdict := ""
		if t.Judged && t.Met {
			verdict = "met"
		} else if t.Judged {
			verdict = "MISSED"
		}
		if verdict == "" {
			fmt.Fprintf(&b, "- %-62s %s\n", t.What+":", t.Got)
			continue
		}
		fmt.Fprintf(&b, "- %-62s %-8s %s\n", t.What+":", verdict, t.Got)
	}
	return b.String()
}

// ProfilePrefix starts each console line of a base64 CPU profile the
// guest prints when the host asked for one (bench -profile); ProfileEnd
// and the profile's kind (cpu, heap) end it.
const (
	ProfilePrefix = "KIPVS-BENCH-PROFILE: "
	ProfileEnd    = "KIPVS-BENCH-PROFILE-END "
)
