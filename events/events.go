// Package events records kube-ipvs' warnings as Kubernetes Events
// (events.k8s.io/v1, through client-go's broadcaster, as kube-proxy does):
// those that concern one Service on that Service, start-up and
// configuration warnings on this Node.
//
// Events are rate-limited twice. The same warning on the same object is
// recorded at most once per Repeat (a Service rebuilt at every full sync
// does not make an Event each time; the broadcaster also folds repeats
// into one Event's series), and all of them share a token bucket (Burst
// at once, then one per Every), so a configuration change that
// invalidates thousands of Services cannot flood the apiserver. What is
// dropped is still logged by the proxier.
package events

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	clientevents "k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
)

// Component is the reporting controller of kube-ipvs' Events.
const Component = "kube-ipvs"

// The pace of Events.
const (
	Repeat = 10 * time.Minute
	Burst  = 25
	Every  = 2 * time.Second
)

// action is what kube-ipvs was doing when it warned.
const action = "Sync"

// Recorder records Warning Events. The zero value and nil record nothing.
type Recorder struct {
	rec   clientevents.EventRecorder
	node  *v1.ObjectReference
	clock clock.PassiveClock

	mu     sync.Mutex
	last   map[key]time.Time // when each warning was last recorded
	tokens float64
	filled time.Time // when tokens was last refilled
}

type key struct {
	object       types.UID
	reason, note string
}

// New returns a Recorder that sends to client's events.k8s.io API, with
// Node events on nodeName, and its stop function (which flushes nothing:
// Events still queued are dropped, as at any exit).
func New(ctx context.Context, client kubernetes.Interface, nodeName string) (*Recorder, func()) {
	b := clientevents.NewBroadcaster(&clientevents.EventSinkImpl{Interface: client.EventsV1()})
	b.StartRecordingToSink(ctx.Done())
	r := NewWith(b.NewRecorder(scheme.Scheme, Component), nodeName, clock.RealClock{})
	return r, b.Shutdown
}

// NewWith returns a Recorder over rec, for tests.
func NewWith(rec clientevents.EventRecorder, nodeName string, clk clock.PassiveClock) *Recorder {
	return &Recorder{
		rec: rec,
		// As kube-proxy refers to its Node: by name, the name as UID.
		node:   &v1.ObjectReference{Kind: "Node", Name: nodeName, UID: types.UID(nodeName)},
		clock:  clk,
		last:   map[key]time.Time{},
		tokens: Burst,
		filled: clk.Now(),
	}
}

// Service records a Warning on svc. reason is a sentence (a skip reason:
// "externalIP outside externalIPs.allowedCIDRs"); the Event's reason is it
// in CamelCase (ExternalIPOutsideExternalIPsAllowedCIDRs), and note says
// what was not done.
func (r *Recorder) Service(svc *v1.Service, reason, note string) {
	if r == nil || svc == nil {
		return
	}
	uid := svc.UID
	if uid == "" {
		uid = types.UID(svc.Namespace + "/" + svc.Name)
	}
	if r.allow(key{uid, reason, note}) {
		r.rec.Eventf(svc, nil, v1.EventTypeWarning, EventReason(reason), action, "%s", note)
	}
}

// Node records a Warning on this node.
func (r *Recorder) Node(reason, note string) {
	if r == nil {
		return
	}
	if r.allow(key{r.node.UID, reason, note}) {
		r.rec.Eventf(r.node, nil, v1.EventTypeWarning, EventReason(reason), action, "%s", note)
	}
}

// allow reports whether a warning may be recorded now, and counts it.
func (r *Recorder) allow(k key) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock.Now()
	if t, ok := r.last[k]; ok && now.Sub(t) < Repeat {
		return false
	}
	r.tokens = min(Burst, r.tokens+now.Sub(r.filled).Seconds()/Every.Seconds())
	r.filled = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	r.last[k] = now
	if len(r.last) > 4096 {
		for k, t := range r.last {
			if now.Sub(t) >= Repeat {
				delete(r.last, k)
			}
		}
	}
	return true
}

// EventReason turns a sentence into an Event reason: each word with its
// first letter upper-cased, everything but letters and digits dropped
// ("virtual server claimed by another Service" →
// "VirtualServerClaimedByAnotherService").
func EventReason(s string) string {
	var b strings.Builder
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		r, n := utf8.DecodeRuneInString(w)
		b.WriteRune(unicode.ToUpper(r))
		b.WriteString(w[n:])
	}
	return b.String()
}
