package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clientevents "k8s.io/client-go/tools/events"
	testclock "k8s.io/utils/clock/testing"
)

func TestEventReason(t *testing.T) {
	for in, want := range map[string]string{
		"virtual server claimed by another Service":   "VirtualServerClaimedByAnotherService",
		"externalIP outside externalIPs.allowedCIDRs": "ExternalIPOutsideExternalIPsAllowedCIDRs",
		"service port 0": "ServicePort0",
	} {
		if got := EventReason(in); got != want {
			t.Errorf("EventReason(%q) = %q, want %q", in, got, want)
		}
	}
}

func svc(name string) *v1.Service {
	return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: "uid-" + types.UID(name)}}
}

// The same warning on the same object is recorded once per Repeat, and
// all warnings share a bucket of Burst that refills one per Every.
func TestRecorderRateLimits(t *testing.T) {
	clk := testclock.NewFakePassiveClock(time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC))
	rec := clientevents.NewFakeRecorder(1000)
	r := NewWith(rec, "node-a", clk)
	web := svc("web")
	r.Service(web, "externalIP outside externalIPs.allowedCIDRs", "externalIP 203.0.113.9")
	r.Service(web, "externalIP outside externalIPs.allowedCIDRs", "externalIP 203.0.113.9")
	if got := len(rec.Events); got != 1 {
		t.Fatalf("%d events for one warning given twice, want 1", got)
	}
	if e := <-rec.Events; e != "Warning ExternalIPOutsideExternalIPsAllowedCIDRs externalIP 203.0.113.9" {
		t.Errorf("event %q", e)
	}
	clk.SetTime(clk.Now().Add(Repeat))
	r.Service(web, "externalIP outside externalIPs.allowedCIDRs", "externalIP 203.0.113.9")
	if got := len(rec.Events); got != 1 {
		t.Fatalf("%d events once Repeat passed, want 1", got)
	}
	<-rec.Events
	// The bucket was full again after Repeat, and the repeat took a
	// token: Burst-1 distinct warnings pass, the next wait for a token.
	for i := range Burst + 5 {
		r.Service(web, "service port 0", fmt.Sprintf("port %d", i))
	}
	if got := len(rec.Events); got != Burst-1 {
		t.Fatalf("%d events of %d distinct warnings at once, want the burst of %d", got, Burst+5, Burst-1)
	}
	for range Burst - 1 {
		<-rec.Events
	}
	clk.SetTime(clk.Now().Add(Every))
	r.Node("configuration", "ipvs.scheduler sed is not loaded")
	r.Node("configuration", "another")
	if got := len(rec.Events); got != 1 {
		t.Fatalf("%d events one Every later, want 1", got)
	}
	if e := <-rec.Events; !strings.HasPrefix(e, "Warning Configuration ") {
		t.Errorf("node event %q", e)
	}
	var nilRec *Recorder
	nilRec.Service(web, "x", "y") // records nothing, does not panic
	nilRec.Node("x", "y")
}

// Through the real broadcaster, an Event lands in events.k8s.io/v1 on the
// Service, from kube-ipvs.
// creator keeps the Events it is asked to create, failing the first
// failures calls with a server timeout.
type creator struct {
	mu       sync.Mutex
	failures int
	calls    int
	created  []*eventsv1.Event
}

func (c *creator) CreateEvent(_ context.Context, e *eventsv1.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls <= c.failures {
		return apierrors.NewServerTimeout(schema.GroupResource{Group: "events.k8s.io", Resource: "events"}, "create", 1)
	}
	c.created = append(c.created, e)
	return nil
}

func (c *creator) events() []*eventsv1.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.created)
}

// A Service's warning and a Node's become events.k8s.io Events made as
// client-go's recorder makes them; a failure that may pass is retried.
func TestRecorderSendsToTheAPI(t *testing.T) {
	c := &creator{failures: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, stop := New(ctx, c, "node-a")
	defer stop()
	s := svc("web")
	s.ResourceVersion = "42"
	r.Service(s, "virtual server claimed by another Service", "TCP/192.0.2.5:80 is claimed by default/api and default/web; default/api wins")
	r.Node("configuration warning", strings.Repeat("é", 600))
	var got []*eventsv1.Event
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got = c.events()
		return len(got) == 2, nil
	})
	if err != nil {
		t.Fatalf("%d Events created, want 2", len(got))
	}
	host, _ := os.Hostname()
	e := got[0]
	line := fmt.Sprintf("%s %s %s %s %s/%s %s/%s uid=%s rv=%s %s %s %s", e.Namespace, e.Type, e.Reason, e.Action, e.Regarding.APIVersion, e.Regarding.Kind,
		e.Regarding.Namespace, e.Regarding.Name, e.Regarding.UID, e.Regarding.ResourceVersion, e.ReportingController, e.ReportingInstance, e.Note)
	want := "default Warning VirtualServerClaimedByAnotherService Sync v1/Service default/web uid=" + string(s.UID) + " rv=42 kube-ipvs kube-ipvs-" + host +
		" TCP/192.0.2.5:80 is claimed by default/api and default/web; default/api wins"
	if line != want {
		t.Errorf("event\n%s\nwant\n%s", line, want)
	}
	if !strings.HasPrefix(e.Name, "web.") || e.EventTime.IsZero() || e.Series != nil {
		t.Errorf("event name %q, time %v, series %v: want web.<hex time>, a time and no series", e.Name, e.EventTime, e.Series)
	}
	n := got[1]
	if n.Namespace != "default" || n.Regarding.Kind != "Node" || n.Regarding.Name != "node-a" || n.Reason != "ConfigurationWarning" {
		t.Errorf("node event %s/%s about %s %s: %s", n.Namespace, n.Name, n.Regarding.Kind, n.Regarding.Name, n.Reason)
	}
	if len(n.Note) > 1024 || !utf8.ValidString(n.Note) || !strings.HasPrefix(n.Note, "éé") {
		t.Errorf("a 1,200-byte note became %d bytes (valid UTF-8: %v), want at most the API's 1,024", len(n.Note), utf8.ValidString(n.Note))
	}
	if c.calls != 3 {
		t.Errorf("%d create calls, want 3 (the first failed and was tried again)", c.calls)
	}
}

// An Event the apiserver refuses is not sent again.
func TestRecorderDoesNotRetryARefusal(t *testing.T) {
	c := refusing{calls: make(chan struct{}, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, stop := New(ctx, c, "node-a")
	defer stop()
	r.Node("configuration warning", "one")
	<-c.calls
	select {
	case <-c.calls:
		t.Error("a forbidden Event was sent again")
	case <-time.After(sendRetry + time.Second):
	}
}

type refusing struct{ calls chan struct{} }

func (c refusing) CreateEvent(context.Context, *eventsv1.Event) error {
	c.calls <- struct{}{}
	return apierrors.NewForbidden(schema.GroupResource{Group: "events.k8s.io", Resource: "events"}, "x", errors.New("no RBAC"))
}

func TestEventName(t *testing.T) {
	at := time.Unix(0, 0x1234)
	if got := eventName("web", at); got != "web.1234" {
		t.Errorf("eventName(web) = %q", got)
	}
	if got := eventName("Not_A_Name", at); got != "kube-ipvs.1234" {
		t.Errorf("eventName(Not_A_Name) = %q, want kube-ipvs.1234", got)
	}
}
