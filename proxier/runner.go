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
	// BackoffMin and BackoffMax bound the retry delay after a failed sync,
	// which doubles with each consecutive failure.
	BackoffMin, BackoffMax time.Duration
	// StepBudget is about how long a step of a full sync may take (its
	// reads and its writes) before the runner syncs what changed
	// meanwhile (a Stepper's); zero is DefaultStepBudget.
	StepBudget time.Duration
}

// DefaultStepBudget is the default RunnerConfig.StepBudget: a change that
// comes during a full sync waits about this long, not for the whole sync.
const DefaultStepBudget = 10 * time.Millisecond

// Syncer is what a Runner drives; *Proxier is one.
type Syncer interface {
	// Sync syncs fully or incrementally; an error means the node as a
	// whole is not synced.
	Sync(full bool) error
	// RetryAt is when the syncer wants another sync although nothing
	// changed (a Service's retry is due); zero for never.
	RetryAt() time.Time
}

// Stepper is a Syncer whose full sync can run in steps, with incremental
// syncs (Sync(false)) between them; *Proxier is one.
type Stepper interface {
	// FullStep runs the next step of a full sync, starting one if none is
	// in progress, for about budget; done reports that it ended (with
	// err, nil when the node is synced).
	FullStep(budget time.Duration) (done bool, err error)
}

// A StepWaiter is a Stepper whose step may leave work running in the
// background (an iptables-save); *Proxier is one. Until StepReady's
// channel closes, the runner syncs the changes that come in rather than
// run the next step; a nil channel means the next step may run now.
type StepWaiter interface {
	StepReady() <-chan struct{}
}

// Observer hears what a Runner does, for the proxy's health and metrics.
// Its methods are called from the runner's goroutine, and from Request's
// callers for Queued; they must not block.
type Observer interface {
	// Started: the sync loop began (its first sync is due).
	Started(at time.Time)
	// Queued: a change came that needs a sync.
	Queued(at time.Time)
	// Synced: a sync ended at at, after took, with err (nil: the node is
	// synced).
	Synced(at time.Time, full bool, took time.Duration, err error)
}

// Runner calls a Syncer when asked, never more often than MinInterval,
// fully every FullInterval, when the Syncer's RetryAt comes, and again with
// backoff after a failed sync (that retry is always a full sync, and
// requests wait for it).
type Runner struct {
	log       *zap.Logger
	clock     clock.Clock
	cfg       RunnerConfig
	syncer    Syncer
	requests  chan struct{}
	observers []Observer
	// idle, when set (by tests), is called each time Run has armed its
	// timers and is about to wait, with the earliest time it waits for, so
	// a test can move a fake clock exactly there without racing it.
	idle func(next time.Time)
}

// NewRunner returns a runner; nothing runs until Run.
func NewRunner(log *zap.Logger, clk clock.Clock, cfg RunnerConfig, s Syncer) *Runner {
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.StepBudget <= 0 {
		cfg.StepBudget = DefaultStepBudget
	}
	return &Runner{log: log, clock: clk, cfg: cfg, syncer: s, requests: make(chan struct{}, 1)}
}

// Observe adds o to the runner's observers. Call it before Run.
func (r *Runner) Observe(o Observer) { r.observers = append(r.observers, o) }

// Request asks for a sync soon. It never blocks; many requests before the
// sync starts make one sync.
func (r *Runner) Request() {
	now := r.clock.Now()
	for _, o := range r.observers {
		o.Queued(now)
	}
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
	fullAt := r.clock.Now().Add(r.cfg.FullInterval)
	var retry, wake <-chan time.Time
	var retryAt, wakeAt time.Time
	start := r.clock.Now()
	for _, o := range r.observers {
		o.Started(start)
		o.Queued(start) // the first sync
	}
	for {
		if due {
			if !r.waitUntil(ctx, last.Add(r.cfg.MinInterval)) {
				return
			}
			r.drainRequests()
			last = r.clock.Now()
			err := r.sync(full)
			r.synced(last, full, err)
			due, wake, wakeAt = false, nil, time.Time{}
			if err != nil {
				failures++
				delay := r.backoff(failures)
				r.log.Error("sync failed, retrying with a full sync", zap.Error(err),
					zap.Int("failures", failures), zap.Duration("retryIn", delay))
				full, retry, retryAt = true, r.clock.After(delay), r.clock.Now().Add(delay)
			} else {
				if full {
					fullTimer.Reset(r.cfg.FullInterval)
					fullAt = r.clock.Now().Add(r.cfg.FullInterval)
				}
				failures, full, retry, retryAt = 0, false, nil, time.Time{}
				if at := r.syncer.RetryAt(); !at.IsZero() {
					wake, wakeAt = r.clock.After(max(at.Sub(r.clock.Now()), 0)), at
				}
			}
		}
		r.waiting(fullAt, retryAt, wakeAt)
		select {
		case <-ctx.Done():
			return
		case <-r.requests:
			// While backing off, the retry picks the change up.
			due = retry == nil
		case <-retry:
			due = true
		case <-wake:
			due = true
		case <-fullTimer.C():
			// Re-armed when a full sync succeeds; till then retries are full.
			full, due, fullAt = true, true, time.Time{}
		}
	}
}

// sync runs one sync. A full one of a Stepper runs in steps: a change
// requested meanwhile is synced (incrementally) between two steps, and
// while a StepWaiter's step runs on in the background.
func (r *Runner) sync(full bool) error {
	st, ok := r.syncer.(Stepper)
	if !full || !ok {
		return r.syncer.Sync(full)
	}
	waiter, _ := st.(StepWaiter)
	for {
		done, err := st.FullStep(r.cfg.StepBudget)
		if done {
			return err
		}
		var ready <-chan struct{}
		if waiter != nil {
			ready = waiter.StepReady()
		}
		if ready == nil {
			select {
			case <-r.requests:
				r.syncChange()
			default:
			}
			continue
		}
		for waiting := true; waiting; {
			select {
			case <-r.requests:
				r.syncChange()
			case <-ready:
				waiting = false
			}
		}
	}
}

// syncChange syncs, incrementally, what changed during a full sync.
func (r *Runner) syncChange() {
	began := r.clock.Now()
	r.synced(began, false, r.syncer.Sync(false))
}

// synced tells the log and the observers a sync that began at began ended.
func (r *Runner) synced(began time.Time, full bool, err error) {
	end := r.clock.Now()
	r.log.Debug("synced", zap.Bool("full", full), zap.Duration("took", end.Sub(began)), zap.Error(err))
	for _, o := range r.observers {
		o.Synced(end, full, end.Sub(began), err)
	}
}

// waiting tells the test hook, if any, that Run is about to wait, and the
// earliest of the deadlines it waits for (zero ones are not set).
func (r *Runner) waiting(deadlines ...time.Time) {
	if r.idle == nil {
		return
	}
	var next time.Time
	for _, d := range deadlines {
		if !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	r.idle(next)
}

// waitUntil sleeps until t or ctx is done; it reports whether to go on.
func (r *Runner) waitUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(r.clock.Now())
	if d <= 0 {
		return ctx.Err() == nil
	}
	after := r.clock.After(d)
	r.waiting(t)
	select {
	case <-ctx.Done():
		return false
	case <-after:
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
