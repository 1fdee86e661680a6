package proxier

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kube-ipvs/kube-ipvs/healthcheck"
)

// runnerHarness runs a Runner on a fake clock and records its syncs. It
// moves the clock only while the runner waits (its idle signal), so no
// test depends on wall-clock timing.
type runnerHarness struct {
	clock *testingclock.FakeClock
	start time.Time
	r     *Runner
	syncs chan syncCall
	idle  chan time.Time // the runner waits, until this time
	fail  atomic.Bool

	mu      sync.Mutex
	retryAt time.Time // what the syncer's RetryAt returns

	obs Observer // registered before Run, when set

	// The runner is known to be waiting (its idle signal was read and
	// nothing woke it since), until waitingUntil.
	isWaiting    bool
	waitingUntil time.Time
}

type syncCall struct {
	full bool
	at   time.Duration // fake time since start
}

// harnessSyncer is the Syncer the harness drives the runner with.
type harnessSyncer struct{ h *runnerHarness }

func (s harnessSyncer) Sync(full bool) error {
	s.h.syncs <- syncCall{full: full, at: s.h.clock.Since(s.h.start)}
	if s.h.fail.Load() {
		return errors.New("injected failure")
	}
	return nil
}

func (s harnessSyncer) RetryAt() time.Time {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.h.retryAt
}

// failing makes the harness's syncs fail from the first one on.
func failing(h *runnerHarness) { h.fail.Store(true) }

func newRunnerHarness(t *testing.T, opts ...func(*runnerHarness)) *runnerHarness {
	h := &runnerHarness{start: time.Unix(1_000_000, 0), syncs: make(chan syncCall, 100), idle: make(chan time.Time)}
	h.clock = testingclock.NewFakeClock(h.start)
	for _, o := range opts {
		o(h)
	}
	cfg := RunnerConfig{MinInterval: time.Second, FullInterval: time.Minute, BackoffMin: 2 * time.Second, BackoffMax: 8 * time.Second}
	h.r = NewRunner(zap.NewNop(), h.clock, cfg, harnessSyncer{h})
	if h.obs != nil {
		h.r.Observe(h.obs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.r.idle = func(next time.Time) {
		select {
		case h.idle <- next:
		case <-ctx.Done():
		}
	}
	done := make(chan struct{})
	go func() { h.r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// next waits until the runner waits, and returns the sync it made before,
// if any; otherwise it moves fake time to what the runner waits for, as
// long as that is at most limit of fake time ahead of now.
func (h *runnerHarness) next(limit time.Duration) (syncCall, bool) {
	end := h.clock.Now().Add(limit)
	for {
		if !h.isWaiting {
			h.waitingUntil, h.isWaiting = <-h.idle, true
		}
		select {
		case c := <-h.syncs:
			return c, true
		default:
		}
		at := h.waitingUntil
		if at.IsZero() || at.After(end) {
			return syncCall{}, false
		}
		h.isWaiting = false
		h.clock.SetTime(at)
	}
}

func (h *runnerHarness) mustNext(t *testing.T, limit time.Duration) syncCall {
	t.Helper()
	c, ok := h.next(limit)
	if !ok {
		t.Fatalf("no sync within %s of fake time", limit)
	}
	return c
}

func (h *runnerHarness) setRetryAt(after time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retryAt = time.Time{}
	if after > 0 {
		h.retryAt = h.clock.Now().Add(after)
	}
}

// request asks for a sync, which wakes the runner.
func (h *runnerHarness) request() {
	if !h.isWaiting {
		h.waitingUntil, h.isWaiting = <-h.idle, true
	}
	h.isWaiting = false
	h.r.Request()
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
	h.request()
	for range 50 {
		h.r.Request()
	}
	c := h.mustNext(t, 5*time.Second)
	if c.full || c.at-first.at < time.Second {
		t.Errorf("sync after burst = %+v, want incremental at least 1s after %+v", c, first)
	}
	if extra, ok := h.next(10 * time.Second); ok {
		t.Errorf("51 requests made more than one sync: extra %+v", extra)
	}
}

func TestRunnerRetriesFailuresWithBackoffAsFullSyncs(t *testing.T) {
	h := newRunnerHarness(t, failing)
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
		if gap := c.at - calls[i-1].at; gap != wantGaps[i-1] {
			t.Errorf("retry %d came %s after the previous sync, want %s", i, gap, wantGaps[i-1])
		}
	}
	// After success the pace is normal.
	h.request()
	if c := h.mustNext(t, 5*time.Second); c.full {
		t.Errorf("sync after recovery = %+v, want incremental", c)
	}
}

func TestRunnerRequestsDuringBackoffWaitForTheRetry(t *testing.T) {
	h := newRunnerHarness(t, failing)
	failed := h.mustNext(t, 0)
	h.fail.Store(false)
	h.request()
	c := h.mustNext(t, 20*time.Second)
	if !c.full || c.at-failed.at != 2*time.Second {
		t.Errorf("sync after a request during backoff = %+v, want the full retry 2s after %+v", c, failed)
	}
}

func TestRunnerWakesWhenTheSyncerAsks(t *testing.T) {
	h := newRunnerHarness(t, func(h *runnerHarness) { h.retryAt = h.clock.Now().Add(5 * time.Second) })
	first := h.mustNext(t, 0)
	h.setRetryAt(0)
	c := h.mustNext(t, 10*time.Second)
	if c.full || c.at-first.at != 5*time.Second {
		t.Errorf("sync the syncer asked for = %+v, want incremental 5s after %+v", c, first)
	}
	if extra, ok := h.next(20 * time.Second); ok {
		t.Errorf("the runner woke again unasked: %+v", extra)
	}
}

func TestRunnerResyncsFullyEveryFullInterval(t *testing.T) {
	h := newRunnerHarness(t)
	h.mustNext(t, 0)
	c := h.mustNext(t, 2*time.Minute)
	if !c.full || c.at != time.Minute {
		t.Errorf("periodic sync = %+v, want full after 1m", c)
	}
}

func TestRunnerReportsToTheProxyHealth(t *testing.T) {
	var health *healthcheck.ProxyHealth
	h := newRunnerHarness(t, failing, func(h *runnerHarness) {
		health = healthcheck.NewProxyHealth(h.clock, 2*time.Minute, v1.IPv4Protocol) // 2 × FullInterval
		h.obs = health
	})
	// The first sync fails, and its retries: unhealthy once it waited 2 minutes.
	for h.clock.Since(h.start) < 2*time.Minute {
		if !health.Healthy() {
			t.Fatalf("unhealthy after %s of failing syncs, before the timeout", h.clock.Since(h.start))
		}
		h.mustNext(t, time.Minute)
	}
	if health.Healthy() {
		t.Fatalf("healthy after %s of failing syncs", h.clock.Since(h.start))
	}
	// A good sync makes it healthy again.
	h.fail.Store(false)
	h.mustNext(t, time.Minute)
	h.next(0) // the runner waits again: the sync's report is in
	if !health.Healthy() {
		t.Errorf("unhealthy after a good sync")
	}
}
