// Package events records kube-ipvs' warnings as Kubernetes Events
// (events.k8s.io/v1, as kube-proxy does): those that concern one Service
// on that Service, start-up and configuration warnings on this Node.
//
// Events are rate-limited twice. The same warning on the same object is
// recorded at most once per Repeat (a Service rebuilt at every full sync
// does not make an Event each time; the broadcaster also folds repeats
// does not make an Event each time), and all of them share a token bucket
// (Burst at once, then one per Every), so a configuration change that
// invalidates thousands of Services cannot flood the apiserver. What is
// dropped is still logged by the proxier.
//
// Unlike client-go's event broadcaster (which kube-proxy uses, and which
// needs client-go's scheme of every API group), each Event is created
// once and never folded into a series: Repeat already keeps a warning
// from recurring within the broadcaster's six-minute series window.
package events

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
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

// Eventf records one Event; client-go's events.EventRecorder (and its
// FakeRecorder, for tests) is one.
type Eventf interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Recorder records Warning Events. The zero value and nil record nothing.
type Recorder struct {
	rec   Eventf
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

// Creator creates an Event through the events.k8s.io API
// (kubeapi.Client is one).
type Creator interface {
	CreateEvent(ctx context.Context, e *eventsv1.Event) error
}

// New returns a Recorder that creates its Events through c, with Node
// events on nodeName, and its stop function (which flushes nothing:
// Events still queued are dropped, as at any exit).
func New(ctx context.Context, c Creator, nodeName string) (*Recorder, func()) {
	ctx, cancel := context.WithCancel(ctx)
	hostname, _ := os.Hostname()
	s := &sender{c: c, queue: make(chan *eventsv1.Event, queueLength), instance: Component + "-" + hostname, clock: clock.RealClock{}}
	go s.run(ctx)
	return NewWith(s, nodeName, clock.RealClock{}), cancel
}

// NewWith returns a Recorder over rec, for tests.
func NewWith(rec Eventf, nodeName string, clk clock.PassiveClock) *Recorder {
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

// queueLength is how many Events may wait for the apiserver, as in
// client-go's broadcaster; more are dropped.
const queueLength = 1000

// Sending one Event is tried this many times, this far apart, while the
// apiserver cannot be reached or is overloaded.
const (
	sendAttempts = 5
	sendRetry    = 2 * time.Second
)

// sender makes Events as client-go's event recorder makes them and
// creates them one at a time.
type sender struct {
	c        Creator
	queue    chan *eventsv1.Event
	instance string // ReportingInstance: kube-ipvs-<hostname>
	clock    clock.PassiveClock
}

// Eventf queues an Event about regarding (a Service or an
// ObjectReference); related is not used.
func (s *sender) Eventf(regarding, _ runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref := reference(regarding)
	if ref == nil {
		return
	}
	now := s.clock.Now()
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	e := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: eventName(ref.Name, now), Namespace: ns},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: Component,
		ReportingInstance:   s.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Note:                truncate(fmt.Sprintf(note, args...), noteLimit),
		Type:                eventtype,
	}
	select {
	case s.queue <- e:
	default: // the apiserver is behind: dropped, as the broadcaster drops
	}
}

func (s *sender) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.queue:
			s.send(ctx, e)
		}
	}
}

// send creates e, trying again while the failure may pass.
func (s *sender) send(ctx context.Context, e *eventsv1.Event) {
	for range sendAttempts {
		err := s.c.CreateEvent(ctx, e)
		if err == nil || !retriable(err) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(sendRetry):
		}
	}
}

// retriable reports whether creating an Event may work later: not when
// the apiserver refused it (invalid, forbidden, already there).
func retriable(err error) bool {
	return !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsAlreadyExists(err) &&
		!apierrors.IsBadRequest(err) && !apierrors.IsNotFound(err) && !apierrors.IsUnauthorized(err)
}

// reference is what an Event's regarding field says of obj; objects from
// informers carry no kind, so it comes from the Go type.
func reference(obj runtime.Object) *v1.ObjectReference {
	switch o := obj.(type) {
	case *v1.ObjectReference:
		return o
	case *v1.Service:
		return &v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: o.Namespace, Name: o.Name,
			UID: o.UID, ResourceVersion: o.ResourceVersion}
	}
	return nil
}

// eventName is client-go's: the object's name and the time in hex
// nanoseconds, or a time-based name when that is not a valid name.
func eventName(object string, t time.Time) string {
	name := fmt.Sprintf("%s.%x", object, t.UnixNano())
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		name = fmt.Sprintf("kube-ipvs.%x", t.UnixNano())
	}
	return name
}

// noteLimit is the events.k8s.io API's limit on a note, in bytes.
const noteLimit = 1024

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
