//go:build vmguest

package guest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// Where the e2e driver (test/vm/e2e) and the demo put the guest's
// credentials for the host's kube-apiserver, which the guest reaches through
// the guestfwd at 10.0.2.100. Both kubeconfigs trust the apiserver's CA.
const (
	// AdminKubeconfig authenticates as a member of system:masters: the test
	// plays kubelet, the EndpointSlice controller and kubectl with it.
	AdminKubeconfig = vmrun.GuestAdminKubeconfig
	// AgentKubeconfig holds a token of the kube-system/kube-ipvs
	// ServiceAccount, with the RBAC from deploy/: what the agent runs with.
	AgentKubeconfig = vmrun.GuestAgentKubeconfig
)

// Namespace holds the objects the API tests create.
const Namespace = "default"

// NodeIP is the node's address on the VM's NIC, as the Node object lists it.
const NodeIP = "10.0.2.15"

// BackendPort is where the pods' backends listen, the Services' targetPort.
const BackendPort = 8080

// API is the host's kube-apiserver, seen from the guest as an admin.
type API struct {
	Client kubernetes.Interface
	Server string
	down   bool // the test asked the host to stop it
}

// NeedAPI connects to the apiserver the host driver provided and waits
// until it is ready. It fails the test (never skips it) when the guest was
// given none: such a test runs only under the e2e driver or the demo.
func NeedAPI(t testing.TB) *API {
	t.Helper()
	for _, p := range []string{AdminKubeconfig, AgentKubeconfig} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("this test needs the host's kube-apiserver, and the guest has none (%v): "+
				"run it with `go test -tags vmtest ./test/vm/e2e` (make test-e2e), not the plain VM suite", err)
		}
	}
	rc, err := clientcmd.BuildConfigFromFlags("", AdminKubeconfig)
	if err != nil {
		t.Fatalf("reading %s: %v", AdminKubeconfig, err)
	}
	rc.UserAgent = "kube-ipvs-guest-test"
	rc.QPS, rc.Burst = 50, 100
	rc.Timeout = 30 * time.Second
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	a := &API{Client: c, Server: rc.Host}
	if err := a.waitReady(true, time.Minute); err != nil {
		t.Fatalf("kube-apiserver at %s: %v", a.Server, err)
	}
	return a
}

func apiCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// ready reports whether GET /readyz answers 200 within a few seconds.
func (a *API) ready() error {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := a.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(c)
	return err
}

// waitReady polls /readyz until it answers (up) or fails (!up).
func (a *API) waitReady(up bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := a.ready()
		if (err == nil) == up {
			return nil
		}
		if time.Now().After(deadline) {
			if up {
				return fmt.Errorf("not ready after %v: %v", timeout, err)
			}
			return fmt.Errorf("still answering after %v", timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// AskHost prints "KIPVS-HOST: CMD" on the console (ttyS0), the one channel
// from the guest to the host driver, which runs the command (see
// vmrun.Config.HostCommand). It does not wait for it.
func AskHost(t testing.TB, cmd string) {
	t.Helper()
	f, err := os.OpenFile("/dev/ttyS0", os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the console: %v", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "\n%s %s\n", vmrun.HostCommandPrefix, cmd); err != nil {
		t.Fatalf("writing to the console: %v", err)
	}
}

// StopAPIServer asks the host to stop kube-apiserver (etcd and every object
// stay) and waits until it no longer answers. If the test ends before
// StartAPIServer, cleanup starts it again.
func (a *API) StopAPIServer(t testing.TB) {
	t.Helper()
	AskHost(t, "stop-apiserver")
	a.down = true
	t.Cleanup(func() {
		if a.down {
			AskHost(t, "start-apiserver")
			if err := a.waitReady(true, 3*time.Minute); err != nil {
				t.Errorf("restarting kube-apiserver at cleanup: %v", err)
			}
		}
	})
	if err := a.waitReady(false, 90*time.Second); err != nil {
		t.Fatalf("asked the host to stop kube-apiserver: %v", err)
	}
}

// StartAPIServer asks the host to start kube-apiserver again and waits
// until it is ready.
func (a *API) StartAPIServer(t testing.TB) {
	t.Helper()
	AskHost(t, "start-apiserver")
	if err := a.waitReady(true, 3*time.Minute); err != nil {
		t.Fatalf("asked the host to start kube-apiserver: %v", err)
	}
	a.down = false
}

// APIPod is a pod as both the kernel and the API see it: a network
// namespace with a backend answering as its name (AddPod, StartBackend), and
// a Pod object bound to NodeName whose status says Running and Ready with
// the pod's IP, as kubelet reports it.
type APIPod struct {
	*Pod
	Object  *v1.Pod
	backend *Proc
}

// PodIP is the address of pod number n: 10.244.1.(n+1).
func PodIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 1, byte(n + 1)}) }

