package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
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

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// objects lists what the clientset serves, as "Kind ns/name detail" lines.
func objects(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	svcs, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slices, err := c.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
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

func waitObjects(t *testing.T, c kubernetes.Interface, want string) {
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
func nodes(t *testing.T, c kubernetes.Interface, name string) string {
	t.Helper()
	opts := metav1.ListOptions{}
	if name != "" {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
	list, err := c.CoreV1().Nodes().List(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range list.Items {
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
	w, err := c.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", "node-a").String(),
	})
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
