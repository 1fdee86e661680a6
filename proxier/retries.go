package proxier

import (
	"maps"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
)

// One broken Service never stalls the node: when the kernel refuses one of
// a Service's operations (a virtual server it will not take, a full ipset),
// the rest of the plan is still applied, and that Service alone is retried
// with backoff, its keys re-planned against the exact mirror of what did
// take effect. Its name and error are logged once per distinct error.

// retry is one Service's pending retry.
type retry struct {
	keys     *Scope // what to plan again
	err      error  // the last failure
	attempts int
	due      time.Time
	merged   bool // keys are in the current sync's scope
}

// ServiceFailure is a Service whose operations keep failing.
type ServiceFailure struct {
	Err      error
	Attempts int
	RetryAt  time.Time
}

// Failures returns the Services whose operations are failing now (the
// zero name stands for kernel objects no Service claims).
func (p *Proxier) Failures() map[types.NamespacedName]ServiceFailure {
	out := make(map[types.NamespacedName]ServiceFailure, len(p.failures))
	for name, r := range p.failures {
		out[name] = ServiceFailure{Err: r.err, Attempts: r.attempts, RetryAt: r.due}
	}
	return out
}

// RetryAt returns when the proxier wants its next sync although nothing
// changed: the earliest due retry, or soon while stale UDP conntrack
// entries remain; zero when it needs none.
func (p *Proxier) RetryAt() time.Time {
	var at time.Time
	for _, r := range p.failures {
		if at.IsZero() || r.due.Before(at) {
			at = r.due
		}
	}
	if len(p.staleFlows) > 0 {
		soon := p.clock.Now().Add(p.opts.RetryMin)
		if at.IsZero() || soon.Before(at) {
			at = soon
		}
	}
	return at
}

// addRetries puts into sc the keys of every retry that is due, and of every
// failing Service that sc already names (a change to it may be its fix), or
// of all of them when all is set (a full sync).
func (p *Proxier) addRetries(sc *Scope, all bool) {
	if len(p.failures) == 0 {
		return
	}
	now := p.clock.Now()
	named := map[types.NamespacedName]bool{}
	for _, m := range []map[types.NamespacedName]bool{namesOf(sc.Servers), namesOf(sc.Addrs), namesOf(sc.Entries)} {
		maps.Copy(named, m)
	}
	for name, r := range p.failures {
		if all || named[name] || !r.due.After(now) {
			sc.Merge(r.keys)
			r.merged = true
		}
	}
}

// settle records the failures of one apply and ends the retries that were
// planned again (see addRetries) and did not fail.
func (p *Proxier) settle(failed map[types.NamespacedName]*Failure) {
	for name, r := range p.failures {
		if failed[name] == nil && r.merged {
			p.log.Info("operations succeed again", zap.Stringer("service", name), zap.Int("failedAttempts", r.attempts))
			delete(p.failures, name)
		}
		r.merged = false
	}
	p.recordFailures(failed)
}

// recordFailures records the failures of one apply for retry, with
// backoff.
func (p *Proxier) recordFailures(failed map[types.NamespacedName]*Failure) {
	now := p.clock.Now()
	for name, f := range failed {
		r := p.failures[name]
		if r == nil {
			r = &retry{keys: NewScope()}
			p.failures[name] = r
		}
		for _, o := range f.Ops {
			r.keys.addOp(o)
		}
		r.attempts++
		r.due = now.Add(p.backoff(r.attempts))
		if r.err == nil || r.err.Error() != f.Err.Error() {
			p.log.Error("kernel refused a Service's operations; the rest of the node is synced, this Service is retried",
				zap.Stringer("service", name), zap.Error(f.Err), zap.Int("pendingOps", len(f.Ops)), zap.Time("retryAt", r.due))
		} else {
			p.log.Debug("still failing", zap.Stringer("service", name), zap.Error(f.Err), zap.Int("attempts", r.attempts))
		}
		r.err = f.Err
	}
}

// backoff is RetryMin doubled per extra failure, capped at RetryMax.
func (p *Proxier) backoff(attempts int) time.Duration {
	d := p.opts.RetryMin
	for i := 1; i < attempts && d < p.opts.RetryMax; i++ {
		d *= 2
	}
	return min(d, p.opts.RetryMax)
}

// addOp puts the key an operation works on into the scope, for its owner.
func (sc *Scope) addOp(o Op) {
	switch o.Kind {
	case OpAddEntry, OpDelEntry:
		addOnce(sc.Entries, o.Entry, o.Owner)
	case OpBindAddr, OpUnbindAddr:
		addOnce(sc.Addrs, o.Addr, o.Owner)
	default:
		addOnce(sc.Servers, o.Service.Key, o.Owner)
	}
}

func namesOf[K comparable](m map[K]types.NamespacedName) map[types.NamespacedName]bool {
	out := map[types.NamespacedName]bool{}
	for _, n := range m {
		out[n] = true
	}
	return out
}
