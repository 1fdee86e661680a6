//go:build apiserver

package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/kubeapi"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// access is one SelfSubjectAccessReview and the answer it must get.
type access struct {
	verb, group, resource, subresource, ns string
	allowed                                bool
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	ns := a.ns
	if ns == "" {
		ns = "*"
	}
	return fmt.Sprintf("%s %s in %s", a.verb, r, ns)
}

// accessTable is what `kubectl auth can-i --as=system:serviceaccount:kube-system:kube-ipvs` must answer.
var accessTable = []access{
	{"list", "", "services", "", "", true},
	{"watch", "", "services", "", "", true},
	{"list", "discovery.k8s.io", "endpointslices", "", "", true},
	{"watch", "discovery.k8s.io", "endpointslices", "", "", true},
	{"get", "", "nodes", "", "", true},
	{"list", "", "nodes", "", "", true},
	{"watch", "", "nodes", "", "", true},
	{"create", "", "events", "", "default", true},
	{"patch", "", "events", "", "default", false}, // Events are created once, never patched
	{"create", "events.k8s.io", "events", "", "default", true},
	{"patch", "events.k8s.io", "events", "", "default", false},

	{"get", "", "services", "", testNS, false}, // informers never get
	{"create", "", "services", "", testNS, false},
	{"update", "", "services", "", testNS, false},
	{"patch", "", "services", "", testNS, false},
	{"delete", "", "services", "", testNS, false},
	{"update", "", "services", "status", testNS, false},
	{"create", "discovery.k8s.io", "endpointslices", "", testNS, false},
	{"update", "discovery.k8s.io", "endpointslices", "", testNS, false},
	{"delete", "discovery.k8s.io", "endpointslices", "", testNS, false},
	{"list", "", "endpoints", "", "", false},
	{"create", "", "endpoints", "", testNS, false},
	{"delete", "", "endpoints", "", testNS, false},
	{"create", "", "nodes", "", "", false},
	{"update", "", "nodes", "", "", false},
	{"patch", "", "nodes", "", "", false},
	{"delete", "", "nodes", "", "", false},
	{"update", "", "nodes", "status", "", false},
	{"list", "", "secrets", "", "", false},
	{"get", "", "secrets", "", namespace, false},
	{"list", "", "pods", "", "", false},
	{"create", "", "pods", "", namespace, false},
	{"list", "", "configmaps", "", namespace, false},
	{"get", "", "configmaps", "", namespace, false}, // kubeadm's kube-proxy kubeconfig is a volume
	{"create", "", "serviceaccounts", "token", namespace, false},
	{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", false},
	{"update", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
	{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
	{"bind", "rbac.authorization.k8s.io", "clusterroles", "", "", false},
	{"impersonate", "", "users", "", "", false},
}

func checkAccessReviews(ctx context.Context, t *testing.T, sa kubernetes.Interface) {
	for _, a := range accessTable {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Namespace: a.ns,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review %s: %v", a, err)
		}
		if r.Status.Allowed != a.allowed {
			t.Errorf("can-i %s: %v, want %v (%s)", a, r.Status.Allowed, a.allowed, r.Status.Reason)
		}
	}
}

// checkServices lists and watches Services in all namespaces with the
// agent's selector: "web" is there, another proxy's "other" is not, and a
// Service created after the list arrives on the watch.
func checkServices(ctx context.Context, t *testing.T, admin, sa kubernetes.Interface) {
	sel := agentSelector(t)
	list, err := sa.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, s := range list.Items {
		got = append(got, s.Namespace+"/"+s.Name)
	}
	if !slices.Contains(got, testNS+"/web") || slices.Contains(got, testNS+"/other") {
		t.Errorf("selected Services %q: want tier3/web and not tier3/other", got)
	}
	w, err := sa.CoreV1().Services(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if _, err := admin.CoreV1().Services(testNS).Create(ctx, service("late", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectEvent(ctx, t, w, watch.Added, "late")
}

func checkSlices(ctx context.Context, t *testing.T, admin, sa kubernetes.Interface) {
	sel := agentSelector(t)
	list, err := sa.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, s := range list.Items {
		got = append(got, s.Namespace+"/"+s.Name)
	}
	if !slices.Contains(got, testNS+"/web-1") || slices.Contains(got, testNS+"/other-1") {
		t.Errorf("selected EndpointSlices %q: want tier3/web-1 and not tier3/other-1", got)
	}
	w, err := sa.DiscoveryV1().EndpointSlices(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if _, err := admin.DiscoveryV1().EndpointSlices(testNS).Create(ctx, slice("late-1", "late", "10.244.3.5", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectEvent(ctx, t, w, watch.Added, "late-1")
}

// checkNodes reads the Node as the agent does (fieldSelector
// metadata.name) and sees a change to it on the watch.
func checkNodes(ctx context.Context, t *testing.T, admin, sa kubernetes.Interface) {
	if _, err := sa.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{}); err != nil {
		t.Fatalf("get: %v", err)
	}
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", nodeName).String()}
	list, err := sa.CoreV1().Nodes().List(ctx, opts)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != nodeName {
		t.Fatalf("list %s: %d Nodes, want just %s", opts.FieldSelector, len(list.Items), nodeName)
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := sa.CoreV1().Nodes().Watch(ctx, opts)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	patch := []byte(`{"metadata":{"labels":{"topology.kubernetes.io/zone":"z1"}}}`)
	if _, err := admin.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	expectEvent(ctx, t, w, watch.Modified, nodeName)
}

// checkEvents records an Event about the Node in both APIs, and is refused
// a patch of it (a 403): kube-ipvs creates Events and never patches one.
// Events about a cluster-scoped object live in "default".
func checkEvents(ctx context.Context, t *testing.T, sa kubernetes.Interface) {
	now := time.Now()
	node := corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName}
	core := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "kube-ipvs-test.core", Namespace: metav1.NamespaceDefault},
		InvolvedObject: node, Reason: "Test", Message: "core/v1 event", Type: corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: name, Host: nodeName},
		FirstTimestamp: metav1.NewTime(now), LastTimestamp: metav1.NewTime(now), Count: 1,
	}
	if _, err := sa.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, core, metav1.CreateOptions{}); err != nil {
		t.Errorf("create core/v1 Event: %v", err)
	} else if _, err := sa.CoreV1().Events(metav1.NamespaceDefault).Patch(ctx, core.Name, types.MergePatchType,
		[]byte(`{"count":2}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("patch core/v1 Event: %v, want 403 (kube-ipvs never patches one)", err)
	}
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-ipvs-test.events", Namespace: metav1.NamespaceDefault},
		EventTime:  metav1.NewMicroTime(now), ReportingController: "kube-ipvs.io/kube-ipvs", ReportingInstance: name + "-" + nodeName,
		Action: "Sync", Reason: "Test", Note: "events.k8s.io/v1 event", Type: corev1.EventTypeNormal, Regarding: node,
	}
	if _, err := sa.EventsV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Errorf("create events.k8s.io/v1 Event: %v", err)
	} else if _, err := sa.EventsV1().Events(metav1.NamespaceDefault).Patch(ctx, ev.Name, types.MergePatchType,
		fmt.Appendf(nil, `{"series":{"count":2,"lastObservedTime":%q}}`, now.UTC().Format(metav1.RFC3339Micro)),
		metav1.PatchOptions{}); !apierrors.IsForbidden(err) { // what client-go's recorder does when an Event repeats
		t.Errorf("patch events.k8s.io/v1 Event: %v, want 403 (kube-ipvs folds no series)", err)
	}
}

// expectEvent waits for an event of type typ about the object called name.
func expectEvent(ctx context.Context, t *testing.T, w watch.Interface, typ watch.EventType, name string) {
	t.Helper()
	defer w.Stop()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before %s %s", typ, name)
			}
			if ev.Type == watch.Error {
				t.Fatalf("watch error: %v", apierrors.FromObject(ev.Object))
			}
			if m, err := metaName(ev.Object); err == nil && ev.Type == typ && m == name {
				return
			}
		case <-timeout:
			t.Fatalf("no %s event for %s within 30s", typ, name)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}

func metaName(obj any) (string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return "", fmt.Errorf("%T has no metadata", obj)
	}
	return m.GetName(), nil
}

// refusal is a real request the agent must never be able to make.
type refusal struct {
	name string
	do   func() error
}

// refusals aims each request at an existing object where there is one, so
// only authorization can stop it.
func refusals(ctx context.Context, t *testing.T, admin, sa kubernetes.Interface) []refusal {
	web, err := admin.CoreV1().Services(testNS).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	webSlice, err := admin.DiscoveryV1().EndpointSlices(testNS).Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node, err := admin.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labelled := func(m *metav1.ObjectMeta) { m.Labels = map[string]string{"hijacked": "true"} }
	labelled(&web.ObjectMeta)
	labelled(&webSlice.ObjectMeta)
	labelled(&node.ObjectMeta)
	patch := []byte(`{"metadata":{"labels":{"hijacked":"true"}}}`)
	create, update, del := metav1.CreateOptions{}, metav1.UpdateOptions{}, metav1.DeleteOptions{}
	svcs, eps, nodes := sa.CoreV1().Services(testNS), sa.DiscoveryV1().EndpointSlices(testNS), sa.CoreV1().Nodes()

	return []refusal{
		{"create Service", func() error { _, err := svcs.Create(ctx, service("evil", nil), create); return err }},
		{"update Service", func() error { _, err := svcs.Update(ctx, web, update); return err }},
		{"patch Service", func() error {
			_, err := svcs.Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		}},
		{"update Service status", func() error { _, err := svcs.UpdateStatus(ctx, web, update); return err }},
		{"delete Service", func() error { return svcs.Delete(ctx, "web", del) }},
		{"create EndpointSlice", func() error {
			_, err := eps.Create(ctx, slice("evil-1", "web", "10.244.9.9", nil), create)
			return err
		}},
		{"update EndpointSlice", func() error { _, err := eps.Update(ctx, webSlice, update); return err }},
		{"delete EndpointSlice", func() error { return eps.Delete(ctx, "web-1", del) }},
		{"create Endpoints", func() error {
			_, err := sa.CoreV1().Endpoints(testNS).Create(ctx, &corev1.Endpoints{ //nolint:staticcheck // legacy API on purpose
				ObjectMeta: metav1.ObjectMeta{Name: "evil"},
			}, create)
			return err
		}},
		{"delete Endpoints", func() error { return sa.CoreV1().Endpoints(testNS).Delete(ctx, "web", del) }},
		{"update Node", func() error { _, err := nodes.Update(ctx, node, update); return err }},
		{"patch Node", func() error {
			_, err := nodes.Patch(ctx, nodeName, types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		}},
		{"update Node status", func() error { _, err := nodes.UpdateStatus(ctx, node, update); return err }},
		{"delete Node", func() error { return nodes.Delete(ctx, nodeName, del) }},
		{"list Secrets in kube-system", func() error {
			_, err := sa.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Secrets in all namespaces", func() error {
			_, err := sa.CoreV1().Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Pods in all namespaces", func() error {
			_, err := sa.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list ConfigMaps in kube-system", func() error {
			_, err := sa.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get kubeadm's kube-proxy ConfigMap (the DaemonSet mounts it)", func() error {
			_, err := sa.CoreV1().ConfigMaps(namespace).Get(ctx, KubeProxyConfigMap, metav1.GetOptions{})
			return err
		}},
		{"bind itself cluster-admin", func() error {
			_, err := sa.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "kube-ipvs-escalation"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}},
			}, create)
			return err
		}},
	}
}

// checkRefusals makes each refusal and expects a real 403 Forbidden from
// the apiserver, then checks nothing changed.
func checkRefusals(ctx context.Context, t *testing.T, admin, sa kubernetes.Interface) {
	for _, tc := range refusals(ctx, t, admin, sa) {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !apierrors.IsForbidden(err) {
				t.Fatalf("got %v, want 403 Forbidden", err)
			}
			t.Logf("403: %s", firstLine(err.Error()))
		})
	}
	checkUntouched(ctx, t, admin)
}

// checkUntouched confirms, as the admin, that the refused writes left
// nothing behind.
func checkUntouched(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	web, err := admin.CoreV1().Services(testNS).Get(ctx, "web", metav1.GetOptions{})
	if err != nil || web.Labels["hijacked"] != "" {
		t.Errorf("Service web after the refusals: %v, labels %v", err, web.GetLabels())
	}
	node, err := admin.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil || node.Labels["hijacked"] != "" {
		t.Errorf("Node %s after the refusals: %v, labels %v", nodeName, err, node.GetLabels())
	}
	if _, err := admin.CoreV1().Services(testNS).Get(ctx, "evil", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Service evil: %v, want not found", err)
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// checkAgentSyncs runs the agent's own informers (proxier.NewWatcher) with
// the kube-ipvs token and the ConfigMap's configuration, on the fake
// kernel: they must sync, and one sync must program the served Service and
// leave the other proxy's alone.
func checkAgentSyncs(ctx context.Context, t *testing.T, admin kubernetes.Interface, sa *kubeapi.Client, objs []Object) {
	cm := only[*corev1.ConfigMap](t, objs)
	cfg, err := config.Load([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeName = nodeName // what $NODE_NAME gives the agent
	fakeIPVS := ipvs.NewFake()
	ipt, sets := iptables.NewFakeKernel()
	k := proxier.Kernel{IPVS: fakeIPVS, Addrs: netif.NewFakeAddrs(netif.DefaultLink), IPTables: ipt, Sets: sets}
	sysctls := map[string]string{}
	for _, s := range proxier.Sysctls {
		sysctls[s.Key] = s.Value
	}
	if err := proxier.Setup(zap.NewNop(), k, netif.NewFakeSysctl(sysctls), proxier.SetupOptions{}); err != nil {
		t.Fatal(err)
	}
	p := proxier.New(zap.NewNop(), k, proxier.Options{
		Build: proxier.BuildConfig{NodeName: cfg.NodeName, Scheduler: cfg.IPVS.Scheduler, Family: corev1.IPv4Protocol},
		Rules: proxier.RuleConfig{Family: corev1.IPv4Protocol, ClusterCIDRs: cfg.ClusterCIDRs(),
			MasqueradeAll: cfg.MasqueradeAll, MasqueradeBit: cfg.MasqueradeBit},
	})
	w, err := proxier.NewWatcher(sa, cfg.NodeName, cfg.ServiceProxyName, p, func() {})
	if err != nil {
		t.Fatal(err)
	}
	informerCtx, stop := context.WithCancel(ctx)
	defer stop()
	w.Start(informerCtx)
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !w.WaitForSync(syncCtx) {
		t.Fatal("Service and EndpointSlice informers did not sync within 30s with the kube-ipvs token")
	}
	if err := p.Sync(true); err != nil {
		t.Fatalf("sync: %v", err)
	}
	dump := fakeIPVS.Dump()
	t.Logf("IPVS after one sync:\n%s", dump)
	for svc, served := range map[string]bool{"web": true, "other": false} {
		s, err := admin.CoreV1().Services(testNS).Get(ctx, svc, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs := fmt.Sprintf("-A -t %s:80 -s %s", s.Spec.ClusterIP, cfg.IPVS.Scheduler)
		if got := strings.Contains(dump, vs); got != served {
			t.Errorf("Service %s (%s) programmed: %v, want %v", svc, s.Spec.ClusterIP, got, served)
		}
	}
	if !strings.Contains(dump, "-r 10.244.1.5:8080") {
		t.Errorf("web's endpoint 10.244.1.5:8080 is not a real server")
	}
}
