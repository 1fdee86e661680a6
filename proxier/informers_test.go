package proxier

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

func TestSelector(t *testing.T) {
	cases := []struct{ proxyName, want string }{
		{"", "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"},
		{"kube-ipvs", "!service.kubernetes.io/headless,service.kubernetes.io/service-proxy-name=kube-ipvs"},
	}
	for _, tc := range cases {
		sel, err := Selector(tc.proxyName)
		if err != nil {
			t.Fatalf("Selector(%q): %v", tc.proxyName, err)
		}
		if sel.String() != tc.want {
			t.Errorf("Selector(%q) = %q, want %q", tc.proxyName, sel, tc.want)
		}
	}
	if _, err := Selector("not a label value!"); err == nil {
		t.Error("a bad serviceProxyName was accepted")
	}
}

// clientSource is a Source over a fake clientset, whose actions record
// the selectors the Watcher asked for.
type clientSource struct{ c *fake.Clientset }

func (s clientSource) Services(sel labels.Selector) cache.ListerWatcher {
	c := s.c.CoreV1().Services("")
	return fakeListWatch(s.c, bySelector(sel), c.List, c.Watch)
}

func (s clientSource) EndpointSlices(sel labels.Selector) cache.ListerWatcher {
	c := s.c.DiscoveryV1().EndpointSlices("")
	return fakeListWatch(s.c, bySelector(sel), c.List, c.Watch)
}

func (s clientSource) Node(name string) cache.ListerWatcher {
	c := s.c.CoreV1().Nodes()
	return fakeListWatch(s.c, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}, c.List, c.Watch)
}

func bySelector(sel labels.Selector) func(*metav1.ListOptions) {
	return func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }
}

// fakeListWatch lists and watches with a typed fake client, as a
// generated informer does (the fake clientset has no watch-list).
func fakeListWatch[L runtime.Object](c *fake.Clientset, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return watchFn(ctx, o)
		},
	}, c)
}

// startWatcher runs the informers of a Watcher on a fake clientset and
// waits for their first sync.
func startWatcher(t *testing.T, client *fake.Clientset, proxyName string, p *Proxier, poke func()) {
	t.Helper()
	w, err := NewWatcher(clientSource{client}, testNode, proxyName, p, poke)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w.Start(ctx)
	if !w.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
}

func TestWatcherFeedsTheProxier(t *testing.T) {
	labelled := func(k, v string) func(*v1.Service) {
		return func(s *v1.Service) { s.Labels = map[string]string{k: v} }
	}
	client := fake.NewClientset(
		service(ns, "web"),
		slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))),
		service(ns, "other-proxy", withClusterIP("10.96.0.20"), labelled(LabelServiceProxyName, "someone-else")),
		service(ns, "headless-labelled", withClusterIP("10.96.0.30"), labelled(v1.IsHeadlessService, "")),
		&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}},
	)
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	pokes := make(chan struct{}, 100)
	startWatcher(t, client, "", p, func() { pokes <- struct{}{} })
	mustSync(t, p, true)

	checkDump(t, "ipvs", n.ipvs.Dump(), "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1\n")
	if len(pokes) == 0 {
		t.Error("events did not poke the runner")
	}
	// Services and slices are listed and watched with the server-side
	// selector, the Node by name (its informer is not waited for, so poll).
	noProxy := "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
	want := map[string]string{
		"list services": noProxy, "watch services": noProxy,
		"list endpointslices": noProxy, "watch endpointslices": noProxy,
		"list nodes": "metadata.name=" + testNode, "watch nodes": "metadata.name=" + testNode,
	}
	var seen map[string]string
	waitFor(t, func() bool { seen = listsAndWatches(client); return len(seen) == len(want) })
	if !maps.Equal(seen, want) {
		t.Errorf("lists and watches with selectors:\n%v\nwant:\n%v", seen, want)
	}

	// Later events flow in the same way: a slice's deletion (the cache
	// holds a CachedSlice) removes its real server, a Service's deletion
	// the Service.
	if err := client.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mustSync(t, p, false); return !strings.Contains(n.ipvs.Dump(), "10.244.1.1") })
	if err := client.CoreV1().Services(ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mustSync(t, p, false); return !strings.Contains(n.ipvs.Dump(), "10.96.0.10") })
}