// StartPod starts pod "podN" at PodIP(n) with a backend on BackendPort,
// labelled app=APP, and creates its Pod object through the API; the object
// is deleted at cleanup.
func (a *API) StartPod(t testing.TB, app string, n int) *APIPod {
	t.Helper()
	name := fmt.Sprintf("pod%d", n)
	p := &APIPod{Pod: AddPod(t, name, PodIP(n))}
	p.backend = StartBackend(t, name, name, BackendPort)
	pods := a.Client.CoreV1().Pods(Namespace)
	obj, err := pods.Create(apiCtx(t), &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: map[string]string{"app": app}},
		Spec: v1.PodSpec{
			NodeName:                     NodeName,
			AutomountServiceAccountToken: ptr(false),
			Containers: []v1.Container{{
				Name: "backend", Image: "kube-ipvs.test/backend:latest",
				Ports: []v1.ContainerPort{{Name: "http", ContainerPort: BackendPort, Protocol: v1.ProtocolTCP}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Pod %s: %v", name, err)
	}
	t.Cleanup(func() { a.deletePod(t, name, 0) })
	now := metav1.Now()
	cond := func(c v1.PodConditionType) v1.PodCondition {
		return v1.PodCondition{Type: c, Status: v1.ConditionTrue, LastTransitionTime: now}
	}
	obj.Status = v1.PodStatus{
		Phase:  v1.PodRunning,
		HostIP: NodeIP, HostIPs: []v1.HostIP{{IP: NodeIP}},
		PodIP: p.IP().String(), PodIPs: []v1.PodIP{{IP: p.IP().String()}},
		StartTime:  &now,
		Conditions: []v1.PodCondition{cond(v1.PodScheduled), cond(v1.PodInitialized), cond(v1.ContainersReady), cond(v1.PodReady)},
	}
	if p.Object, err = pods.UpdateStatus(apiCtx(t), obj, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("setting the status of Pod %s: %v", name, err)
	}
	return p
}

// TerminatePod deletes the Pod with a grace period, like `kubectl delete
// pod`: the apiserver marks it terminating and, with no kubelet to finish
// the job, it stays so (and its backend keeps serving) until RemovePod.
func (a *API) TerminatePod(t testing.TB, p *APIPod) {
	t.Helper()
	a.deletePod(t, p.Name, 30)
	obj, err := a.Client.CoreV1().Pods(Namespace).Get(apiCtx(t), p.Name, metav1.GetOptions{})
	if err != nil || obj.DeletionTimestamp == nil {
		t.Fatalf("Pod %s after a graceful delete: %v, %v", p.Name, obj, err)
	}
	p.Object = obj
}

// RemovePod is what kubelet does once the pod's containers have stopped: the
// backend stops and the Pod object goes (grace period 0).
func (a *API) RemovePod(t testing.TB, p *APIPod) {
	t.Helper()
	p.backend.Stop()
	a.deletePod(t, p.Name, 0)
}

func (a *API) deletePod(t testing.TB, name string, grace int64) {
	err := a.Client.CoreV1().Pods(Namespace).Delete(apiCtx(t), name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting Pod %s: %v", name, err)
	}
}

// CreateService creates a ClusterIP Service selecting app=NAME, with the
// ports given and no ClusterIP: the apiserver allocates one from the Service
// CIDR, and the returned object holds it. It is deleted at cleanup.
func (a *API) CreateService(t testing.TB, name string, ports ...Port) *v1.Service {
	t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, Selector: map[string]string{"app": name}},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, v1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: intstr.FromInt32(p.Target),
		})
	}
	svcs := a.Client.CoreV1().Services(Namespace)
	created, err := svcs.Create(apiCtx(t), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := svcs.Delete(apiCtx(t), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting Service %s: %v", name, err)
		}
	})
	if _, err := netip.ParseAddr(created.Spec.ClusterIP); err != nil {
		t.Fatalf("Service %s got no usable ClusterIP: %q", name, created.Spec.ClusterIP)
	}
	return created
}

// DeleteService deletes the Service, like `kubectl delete service NAME`.
func (a *API) DeleteService(t testing.TB, svc *v1.Service) {
	t.Helper()
	if err := a.Client.CoreV1().Services(Namespace).Delete(apiCtx(t), svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting Service %s: %v", svc.Name, err)
	}
}

// ClusterIP is the address the apiserver allocated to svc.
func ClusterIP(svc *v1.Service) netip.Addr { return netip.MustParseAddr(svc.Spec.ClusterIP) }

