package proxier

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	testingclock "k8s.io/utils/clock/testing"
)

// runnerHarness runs a Runner on a fake clock and records its syncs.
type runnerHarness struct {
	clock *testingclock.FakeClock
	start time.Time
	r     *Runner
	syncs chan syncCall
	fail  atomic.Bool
}

type syncCall struct {
	full bool
	at   time.Duration // fake time since start
}

func newRunnerHarness(t *testing.T) *runnerHarness {
	h := &runnerHarness{start: time.Unix(1_000_000, 0), syncs: make(chan syncCall, 100)}
	h.clock = testingclock.NewFakeClock(h.start)
	cfg := RunnerConfig{MinInterval: time.Second, FullInterval: time.Minute, BackoffMin: 2 * time.Second, BackoffMax: 8 * time.Second}
	h.r = NewRunner(zap.NewNop(), h.clock, cfg, func(full bool) error {
		h.syncs <- syncCall{full: full, at: h.clock.Since(h.start)}
		if h.fail.Load() {
			return errors.New("injected failure")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// next advances fake time in small steps until the runner syncs, for at
// most limit of fake time; ok is false if it did not.
func (h *runnerHarness) next(limit time.Duration) (syncCall, bool) {
	const step = 100 * time.Millisecond
	// The first wait is longer: it lets the runner, which may just have
	// finished a sync, arm its timers before fake time moves.
	wait := 50 * time.Millisecond
	for elapsed := time.Duration(0); elapsed <= limit; elapsed += step {
		select {
		case c := <-h.syncs:
			return c, true
		case <-time.After(wait):
		}
		wait = 5 * time.Millisecond
		h.clock.Step(step)
	}
	return syncCall{}, false
}

func (h *runnerHarness) mustNext(t *testing.T, limit time.Duration) syncCall {
	t.Helper()
	c, ok := h.next(limit)
	if !ok {
		t.Fatalf("no sync within %s of fake time", limit)
	}
	return c
}

func TestRunnerFirstSyncIsFullAndImmediate(t *testing.T) {
	h := newRunnerHarness(t)
	if c := h.mustNext(t, 0); !c.full || c.at != 0 {
		t.Errorf("first sync = %+v, want full at 0", c)
	}
}

func TestRunnerCoalescesBurstsAndKeepsMinInterval(t *testing.T) {
	h := newRunnerHarness(t)
	first := h.mustNext(t, 0)
	for range 50 {
		h.r.Request()
	}
	c := h.mustNext(t, 5*time.Second)
	if c.full || c.at-first.at < time.Second {
		t.Errorf("sync after burst = %+v, want incremental at least 1s after %+v", c, first)
	}
	if extra, ok := h.next(10 * time.Second); ok {
		t.Errorf("50 requests made more than one sync: extra %+v", extra)
	}
}

func TestRunnerRetriesFailuresWithBackoffAsFullSyncs(t *testing.T) {
	h := newRunnerHarness(t)
	h.fail.Store(true)
	var calls []syncCall
	for range 4 {
		calls = append(calls, h.mustNext(t, 20*time.Second))
	}
	h.fail.Store(false)
	calls = append(calls, h.mustNext(t, 20*time.Second))
	wantGaps := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, c := range calls {
		if !c.full {
			t.Errorf("sync %d after a failure was not full: %+v", i, c)
		}
		if i == 0 {
			continue
		}
		gap := c.at - calls[i-1].at
		if gap < wantGaps[i-1] || gap > wantGaps[i-1]+time.Second {
			t.Errorf("retry %d came %s after the previous sync, want about %s", i, gap, wantGaps[i-1])
		}
	}
	// Requests during backoff do not bypass it; after success the pace is normal.
	h.r.Request()
	if c := h.mustNext(t, 5*time.Second); c.full {
		t.Errorf("sync after recovery = %+v, want incremental", c)
	}
}

func TestRunnerResyncsFullyEveryFullInterval(t *testing.T) {
	h := newRunnerHarness(t)
	h.mustNext(t, 0)
	c := h.mustNext(t, 2*time.Minute)
	if !c.full || c.at < time.Minute {
		t.Errorf("periodic sync = %+v, want full after 1m", c)
	}
}