func TestWatcherWithServiceProxyName(t *testing.T) {
	client := fake.NewClientset(
		service(ns, "mine", withClusterIP("10.96.0.20"), func(s *v1.Service) {
			s.Labels = map[string]string{LabelServiceProxyName: "kube-ipvs"}
		}),
		service(ns, "unlabelled"),
	)
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	startWatcher(t, client, "kube-ipvs", p, func() {})
	mustSync(t, p, true)
	checkDump(t, "ipvs", n.ipvs.Dump(), "-A -t 10.96.0.20:80 -s rr\n")
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunWritesNothingBeforeTheCachesSynced(t *testing.T) {
	client := fake.NewClientset(service(ns, "web"), slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"))))
	release := make(chan struct{})
	client.PrependReactor("list", "endpointslices", func(clienttesting.Action) (bool, runtime.Object, error) {
		<-release // the slice list hangs until the test lets it go
		return false, nil, nil
	})
	n := newFakeNode()
	p := newTestProxier(t, n, testOptions())
	n.resetCalls()
	r := NewRunner(zap.NewNop(), clock.RealClock{}, RunnerConfig{MinInterval: time.Millisecond, FullInterval: time.Minute}, p)
	w, err := NewWatcher(clientSource{client}, testNode, "", p, r.Request)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Run(ctx, w, r) }()
	defer func() {
		cancel()
		<-done
	}()

	time.Sleep(300 * time.Millisecond) // Services are listed; slices are not
	if r, w := n.calls(); r+w != 0 {
		t.Fatalf("%d kernel reads and %d writes before the caches synced: %v", r, w, n.callLog())
	}
	close(release)
	waitFor(t, func() bool { return strings.Contains(n.ipvs.Dump(), "-r 10.244.1.1:8080") })
}

// listsAndWatches maps each "verb resource" the clientset saw to its
// selector: the label selector for Services and EndpointSlices, the field
// selector for Nodes.
func listsAndWatches(client *fake.Clientset) map[string]string {
	seen := map[string]string{}
	for _, a := range client.Actions() {
		var labelSel, fieldSel string
		switch a := a.(type) {
		case clienttesting.ListActionImpl:
			labelSel, fieldSel = a.ListRestrictions.Labels.String(), a.ListRestrictions.Fields.String()
		case clienttesting.WatchActionImpl:
			labelSel, fieldSel = a.WatchRestrictions.Labels.String(), a.WatchRestrictions.Fields.String()
		default:
			continue
		}
		res := a.GetResource().Resource
		if res == "nodes" {
			labelSel = fieldSel
		}
		seen[a.GetVerb()+" "+res] = labelSel
	}
	return seen
}

func TestSlimForCacheKeepsWhatKubeIPVSReads(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate}}
	svc := service(ns, "web", func(s *v1.Service) {
		s.ManagedFields = managed
		s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"a": "large document"}`}
		s.Labels = map[string]string{"app": "web"}
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "203.0.113.10"}}
		s.Status.Conditions = []metav1.Condition{{Type: "LoadBalancerReady"}}
		s.OwnerReferences = []metav1.OwnerReference{{Kind: "Gateway", Name: "gw"}}
		s.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
		s.Spec.Selector = map[string]string{"app": "web"}
	})
	want := svc.DeepCopy()
	want.ManagedFields, want.Labels, want.Annotations, want.Status.Conditions = nil, nil, nil, nil
	want.OwnerReferences, want.Finalizers, want.Spec.Selector = nil, nil, nil
	for range 2 { // idempotent
		if _, err := SlimForCache(svc); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(svc, want) {
			t.Errorf("Service:\n%+v\nwant:\n%+v", svc, want)
		}
	}

	es := slice(ns, "web-1", "web", withEndpoints(ep("10.244.1.1"), ep("10.244.1.2")))
	es.ManagedFields = managed
	es.OwnerReferences = []metav1.OwnerReference{{Kind: "Service", Name: "web"}}
	es.Labels[discovery.LabelManagedBy] = "endpointslice-controller.k8s.io"
	es.Labels["app"] = "web"
	es.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: "2026-12-02T05:00:00Z", "other": "x"}
	es.Endpoints[0].Zone = ptr.To("zone-a")
	es.Endpoints[0].Hints = &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: "zone-a"}}}
	es.Endpoints[0].DeprecatedTopology = map[string]string{"topology.kubernetes.io/zone": "zone-a"}
	es.Endpoints[0].TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-abc",
		UID: "6f1c0d52-1a9e-4b9f-8d7e-0c3f1f6a2b11", ResourceVersion: "4711", APIVersion: "v1"}
	es.Endpoints[1].NodeName = ptr.To(testNode)
	keep := es.DeepCopy()
	keep.ManagedFields, keep.OwnerReferences = nil, nil
	keep.Labels, keep.Annotations = nil, nil
	keep.Endpoints[0].Zone, keep.Endpoints[0].Hints, keep.Endpoints[0].DeprecatedTopology = nil, nil, nil
	keep.Endpoints[0].TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-abc"}
	trigger := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	obj, err := SlimForCache(es)
	c, ok := obj.(*CachedSlice)
	if err != nil || !ok {
		t.Fatalf("SlimForCache(EndpointSlice) = %T, %v; want a *CachedSlice", obj, err)
	}
	if c.EndpointSlice != es || !equality.Semantic.DeepEqual(es, keep) || c.Service != "web" || !c.Trigger.Equal(trigger) {
		t.Errorf("EndpointSlice: service %q, trigger %v, slice:\n%+v\nwant web, %v and:\n%+v", c.Service, c.Trigger, es, trigger, keep)
	}
	if again, err := SlimForCache(c); err != nil || again != obj { // idempotent
		t.Errorf("SlimForCache(CachedSlice) = %v, %v; want it unchanged", again, err)
	}
	bare := slice(ns, "web-2", "web", withEndpoints(ep("10.244.1.3")))
	bare.Labels = nil
	bare.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: "yesterday"}
	obj, err = SlimForCache(bare)
	if c := obj.(*CachedSlice); err != nil || c.Service != "" || !c.Trigger.IsZero() || bare.Labels != nil || bare.Annotations != nil {
		t.Errorf("an EndpointSlice with no labels and a malformed trigger time (%v): %q, %v; labels %v, annotations %v", err, c.Service, c.Trigger, bare.Labels, bare.Annotations)
	}

	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: testNode, ManagedFields: managed, Labels: map[string]string{"zone": "a"},
			Annotations: map[string]string{"flannel.alpha.coreos.com/backend-data": "{}"}},
		Spec: v1.NodeSpec{PodCIDR: "10.244.1.0/24", Taints: []v1.Taint{{Key: "ToBeDeletedByClusterAutoscaler"}}},
		Status: v1.NodeStatus{
			Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.60.11"}},
			Images:    []v1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}},
		},
	}
	slim := node.DeepCopy()
	slim.ManagedFields, slim.Annotations, slim.Status.Images = nil, nil, nil
	if _, err := SlimForCache(node); err != nil || !equality.Semantic.DeepEqual(node, slim) {
		t.Errorf("Node (%v):\n%+v\nwant:\n%+v", err, node, slim)
	}
}