// SliceController keeps one Service's EndpointSlice as the EndpointSlice
// controller of kube-controller-manager would (none runs here): Sync lists
// the Service's pods through the API and writes one slice.
type SliceController struct {
	api   *API
	svc   *v1.Service
	slice *discovery.EndpointSlice // as last written; nil before the first Sync
}

// Slices returns the controller for svc; it deletes the slice at cleanup
// (the garbage collector's job, which does not run here either).
func (a *API) Slices(t testing.TB, svc *v1.Service) *SliceController {
	c := &SliceController{api: a, svc: svc}
	t.Cleanup(func() {
		if c.slice != nil {
			err := a.Client.DiscoveryV1().EndpointSlices(Namespace).Delete(apiCtx(t), c.slice.Name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting EndpointSlice %s: %v", c.slice.Name, err)
			}
		}
	})
	return c
}

// Sync writes the slice from the Service's pods: every pod the selector
// matches that has an IP and has not ended is an endpoint, serving when its
// Ready condition is true, terminating once it is being deleted, and ready
// when serving and not terminating (as podToEndpoint in
// k8s.io/endpointslice). It returns the slice as stored.
func (c *SliceController) Sync(t testing.TB) *discovery.EndpointSlice {
	t.Helper()
	pods, err := c.api.Client.CoreV1().Pods(Namespace).List(apiCtx(t), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(c.svc.Spec.Selector).String(),
	})
	if err != nil {
		t.Fatalf("listing the pods of Service %s: %v", c.svc.Name, err)
	}
	want := ControllerSlice(c.svc, pods.Items)
	slices := c.api.Client.DiscoveryV1().EndpointSlices(Namespace)
	if c.slice == nil {
		c.slice, err = slices.Create(apiCtx(t), want, metav1.CreateOptions{})
	} else {
		next := c.slice.DeepCopy()
		next.Endpoints, next.Ports, next.Annotations = want.Endpoints, want.Ports, want.Annotations
		c.slice, err = slices.Update(apiCtx(t), next, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("writing the EndpointSlice of Service %s: %v", c.svc.Name, err)
	}
	return c.slice
}

// Delete deletes the slice, as the garbage collector does once its Service is gone.
func (c *SliceController) Delete(t testing.TB) {
	t.Helper()
	if c.slice == nil {
		return
	}
	if err := c.api.Client.DiscoveryV1().EndpointSlices(Namespace).Delete(apiCtx(t), c.slice.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting EndpointSlice %s: %v", c.slice.Name, err)
	}
	c.slice = nil
}

// ControllerSlice is the EndpointSlice the EndpointSlice controller writes for
// svc and its pods: named after the Service by the apiserver (generateName),
// labelled kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by,
// annotated endpoints.kubernetes.io/last-change-trigger-time, owned by the
// Service, with one endpoint per pod (address, conditions, nodeName, targetRef)
// and the Service's target ports.
func ControllerSlice(svc *v1.Service, pods []v1.Pod) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: svc.Name + "-",
			Namespace:    svc.Namespace,
			Labels: map[string]string{
				discovery.LabelServiceName: svc.Name,
				discovery.LabelManagedBy:   "endpointslice-controller.k8s.io",
			},
			Annotations:     map[string]string{v1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, v1.SchemeGroupVersion.WithKind("Service"))},
		},
		AddressType: discovery.AddressTypeIPv4,
		Endpoints:   []discovery.Endpoint{},
		Ports:       []discovery.EndpointPort{},
	}
	for k, v := range svc.Labels {
		s.Labels[k] = v
	}
	for _, p := range svc.Spec.Ports {
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(p.TargetPort.IntVal)})
	}
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b v1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for _, pod := range sorted {
		if pod.Status.PodIP == "" || pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			continue
		}
		serving := podReady(pod)
		terminating := pod.DeletionTimestamp != nil
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses:  []string{pod.Status.PodIP},
			Conditions: discovery.EndpointConditions{Ready: ptr(serving && !terminating), Serving: ptr(serving), Terminating: ptr(terminating)},
			NodeName:   ptr(pod.Spec.NodeName),
			TargetRef:  &v1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		})
	}
	return s
}

func podReady(p v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// StartAPIAgent runs the real kube-ipvs binary on the node against the
// apiserver, with the kube-ipvs ServiceAccount's kubeconfig, and waits until
// its caches have synced (see StartAgent).
func StartAPIAgent(t testing.TB, extra ...string) *Proc {
	t.Helper()
	return startAgent(t, []string{"--kubeconfig", AgentKubeconfig}, extra)
}
