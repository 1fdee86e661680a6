package measure

import (
	"math/rand/v2"
	"time"
)

// Incomplete lists the Services whose virtual server the table does not
// hold exactly as the layout wants it with no change applied (missing,
// another scheduler, or other real servers), in index order.
func (l Layout) Incomplete(t IPVSTable) []int {
	var out []int
	for i := 0; i < l.Services; i++ {
		vs := t[VSKey{Proto: "TCP", Addr: VS(i)}]
		if vs == nil || vs.Scheduler != "rr" || !l.Complete(i, vs.Real) {
			out = append(out, i)
		}
	}
	return out
}

// Complete reports whether real are exactly Service i's real servers
// (masqueraded, weight 1) with no change applied.
func (l Layout) Complete(i int, real []RealServer) bool {
	return len(real) == l.Endpoints && diffReal(real, l.Want(i)) == ""
}

// Convergence decides, while a proxy programs the layout, what the
// poller reads next: the whole of /proc/net/ip_vs (costly at thousands
// of Services), or a sample of the Services the last whole read found
// incomplete, each checked alone over netlink (cheap). A sampled
// Service still incomplete proves the proxy is not done, so the whole
// table is read again only when every Service the last whole read
// found incomplete has since been seen complete, or when a sample finds
// all its Services complete (the end is then likely near: each such
// whole read leaves only what was still incomplete pending, so there
// are few of them, and a pending set small enough is checked whole,
// not sampled). The whole read that matches ends the wait; the truth
// lies between the start of the last read that saw something incomplete
// and the end of that read.
type Convergence struct {
	pending        []int // found incomplete by the last whole read, not seen complete since
	lastIncomplete time.Time
	sampleDone     bool // the last sample found all its Services complete
	rng            *rand.Rand
}

// NewConvergence starts with nothing known: the first read is whole.
// start is when the proxy started (join) or the burst began: the layout
// was incomplete then.
func NewConvergence(start time.Time, seed uint64) *Convergence {
	return &Convergence{lastIncomplete: start, sampleDone: true, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// WantWhole reports whether the next read should be of the whole table.
func (c *Convergence) WantWhole() bool { return len(c.pending) == 0 || c.sampleDone }

// Whole records a whole read that began at began and found incomplete
// (nil if none, although the table did not match: then the next read
// is whole again).
func (c *Convergence) Whole(began time.Time, incomplete []int) {
	c.lastIncomplete = began
	c.pending = incomplete
	c.sampleDone = false
}

// A sample is SampleSize pending Services at random, or all of them
// when they are at most SampleAll.
const (
	SampleSize = 4
	SampleAll  = 8
)

// Sample picks the Services to check next.
func (c *Convergence) Sample() []int {
	n := SampleSize
	if len(c.pending) <= SampleAll {
		n = len(c.pending)
	}
	for k := 0; k < n; k++ {
		j := k + c.rng.IntN(len(c.pending)-k)
		c.pending[k], c.pending[j] = c.pending[j], c.pending[k]
	}
	return append([]int(nil), c.pending[:n]...)
}

// Sampled records a sample read that began at began: the Services of
// sample seen complete leave the pending set.
func (c *Convergence) Sampled(began time.Time, sample []int, complete func(i int) bool) {
	done := map[int]bool{}
	for _, i := range sample {
		if complete(i) {
			done[i] = true
		}
	}
	if len(done) < len(sample) {
		c.lastIncomplete = began
	}
	c.sampleDone = len(done) == len(sample)
	kept := c.pending[:0]
	for _, i := range c.pending {
		if !done[i] {
			kept = append(kept, i)
		}
	}
	c.pending = kept
}

// Since is the start of the last read that saw the layout incomplete.
func (c *Convergence) Since() time.Time { return c.lastIncomplete }

// Pending is how many Services the poller has not seen complete since
// the last whole read.
func (c *Convergence) Pending() int { return len(c.pending) }
