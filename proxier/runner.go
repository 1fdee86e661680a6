package proxier

import (
	"context"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// RunnerConfig sets the runner's pace.
type RunnerConfig struct {
	// MinInterval is the least time between two syncs; requests that come
	// in the meantime are coalesced into the next sync.
	MinInterval time.Duration
	// FullInterval is the time between full syncs that read the kernel
	// back and repair drift.
	FullInterval time.Duration
	// BackoffMin and BackoffMax bound the retry delay after a failure,
	// which doubles with each consecutive failure.
	BackoffMin, BackoffMax time.Duration
}

// Runner calls a sync function when asked, never more often than
// MinInterval, fully every FullInterval, and again with backoff after a
// failure (that retry is always a full sync).
type Runner struct {
	log      *zap.Logger
	clock    clock.Clock
	cfg      RunnerConfig
	sync     func(full bool) error
	requests chan struct{}
}

// NewRunner returns a runner; nothing runs until Run.
func NewRunner(log *zap.Logger, clk clock.Clock, cfg RunnerConfig, sync func(full bool) error) *Runner {
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	return &Runner{log: log, clock: clk, cfg: cfg, sync: sync, requests: make(chan struct{}, 1)}
}

// Request asks for a sync soon. It never blocks; many requests before the
// sync starts make one sync.
func (r *Runner) Request() {
	select {
	case r.requests <- struct{}{}:
	default:
	}
}

// Run syncs until ctx is done. The first sync, right away, is full.
func (r *Runner) Run(ctx context.Context) {
	full, due := true, true
	failures := 0
	var last time.Time
	fullTimer := r.clock.NewTimer(r.cfg.FullInterval)
	defer fullTimer.Stop()
	var retry <-chan time.Time
	for {
		if due {
			if !r.waitUntil(ctx, last.Add(r.cfg.MinInterval)) {
				return
			}
			r.drainRequests()
			last = r.clock.Now()
			err := r.sync(full)
			r.log.Debug("synced", zap.Bool("full", full), zap.Duration("took", r.clock.Since(last)), zap.Error(err))
			due = false
			if err != nil {
				failures++
				delay := r.backoff(failures)
				r.log.Error("sync failed, retrying with a full sync", zap.Error(err),
					zap.Int("failures", failures), zap.Duration("retryIn", delay))
				full, retry = true, r.clock.After(delay)
			} else {
				if full {
					fullTimer.Reset(r.cfg.FullInterval)
				}
				failures, full, retry = 0, false, nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.requests:
			// While backing off, the retry picks the change up.
			due = retry == nil
		case <-retry:
			due = true
		case <-fullTimer.C():
			full, due = true, true
		}
	}
}

// waitUntil sleeps until t or ctx is done; it reports whether to go on.
func (r *Runner) waitUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(r.clock.Now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.clock.After(d):
		return true
	}
}

func (r *Runner) drainRequests() {
	select {
	case <-r.requests:
	default:
	}
}

// backoff is BackoffMin doubled per extra failure, capped at BackoffMax.
func (r *Runner) backoff(failures int) time.Duration {
	d := r.cfg.BackoffMin
	for i := 1; i < failures && d < r.cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, r.cfg.BackoffMax)
}
