package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

const webYAML = `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.2]}]
`

// write puts a file in place whole (a rename), so a reload never reads it
// half-written.
func write(t *testing.T, dir, name, text string) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func list[L runtime.Object](t *testing.T, lw cache.ListerWatcher) L {
	t.Helper()
	l, err := lw.List(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.(L)
}

// objects lists what the source serves, as "Kind ns/name detail" lines.
func objects(t *testing.T, c *fileSource) string {
	t.Helper()
	svcs := list[*v1.ServiceList](t, c.Services(labels.Everything()))
	slices := list[*discovery.EndpointSliceList](t, c.EndpointSlices(labels.Everything()))
	var out []string
	for _, s := range svcs.Items {
		out = append(out, "Service "+s.Namespace+"/"+s.Name+" "+s.Spec.ClusterIP)
	}
	for _, s := range slices.Items {
		var addrs []string
		for _, e := range s.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
		out = append(out, "EndpointSlice "+s.Namespace+"/"+s.Name+" "+strings.Join(addrs, ","))
	}
	return strings.Join(out, "\n")
}

func waitObjects(t *testing.T, c *fileSource, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := objects(t, c)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("objects:\n%s\nwant:\n%s", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFileSourceFollowsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webYAML)
	write(t, dir, "notes.txt", "not an object file")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startFileSource(ctx, zap.NewNop(), dir, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitObjects(t, c, "Service default/web 10.96.0.10\nEndpointSlice default/web-1 10.244.1.2")

	// A change is an update; a bad file keeps the previous objects.
	write(t, dir, "web.yaml", strings.Replace(webYAML, "10.244.1.2", "10.244.1.3", 1))
	waitObjects(t, c, "Service default/web 10.96.0.10\nEndpointSlice default/web-1 10.244.1.3")
	write(t, dir, "broken.yaml", "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n")
	time.Sleep(100 * time.Millisecond)
	waitObjects(t, c, "Service default/web 10.96.0.10\nEndpointSlice default/web-1 10.244.1.3")

	// Removing the file deletes its objects.
	for _, f := range []string{"broken.yaml", "web.yaml"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	waitObjects(t, c, "")
}

func TestFileSourceRefusesABadDirectoryAtStart(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
	_, err := startFileSource(context.Background(), zap.NewNop(), dir, time.Second)
	if err == nil || !strings.Contains(err.Error(), "kind Pod is not a Service, an EndpointSlice or a Node") {
		t.Fatalf("error = %v", err)
	}
	if _, err := startFileSource(context.Background(), zap.NewNop(), filepath.Join(dir, "missing"), time.Second); err == nil {
		t.Fatal("a missing directory was accepted")
	}
}

const nodesYAML = `apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.60.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, namespace: ignored}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.60.12}]}
`

// nodes lists the Nodes that a list and a watch with the field selector
// metadata.name=NAME see (as the agent's Node informer asks), as
// "name internalIP" lines; empty name lists every Node.
func nodes(t *testing.T, c *fileSource, name string) string {
	t.Helper()
	lw := c.Node(name)
	if name == "" {
		lw = c.listWatch("Node", func() runtime.Object { return &v1.NodeList{} }, func(metav1.Object) bool { return true })
	}
	var out []string
	for _, n := range list[*v1.NodeList](t, lw).Items {
		out = append(out, n.Name+" "+n.Namespace+n.Status.Addresses[0].Address)
	}
	return strings.Join(out, "\n")
}

func TestFileSourceServesNodesBySelector(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nodes.yaml", nodesYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startFileSource(ctx, zap.NewNop(), dir, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := nodes(t, c, ""), "node-a 192.168.60.11\nnode-b 192.168.60.12"; got != want {
		t.Fatalf("Nodes (cluster-scoped, any namespace in the file dropped):\n%s\nwant:\n%s", got, want)
	}
	if got := nodes(t, c, "node-b"); got != "node-b 192.168.60.12" {
		t.Fatalf("list with metadata.name=node-b: %q", got)
	}

	// The agent's Node informer: only node-a's events, with the update.
	w, err := c.Node("node-a").Watch(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() (watch.EventType, string) {
		t.Helper()
		select {
		case e := <-w.ResultChan():
			n := e.Object.(*v1.Node)
			return e.Type, n.Name + " " + n.Status.Addresses[0].Address
		case <-time.After(5 * time.Second):
			t.Fatal("no watch event")
			return "", ""
		}
	}
	if typ, got := next(); typ != watch.Added || got != "node-a 192.168.60.11" {
		t.Fatalf("first event %s %s, want ADDED node-a", typ, got)
	}
	changed := strings.NewReplacer("192.168.60.11", "192.168.60.21", "192.168.60.12", "192.168.60.22").Replace(nodesYAML)
	write(t, dir, "nodes.yaml", changed)
	if typ, got := next(); typ != watch.Modified || got != "node-a 192.168.60.21" {
		t.Fatalf("after the change: %s %s, want MODIFIED node-a 192.168.60.21", typ, got)
	}
	if err := os.Remove(filepath.Join(dir, "nodes.yaml")); err != nil {
		t.Fatal(err)
	}
	if typ, got := next(); typ != watch.Deleted || got != "node-a 192.168.60.21" {
		t.Fatalf("after the removal: %s %s, want DELETED node-a", typ, got)
	}
	select {
	case e := <-w.ResultChan():
		t.Fatalf("an event for another Node passed the selector: %v %v", e.Type, e.Object)
	case <-time.After(100 * time.Millisecond):
	}
}

// nextEvent is the next event of w, as "TYPE ns/name rv"; "" when none
// comes within wait.
func nextEvent(t *testing.T, w watch.Interface, wait time.Duration) string {
	t.Helper()
	select {
	case e := <-w.ResultChan():
		m, ok := e.Object.(metav1.Object)
		if !ok {
			t.Fatalf("event %s of a %T", e.Type, e.Object)
		}
		return fmt.Sprintf("%s %s/%s %s", e.Type, m.GetNamespace(), m.GetName(), m.GetResourceVersion())
	case <-time.After(wait):
		return ""
	}
}

// As from the apiserver: a watch from a list's version gets every change
// made since, even those before the watch began; one from a version the
// source no longer keeps is told so (410), and the informer relists.
func TestFileSourceWatchesFromAListsVersion(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startFileSource(ctx, zap.NewNop(), dir, time.Hour) // reloaded by hand
	if err != nil {
		t.Fatal(err)
	}
	svcs := c.Services(labels.Everything())
	l := list[*v1.ServiceList](t, svcs)
	if len(l.Items) != 1 || l.ResourceVersion != "2" || l.Items[0].ResourceVersion == "" {
		t.Fatalf("list at version %q with %d Services (version %q), want version 2 and web", l.ResourceVersion, len(l.Items), l.Items[0].ResourceVersion)
	}
	write(t, dir, "web.yaml", strings.Replace(webYAML, "10.96.0.10", "10.96.0.11", 1))
	if err := c.reload(); err != nil {
		t.Fatal(err)
	}
	w, err := svcs.Watch(metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if got := nextEvent(t, w, 5*time.Second); got != "MODIFIED default/web 3" {
		t.Errorf("first event from version 2: %q, want the change made before the watch began", got)
	}
	if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := c.reload(); err != nil {
		t.Fatal(err)
	}
	// Changes are made in kind, namespace and name order: the
	// EndpointSlice's deletion is version 4, the Service's 5.
	if got := nextEvent(t, w, 5*time.Second); got != "DELETED default/web 5" {
		t.Errorf("after the removal: %q, want the Service's last state at the deletion's version", got)
	}
	if got := nextEvent(t, w, 50*time.Millisecond); got != "" {
		t.Errorf("a Services watch saw %q (an EndpointSlice?)", got)
	}

	for range historyLength { // push version 2 out of the history
		write(t, dir, "web.yaml", webYAML)
		if err := c.reload(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "web.yaml")); err != nil {
			t.Fatal(err)
		}
		if err := c.reload(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := svcs.Watch(metav1.ListOptions{ResourceVersion: "2"}); !apierrors.IsResourceExpired(err) {
		t.Errorf("watch from a version no longer kept: %v, want 410 Expired", err)
	}
}

// A label selector is applied to every version of an object: a Service
// relabelled out of it is DELETED for that watch, and ADDED back.
func TestFileSourceSelectsByLabel(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startFileSource(ctx, zap.NewNop(), dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := labels.Parse("!service.kubernetes.io/service-proxy-name")
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Services(sel).Watch(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// Version 1 is the EndpointSlice (kind, namespace, name order).
	if got := nextEvent(t, w, 5*time.Second); got != "ADDED default/web 2" {
		t.Fatalf("first event: %q", got)
	}
	for _, step := range []struct{ yaml, want string }{
		{strings.Replace(webYAML, "metadata: {name: web}", "metadata: {name: web, labels: {service.kubernetes.io/service-proxy-name: other}}", 1), "DELETED default/web 3"},
		{webYAML, "ADDED default/web 4"},
	} {
		write(t, dir, "web.yaml", step.yaml)
		if err := c.reload(); err != nil {
			t.Fatal(err)
		}
		if got := nextEvent(t, w, 5*time.Second); got != step.want {
			t.Errorf("after relabelling: %q, want %q", got, step.want)
		}
	}
}

// The agent's informers run on a fileSource: they sync, see a change,
// and every object they store is their own copy.
func TestFileSourceFeedsAnInformer(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "web.yaml", webYAML)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startFileSource(ctx, zap.NewNop(), dir, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	inf := cache.NewSharedIndexInformer(c.EndpointSlices(labels.Everything()), &discovery.EndpointSlice{}, 0, cache.Indexers{})
	seen := make(chan string, 10)
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { seen <- "add " + obj.(*discovery.EndpointSlice).Endpoints[0].Addresses[0] },
		UpdateFunc: func(_, obj any) { seen <- "update " + obj.(*discovery.EndpointSlice).Endpoints[0].Addresses[0] },
	}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { inf.Run(ctx.Done()); close(ran) }()
	defer func() { cancel(); <-ran }() // nothing of it runs on into other tests
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("the informer did not sync")
	}
	if got := <-seen; got != "add 10.244.1.2" {
		t.Fatalf("first event %q", got)
	}
	for _, obj := range inf.GetStore().List() {
		obj.(*discovery.EndpointSlice).Endpoints = nil // as the cache transform slims objects in place
	}
	write(t, dir, "web.yaml", strings.Replace(webYAML, "10.244.1.2", "10.244.1.3", 1))
	select {
	case got := <-seen:
		if got != "update 10.244.1.3" {
			t.Errorf("after the change: %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the informer saw no change")
	}
	if got := objects(t, c); !strings.Contains(got, "EndpointSlice default/web-1 10.244.1.3") {
		t.Errorf("the source serves %q: the informer's edit reached it", got)
	}
}
