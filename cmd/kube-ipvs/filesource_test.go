package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	if err == nil || !strings.Contains(err.Error(), "kind Pod is not a Service or an EndpointSlice") {
		t.Fatalf("error = %v", err)
	}
	if _, err := startFileSource(context.Background(), zap.NewNop(), filepath.Join(dir, "missing"), time.Second); err == nil {
		t.Fatal("a missing directory was accepted")
	}
}
