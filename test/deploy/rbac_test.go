//go:build apiserver

package deploy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-ipvs/kube-ipvs/kubeapi"
	"github.com/kube-ipvs/kube-ipvs/proxier"
	"github.com/kube-ipvs/kube-ipvs/test/controlplane"
)

// Tier 3: applies deploy/ to a real kube-apiserver and uses the kube-ipvs
// ServiceAccount's token. Needs the binaries from test/tools/build.sh.
//
//	go test -tags apiserver -v ./test/deploy/

const (
	testNS   = "tier3"
	nodeName = "node-a"
)

func TestDeployOnRealAPIServer(t *testing.T) {
	// The setup init container is privileged: like kubeadm's apiserver (and
	// kube-proxy, whose DaemonSet is privileged), allow it.
	cp := controlplane.Start(t, controlplane.Options{ExtraAPIServerArgs: []string{"--allow-privileged=true"}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin := cp.Client()
	waitForNamespace(ctx, t, admin, namespace)

	objs := readManifests(t)
	applyManifests(ctx, t, cp, objs)
	checkStored(ctx, t, admin)
	seed(ctx, t, admin)

	token, err := cp.ServiceAccountToken(ctx, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cp.ConfigFor(token))
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own client (kubeapi), with the same token.
	agent, err := kubeapi.New(cp.ConfigFor(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("token authenticates as the kube-ipvs service account", func(t *testing.T) {
		r, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r.Status.UserInfo.Username, "system:serviceaccount:kube-system:kube-ipvs"; got != want {
			t.Errorf("username %q, want %q", got, want)
		}
	})
	t.Run("access reviews", func(t *testing.T) { checkAccessReviews(ctx, t, sa) })
	t.Run("allowed: list and watch Services across namespaces", func(t *testing.T) { checkServices(ctx, t, admin, sa) })
	t.Run("allowed: list and watch EndpointSlices across namespaces", func(t *testing.T) { checkSlices(ctx, t, admin, sa) })
	t.Run("allowed: get, list and watch its Node", func(t *testing.T) { checkNodes(ctx, t, admin, sa) })
	t.Run("allowed: create Events (patching them is refused)", func(t *testing.T) { checkEvents(ctx, t, sa) })
	t.Run("refused: real requests get 403", func(t *testing.T) { checkRefusals(ctx, t, admin, sa) })
	t.Run("the agent's informers sync with this RBAC and program the fake kernel", func(t *testing.T) {
		checkAgentSyncs(ctx, t, admin, agent, objs)
	})
	t.Run("the agent's Events and metrics with this RBAC", func(t *testing.T) { checkEventsAndMetrics(ctx, t, admin, agent) })
}

// waitForNamespace waits for the apiserver's bootstrap to create ns.
func waitForNamespace(ctx context.Context, t *testing.T, c kubernetes.Interface, ns string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s never appeared: %v", ns, err)
	}
}

// warnings collects the apiserver's Warning headers.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// applyManifests creates every object of deploy/ as the admin, with strict
// server-side field validation; a warning (deprecated API or field) fails
// the test too.
func applyManifests(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, objs []Object) {
	t.Helper()
	cfg := cp.AdminConfig()
	w := &warnings{}
	cfg.WarningHandler = w
	if err := Apply(ctx, cfg, objs); err != nil {
		t.Fatalf("applying deploy/: %v", err)
	}
	for _, o := range objs {
		t.Logf("created %s", o)
	}
	if len(w.list) > 0 {
		t.Errorf("the apiserver warned while applying deploy/:\n%s", strings.Join(w.list, "\n"))
	}
}

// checkStored reads the DaemonSet back (what the apiserver stored, after
// defaulting) and checks the PriorityClass it names exists.
func checkStored(ctx context.Context, t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	ds, err := admin.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the DaemonSet back: %v", err)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork || len(pod.InitContainers) != 1 || len(pod.Containers) != 1 ||
		ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("stored DaemonSet lost its shape: %+v", ds.Spec)
	}
	if _, err := admin.SchedulingV1().PriorityClasses().Get(ctx, pod.PriorityClassName, metav1.GetOptions{}); err != nil {
		t.Errorf("PriorityClass %q of the DaemonSet: %v", pod.PriorityClassName, err)
	}
}

// seed creates, as the admin, what the agent reads and what the refusals
// aim at: Services "web" (served) and "other" (another proxy's), their
// EndpointSlices, legacy Endpoints, the agent's Node, kubeadm's kube-proxy
// ConfigMap and a Secret.
func seed(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("seeding %s: %v", what, err)
		}
	}
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	must("namespace", err)
	_, err = c.CoreV1().Services(testNS).Create(ctx, service("web", nil), metav1.CreateOptions{})
	must("service web", err)
	_, err = c.CoreV1().Services(testNS).Create(ctx, service("other",
		map[string]string{proxier.LabelServiceProxyName: "someone-else"}), metav1.CreateOptions{})
	must("service other", err)
	_, err = c.DiscoveryV1().EndpointSlices(testNS).Create(ctx, slice("web-1", "web", "10.244.1.5", nil), metav1.CreateOptions{})
	must("endpointslice web-1", err)
	_, err = c.DiscoveryV1().EndpointSlices(testNS).Create(ctx, slice("other-1", "other", "10.244.2.5",
		map[string]string{proxier.LabelServiceProxyName: "someone-else"}), metav1.CreateOptions{})
	must("endpointslice other-1", err)
	_, err = c.CoreV1().Endpoints(testNS).Create(ctx, &corev1.Endpoints{ //nolint:staticcheck // the legacy API is what must be refused
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
	}, metav1.CreateOptions{})
	must("endpoints web", err)
	_, err = c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	must("node", err)
	_, err = c.CoreV1().ConfigMaps(namespace).Create(ctx, KubeadmKubeProxyConfigMap("https://192.0.2.10:6443"), metav1.CreateOptions{})
	must("configmap kube-proxy", err)
	_, err = c.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "secret"}, StringData: map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	must("secret", err)
}

func service(name string, labels map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
		}}},
	}
}

func slice(name, svc, addr string, labels map[string]string) *discoveryv1.EndpointSlice {
	l := map[string]string{discoveryv1.LabelServiceName: svc}
	for k, v := range labels {
		l[k] = v
	}
	ready := true
	port, proto, portName := int32(8080), corev1.ProtocolTCP, "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: l},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{addr},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
}

// agentSelector is the label selector the agent lists and watches with
// (serviceProxyName empty, as in the ConfigMap).
func agentSelector(t *testing.T) string {
	t.Helper()
	sel, err := proxier.Selector("")
	if err != nil {
		t.Fatal(err)
	}
	return sel.String()
}
