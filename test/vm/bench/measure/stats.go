package measure

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Summary is the spread of a set of durations.
type Summary struct {
	N                     int
	Min, Median, P90, Max time.Duration
}

// Summarize is the min, median, 90th percentile and max of ds (nearest
// rank: the p-th percentile is the smallest value with at least p% of the
// values at or below it). Zero for no values.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return Summary{N: len(s), Min: s[0], Median: rank(50), P90: rank(90), Max: s[len(s)-1]}
}

// HistogramSumCount reads NAME_sum and NAME_count of one histogram series
// (labels exactly as the text format writes them, like
// `ip_family="IPv4"`) from a Prometheus text scrape.
func HistogramSumCount(scrape, name, labels string) (sum, count float64, ok bool) {
	var gotSum, gotCount bool
	for line := range strings.SplitSeq(scrape, "\n") {
		series, value, found := strings.Cut(line, " ")
		if !found {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch series {
		case name + "_sum{" + labels + "}":
			sum, gotSum = v, true
		case name + "_count{" + labels + "}":
			count, gotCount = v, true
		}
	}
	return sum, count, gotSum && gotCount
}

// Resyncs follows a sync-duration histogram (its _sum and _count) through
// scrapes taken every few hundred milliseconds, to get the syncs' mean
// duration and, from the scrapes between which exactly one sync ended,
// their longest.
type Resyncs struct {
	started              bool
	firstSum, firstCount float64
	lastSum, lastCount   float64
	max                  time.Duration
	single, multi        int // scrape intervals with one sync, and with several
}

// Add records one scrape's sum (seconds) and count.
func (r *Resyncs) Add(sum, count float64) {
	if !r.started {
		r.started = true
		r.firstSum, r.firstCount, r.lastSum, r.lastCount = sum, count, sum, count
		return
	}
	dn, ds := count-r.lastCount, sum-r.lastSum
	r.lastSum, r.lastCount = sum, count
	switch {
	case dn == 1:
		r.single++
		r.max = max(r.max, seconds(ds))
	case dn > 1:
		r.multi++
		r.max = max(r.max, seconds(ds/dn)) // the mean of those: a lower bound of their longest
	}
}

// Count is how many syncs ended since the first scrape.
func (r *Resyncs) Count() int { return int(r.lastCount - r.firstCount) }

// Mean is their mean duration, zero if none.
func (r *Resyncs) Mean() time.Duration {
	if n := r.lastCount - r.firstCount; n > 0 {
		return seconds((r.lastSum - r.firstSum) / n)
	}
	return 0
}

// Max is the longest of them (exact when MaxExact).
func (r *Resyncs) Max() time.Duration { return r.max }

// MaxExact reports whether no two syncs ended between the same two
// scrapes, so Max is the longest sync, not a lower bound.
func (r *Resyncs) MaxExact() bool { return r.multi == 0 }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
