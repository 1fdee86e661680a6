package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/kubeapi"
	"github.com/kube-ipvs/kube-ipvs/test/deploy"
)

// serviceAccountFiles writes what kubelet mounts at serviceAccountDir: a
// token and the cluster's CA.
func serviceAccountFiles(t *testing.T, withCA bool) string {
	t.Helper()
	dir := t.TempDir()
	write(t, dir, "token", "sa-token")
	if withCA {
		ca, _, err := certutil.GenerateSelfSignedCertKey("kube-ipvs-test-ca", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, "ca.crt", string(ca))
	}
	return dir
}

// kubeadmKubeconfig is key kubeconfig.conf of kubeadm's ConfigMap
// kube-system/kube-proxy, with the ServiceAccount paths moved to saDir.
func kubeadmKubeconfig(t *testing.T, saDir, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig.conf")
	text := deploy.KubeadmKubeconfig(server, saDir)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func noEnv(string) string { return "" }

func podEnv(k string) string {
	return map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}[k]
}

// summary is what a rest.Config says about where it goes and who it is.
func summary(rc *rest.Config) string {
	return strings.Join([]string{
		"host=" + rc.Host,
		"token=" + rc.BearerToken,
		"tokenFile=" + filepath.Base(rc.BearerTokenFile),
		"ca=" + filepath.Base(rc.TLSClientConfig.CAFile),
	}, " ")
}

func TestRestConfig(t *testing.T) {
	sa := serviceAccountFiles(t, true)
	kubeadm := kubeadmKubeconfig(t, sa, "https://cp.example:6443")
	tests := []struct {
		name       string
		kubeconfig string
		apiServer  string
		saDir      string
		getenv     func(string) string
		want       string // summary; "" when an error is expected
		wantErr    []string
		wantWarn   string
	}{
		{name: "kubeadm's kube-proxy kubeconfig", kubeconfig: kubeadm, saDir: "/nonexistent", getenv: podEnv,
			want: "host=https://cp.example:6443 token=sa-token tokenFile=token ca=ca.crt"},
		{name: "apiServer replaces the kubeconfig's server", kubeconfig: kubeadm, apiServer: "https://192.0.2.10:6443",
			saDir: "/nonexistent", getenv: podEnv,
			want: "host=https://192.0.2.10:6443 token=sa-token tokenFile=token ca=ca.crt"},
		{name: "apiServer with the pod's ServiceAccount", apiServer: "https://192.0.2.10:6443", saDir: sa, getenv: podEnv,
			want: "host=https://192.0.2.10:6443 token=sa-token tokenFile=token ca=ca.crt"},
		{name: "apiServer outside a pod too", apiServer: "https://192.0.2.10:6443", saDir: sa, getenv: noEnv,
			want: "host=https://192.0.2.10:6443 token=sa-token tokenFile=token ca=ca.crt"},
		{name: "neither: the kubernetes Service's ClusterIP, with a warning", saDir: sa, getenv: podEnv,
			want:     "host=https://10.96.0.1:443 token=sa-token tokenFile=token ca=ca.crt",
			wantWarn: "kubeconfig and apiServer are empty: dialling the apiserver at the kubernetes Service's ClusterIP"},
		{name: "unreadable CA: the system's roots, with a warning", apiServer: "https://192.0.2.10:6443",
			saDir: serviceAccountFiles(t, false), getenv: noEnv,
			want: "host=https://192.0.2.10:6443 token=sa-token tokenFile=token ca=.", wantWarn: "no usable ServiceAccount CA"},

		{name: "missing kubeconfig names the path and apiServer", kubeconfig: "/var/lib/kube-proxy/kubeconfig.conf",
			apiServer: "https://192.0.2.10:6443", saDir: sa, getenv: podEnv,
			wantErr: []string{`kubeconfig "/var/lib/kube-proxy/kubeconfig.conf" does not exist`, "not made by kubeadm", "set apiServer"}},
		{name: "kubeconfig that does not parse", kubeconfig: filepath.Join(sa, "token"), saDir: sa, getenv: podEnv,
			wantErr: []string{`kubeconfig "` + filepath.Join(sa, "token") + `": `}},
		{name: "apiServer without a token", apiServer: "https://192.0.2.10:6443", saDir: t.TempDir(), getenv: podEnv,
			wantErr: []string{"reading the ServiceAccount token: open ", "/token: no such file or directory"}},
		{name: "neither, outside a pod", saDir: sa, getenv: noEnv,
			wantErr: []string{"not in a pod", "set apiServer (--api-server) or kubeconfig (--kubeconfig)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			cfg := config.Default()
			cfg.Kubeconfig, cfg.APIServer = tt.kubeconfig, tt.apiServer
			rc, err := restConfig(zap.New(core), cfg, tt.saDir, tt.getenv)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("restConfig() = %s, want an error", summary(rc))
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("restConfig(): %v", err)
			}
			if got := summary(rc); got != tt.want {
				t.Errorf("restConfig() = %s\nwant          %s", got, tt.want)
			}
			var warned []string
			for _, e := range logs.All() {
				warned = append(warned, e.Message)
			}
			switch {
			case tt.wantWarn == "" && len(warned) > 0:
				t.Errorf("warnings %q, want none", warned)
			case tt.wantWarn != "" && (len(warned) != 1 || !strings.HasPrefix(warned[0], tt.wantWarn)):
				t.Errorf("warnings %q, want one starting %q", warned, tt.wantWarn)
			}
		})
	}
}

// The kubeconfig's tokenFile and the ServiceAccount's token are re-read
// as kubelet rotates them: the config names the file, and the client
// built from it sends what the file holds now.
func TestRestConfigTokenFromFile(t *testing.T) {
	sa := serviceAccountFiles(t, true)
	for name, cfg := range map[string]*config.Configuration{
		"kubeconfig": {Kubeconfig: kubeadmKubeconfig(t, sa, "https://cp.example:6443")},
		"apiServer":  {APIServer: "https://cp.example:6443"},
	} {
		t.Run(name, func(t *testing.T) {
			rc, err := restConfig(zap.NewNop(), cfg, sa, noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if rc.BearerTokenFile != filepath.Join(sa, "token") {
				t.Errorf("BearerTokenFile = %q, want %s", rc.BearerTokenFile, filepath.Join(sa, "token"))
			}
			if _, err := rest.HTTPClientFor(rc); err != nil {
				t.Errorf("no HTTP client from this config: %v", err)
			}
		})
	}
}

// kube-ipvs asks the apiserver for protobuf, uncompressed, as kube-ipvs:
// shown on the requests a real client-go transport sends.
func TestClientAsksForUncompressedProtobuf(t *testing.T) {
	var got http.Header
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[]}`)
	}))
	defer srv.Close()
	// TLS, as every apiserver: client-go gives a plain-HTTP client Go's
	// default transport, which asks for gzip whatever the config says.
	rc := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	tune(rc)
	c, err := kubeapi.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(labels.Everything()).List(metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if enc := got.Get("Accept-Encoding"); strings.Contains(enc, "gzip") {
		t.Errorf("Accept-Encoding %q: want no gzip", enc)
	}
	if ua := got.Get("User-Agent"); ua != "kube-ipvs" {
		t.Errorf("User-Agent %q", ua)
	}
	if accept := got.Get("Accept"); !strings.HasPrefix(accept, "application/vnd.kubernetes.protobuf,") {
		t.Errorf("Accept %q: want protobuf first", accept)
	}
}
