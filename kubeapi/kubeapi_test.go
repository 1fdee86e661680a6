package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// apiserver answers what a Client asks with JSON, and keeps each request
// as "METHOD path?query" with its content type.
type apiserver struct {
	mu       sync.Mutex
	requests []string
	bodies   []string
	handle   func(w http.ResponseWriter, r *http.Request)
}

func (a *apiserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.requests = append(a.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Content-Type"))
	a.bodies = append(a.bodies, string(body))
	a.mu.Unlock()
	a.handle(w, r)
}

func (a *apiserver) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.requests...)
}

func start(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) (*apiserver, *Client) {
	t.Helper()
	a := &apiserver{handle: handle}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	rc := &rest.Config{Host: srv.URL}
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	c, err := New(rc)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func jsonList(kind, apiVersion string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":%q,"apiVersion":%q,"metadata":{"resourceVersion":"7"},"items":[]}`, kind, apiVersion)
	}
}

// Each list goes where the generated clients send it, with its selector.
func TestListPaths(t *testing.T) {
	sel, err := labels.Parse("!service.kubernetes.io/headless")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lw               func(*Client) cache.ListerWatcher
		kind, apiVersion string
		want             string
	}{
		{func(c *Client) cache.ListerWatcher { return c.Services(sel) }, "ServiceList", "v1",
			"GET /api/v1/services?labelSelector=%21service.kubernetes.io%2Fheadless&limit=500"},
		{func(c *Client) cache.ListerWatcher { return c.EndpointSlices(sel) }, "EndpointSliceList", "discovery.k8s.io/v1",
			"GET /apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless&limit=500"},
		{func(c *Client) cache.ListerWatcher { return c.Node("node-a") }, "NodeList", "v1",
			"GET /api/v1/nodes?fieldSelector=metadata.name%3Dnode-a&limit=500"},
	} {
		a, c := start(t, jsonList(tc.kind, tc.apiVersion))
		obj, err := tc.lw(c).List(metav1.ListOptions{Limit: 500})
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if l, ok := obj.(metav1.ListInterface); !ok || l.GetResourceVersion() != "7" {
			t.Errorf("%s: decoded %T", tc.kind, obj)
		}
		if got := a.seen(); len(got) != 1 || got[0] != tc.want+" " {
			t.Errorf("%s: requests %q, want %q", tc.kind, got, tc.want)
		}
	}
}

// An informer on a Client's Services lists them first (resourceVersion
// 0, no watch-list: see ListThenWatch), syncs on that list, and then
// watches from the list's resourceVersion.
func TestInformersListThenWatch(t *testing.T) {
	watched := make(chan string, 1)
	a, c := start(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		q := r.URL.Query()
		if q.Get("watch") != "true" {
			fmt.Fprint(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[`+
				`{"metadata":{"name":"web","namespace":"default","resourceVersion":"5"}}]}`)
			return
		}
		select {
		case watched <- q.Get("resourceVersion"):
		default:
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	inf := cache.NewSharedIndexInformer(c.Services(labels.Everything()), &v1.Service{}, 0, cache.Indexers{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go inf.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatalf("the informer did not sync; requests %q", a.seen())
	}
	if keys := inf.GetStore().ListKeys(); len(keys) != 1 || keys[0] != "default/web" {
		t.Errorf("cache holds %q, want default/web", keys)
	}
	select {
	case rv := <-watched:
		if rv != "7" {
			t.Errorf("the watch starts at resourceVersion %q, want the list's 7", rv)
		}
	case <-ctx.Done():
		t.Fatalf("no watch after the list; requests %q", a.seen())
	}
	got := a.seen()
	list := got[0]
	for _, p := range []string{"GET /api/v1/services?", "resourceVersion=0"} {
		if !strings.Contains(list, p) {
			t.Errorf("first request %q lacks %q", list, p)
		}
	}
	for _, p := range []string{"watch=", "sendInitialEvents"} {
		if strings.Contains(list, p) {
			t.Errorf("first request %q is not a plain list: it has %q", list, p)
		}
	}
	if w := got[1]; !strings.Contains(w, "watch=true") || !strings.Contains(w, "allowWatchBookmarks=true") || strings.Contains(w, "sendInitialEvents") {
		t.Errorf("second request %q, want a watch with bookmarks and no initial events", w)
	}
}

// A Client's list hands the reflector its items where decoding put them,
// in the list's one array, so the reflector stores them without a copy;
// the list's resourceVersion and continue token are kept.
func TestListKeepsItemsInPlace(t *testing.T) {
	_, c := start(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"more"},"items":[`+
			`{"metadata":{"name":"a","namespace":"default"}},{"metadata":{"name":"b","namespace":"default"}}]}`)
	})
	obj, err := c.Services(labels.Everything()).List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list, ok := obj.(*ObjectList)
	if !ok {
		t.Fatalf("List returned %T, want *ObjectList", obj)
	}
	if list.ResourceVersion != "7" || list.Continue != "more" || len(list.Items) != 2 {
		t.Fatalf("list %+v", list)
	}
	a, b := list.Items[0].(*v1.Service), list.Items[1].(*v1.Service)
	if a.Name != "a" || b.Name != "b" {
		t.Fatalf("items %q, %q", a.Name, b.Name)
	}
	if d := uintptr(unsafe.Pointer(b)) - uintptr(unsafe.Pointer(a)); d != unsafe.Sizeof(v1.Service{}) {
		t.Errorf("the items are %d bytes apart, not neighbours in one array (%d)", d, unsafe.Sizeof(v1.Service{}))
	}
	// What the reflector calls on a list: the same objects, not copies.
	got, err := meta.ExtractListWithAlloc(list)
	if err != nil || len(got) != 2 || got[0] != list.Items[0] || got[1] != list.Items[1] {
		t.Errorf("ExtractListWithAlloc = %v, %v; want the list's own items", got, err)
	}
	cp := list.DeepCopyObject().(*ObjectList)
	if cp.ResourceVersion != "7" || len(cp.Items) != 2 || cp.Items[0] == list.Items[0] || cp.Items[0].(*v1.Service).Name != "a" {
		t.Errorf("DeepCopyObject = %+v", cp)
	}
}

// An Event is created in its namespace, in protobuf; the version comes
// from /version.
func TestCreateEventAndServerVersion(t *testing.T) {
	a, c := start(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/version" {
			fmt.Fprint(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"kind":"Event","apiVersion":"events.k8s.io/v1","metadata":{"name":"web.1","namespace":"shop"}}`)
	})
	info, err := c.ServerVersion(context.Background())
	if err != nil || info.GitVersion != "v1.37.2" {
		t.Fatalf("ServerVersion = %+v, %v", info, err)
	}
	e := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "web.1", Namespace: "shop"}, Reason: "R", Note: "n", Type: "Warning",
		EventTime: metav1.NewMicroTime(time.Now()), ReportingController: "kube-ipvs", ReportingInstance: "kube-ipvs-h", Action: "Sync"}
	if err := c.CreateEvent(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	got := a.seen()
	want := []string{"GET /version? ", "POST /apis/events.k8s.io/v1/namespaces/shop/events? application/vnd.kubernetes.protobuf"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var decoded eventsv1.Event
	if _, _, err := Codecs.UniversalDeserializer().Decode([]byte(a.bodies[1]), nil, &decoded); err != nil || decoded.Reason != "R" {
		t.Errorf("the body decodes to %+v, %v", decoded, err)
	}
	if b, _ := json.Marshal(info); !strings.Contains(string(b), "v1.37.2") {
		t.Errorf("version %s", b)
	}
}
