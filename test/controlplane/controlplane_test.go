//go:build apiserver

package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Tier 3: needs the binaries from test/tools/build.sh.
//
//	go test -tags apiserver ./test/controlplane/

const ns = "tier3"

func TestControlPlane(t *testing.T) {
	cp := Start(t, Options{ExtraSANs: []string{"10.0.2.100", "apiserver.test"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := cp.Client()

	t.Run("admin creates and lists objects", func(t *testing.T) {
		createObjects(ctx, t, admin)
		listObjects(ctx, t, admin)
	})

	t.Run("serving certificate covers the extra SANs", func(t *testing.T) {
		for _, name := range []string{"127.0.0.1", "10.0.2.100", "apiserver.test"} {
			checkServingName(t, cp, name)
		}
	})

	t.Run("unprivileged service account is forbidden", func(t *testing.T) {
		checkUnprivilegedSA(ctx, t, cp)
	})

	t.Run("apiserver restarts on the same port with the same data", func(t *testing.T) {
		if err := cp.StopAPIServer(); err != nil {
			t.Fatalf("StopAPIServer: %v", err)
		}
		if err := cp.StopAPIServer(); err != nil {
			t.Fatalf("second StopAPIServer: %v", err)
		}
		short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
		_, err := admin.CoreV1().Services(ns).List(short, metav1.ListOptions{})
		cancelShort()
		if err == nil {
			t.Fatal("listing Services succeeded while the apiserver was stopped")
		}
		if err := cp.StartAPIServer(ctx); err != nil {
			t.Fatalf("StartAPIServer: %v", err)
		}
		listObjects(ctx, t, admin) // same client, same port, objects kept in etcd
	})

	t.Run("stop is idempotent and leaves nothing behind", func(t *testing.T) {
		dir := cp.dir
		for i := range 2 {
			if err := cp.Stop(); err != nil {
				t.Fatalf("Stop #%d: %v", i+1, err)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("temporary directory %s still there after Stop (stat: %v)", dir, err)
		}
		short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
		defer cancelShort()
		if _, err := admin.CoreV1().Namespaces().List(short, metav1.ListOptions{}); err == nil {
			t.Error("apiserver still answers after Stop")
		}
		if err := cp.StartAPIServer(ctx); err == nil {
			t.Error("StartAPIServer after Stop succeeded, want an error")
		}
	})
}

// A kube-apiserver that cannot start is reported with its own words, and
// the etcd already started for it is stopped.
func TestStartContextReportsAPIServerFailure(t *testing.T) {
	_, err := StartContext(context.Background(), Options{ExtraAPIServerArgs: []string{"--no-such-flag"}})
	if err == nil {
		t.Fatal("StartContext with a bad kube-apiserver flag succeeded")
	}
	t.Logf("reported as: %v", err)
	for _, want := range []string{"kube-apiserver exited", "no-such-flag", "kube-apiserver.log"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func createObjects(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080),
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service: %v", err)
	}
	ready := true
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr[int32](8080)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating endpointslice: %v", err)
	}
}

func listObjects(ctx context.Context, t *testing.T, c kubernetes.Interface) {
	t.Helper()
	svcs, err := c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing services: %v", err)
	}
	if len(svcs.Items) != 1 || svcs.Items[0].Name != "web" {
		t.Fatalf("services in %s: %v, want just web", ns, names(svcs.Items, func(s corev1.Service) string { return s.Name }))
	}
	ip, err := netip.ParseAddr(svcs.Items[0].Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix(DefaultServiceCIDR).Contains(ip) {
		t.Errorf("web ClusterIP %q is not in %s", svcs.Items[0].Spec.ClusterIP, DefaultServiceCIDR)
	}
	slices, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=web",
	})
	if err != nil {
		t.Fatalf("listing endpointslices: %v", err)
	}
	if len(slices.Items) != 1 || len(slices.Items[0].Endpoints) != 1 ||
		slices.Items[0].Endpoints[0].Addresses[0] != "10.244.1.5" {
		t.Fatalf("endpointslices for web: %+v, want web-1 with 10.244.1.5", slices.Items)
	}
}

// checkServingName dials the apiserver on loopback but verifies the
// certificate for name, as a client reaching it under that name would.
func checkServingName(t *testing.T, cp *ControlPlane, name string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.CABundle())
	conn, err := tls.Dial("tcp", strings.TrimPrefix(cp.URL(), "https://"), &tls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		t.Errorf("TLS to %s as %q: %v", cp.URL(), name, err)
		return
	}
	conn.Close()
}

func checkUnprivilegedSA(ctx context.Context, t *testing.T, cp *ControlPlane) {
	t.Helper()
	if _, err := cp.Client().CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "nobody"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service account: %v", err)
	}
	token, err := cp.ServiceAccountToken(ctx, ns, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := cp.KubeconfigFor(token, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Authenticated (not 401) as the service account...
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review with the SA token: %v", err)
	}
	if got, want := review.Status.UserInfo.Username, "system:serviceaccount:"+ns+":nobody"; got != want {
		t.Errorf("SA token authenticates as %q, want %q", got, want)
	}
	// ...but not authorized (403) to list Services.
	_, err = sa.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing services with an unprivileged SA token: got %v, want 403 Forbidden", err)
	}
}

func ptr[T any](v T) *T { return &v }

func names[T any](items []T, name func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, name(it))
	}
	return out
}
