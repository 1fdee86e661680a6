package events

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
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
func TestRecorderSendsToTheAPI(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, stop := New(ctx, client, "node-a")
	defer stop()
	r.Service(svc("web"), "virtual server claimed by another Service", "TCP/192.0.2.5:80 is claimed by default/api and default/web; default/api wins")
	var got string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := client.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		e := evs.Items[0]
		got = fmt.Sprintf("%s %s %s %s/%s %s %s", e.Type, e.Reason, e.Action, e.Regarding.Kind, e.Regarding.Name, e.ReportingController, e.Note)
		return true, nil
	})
	if err != nil {
		t.Fatalf("no Event recorded: %v", err)
	}
	want := "Warning VirtualServerClaimedByAnotherService Sync Service/web kube-ipvs TCP/192.0.2.5:80 is claimed by default/api and default/web; default/api wins"
	if got != want {
		t.Errorf("event\n%s\nwant\n%s", got, want)
	}
}
