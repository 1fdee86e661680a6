package controlplane

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// These tests need no binaries and run with a plain `go test ./...`.

func TestStartContextMissingBinariesNamesBuildScript(t *testing.T) {
	dir := t.TempDir()
	_, err := StartContext(context.Background(), Options{BinDir: dir})
	if err == nil {
		t.Fatal("StartContext with an empty BinDir succeeded, want an error")
	}
	for _, want := range []string{BuildScript, filepath.Join(dir, "etcd"), filepath.Join(dir, "kube-apiserver")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestStartContextNonExecutableBinary(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("not a program"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := StartContext(context.Background(), Options{BinDir: dir})
	if err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("got %v, want a not-executable error", err)
	}
}

func TestServingCertificateCoversSANs(t *testing.T) {
	cp := &ControlPlane{opts: withDefaults(Options{ExtraSANs: []string{"10.0.2.100", "apiserver.test", "fd00::7"}}), dir: t.TempDir()}
	if err := cp.writeFiles(); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cp.pki.caCert) {
		t.Fatal("CA bundle does not parse")
	}
	block, _ := pem.Decode(cp.pki.servingCert)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{
		"127.0.0.1", "::1", "localhost", "kubernetes.default.svc", "10.96.0.1", "192.0.2.1",
		"10.0.2.100", "apiserver.test", "fd00::7",
	} {
		opts := x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if _, err := cert.Verify(opts); err != nil {
			t.Errorf("serving certificate does not verify for %q: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "10.0.2.101", Roots: roots}); err == nil {
		t.Error("serving certificate verifies for 10.0.2.101, which was never asked for")
	}
}

func TestKubeconfigForRoundTrip(t *testing.T) {
	cp := &ControlPlane{opts: withDefaults(Options{}), url: "https://127.0.0.1:6443", dir: t.TempDir()}
	if err := cp.writeFiles(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, server, wantHost string
	}{
		{name: "default server", server: "", wantHost: "https://127.0.0.1:6443"},
		{name: "guestfwd server", server: "https://10.0.2.100:6443", wantHost: "https://10.0.2.100:6443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc, err := cp.KubeconfigFor("s3cret", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
			if err != nil {
				t.Fatalf("kubeconfig does not load: %v\n%s", err, kc)
			}
			if cfg.Host != tc.wantHost || cfg.BearerToken != "s3cret" || string(cfg.CAData) != string(cp.pki.caCert) {
				t.Errorf("got host %q token %q CA match %v; want %q, %q, true",
					cfg.Host, cfg.BearerToken, string(cfg.CAData) == string(cp.pki.caCert), tc.wantHost, "s3cret")
			}
		})
	}
}

// fatalTB records Fatalf and Skip calls instead of ending the test.
type fatalTB struct {
	testing.TB
	fatal, skipped string
}

type stopHere struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic(stopHere{})
}

func (f *fatalTB) Skipf(format string, args ...any) {
	f.skipped = fmt.Sprintf(format, args...)
	panic(stopHere{})
}

func (f *fatalTB) Skip(args ...any) { f.Skipf("%s", fmt.Sprint(args...)) }

func (f *fatalTB) SkipNow() { f.Skipf("SkipNow") }

func TestStartFailsLoudlyWithoutBinaries(t *testing.T) {
	tb := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != (stopHere{}) {
				panic(r)
			}
		}()
		Start(tb, Options{BinDir: t.TempDir()})
	}()
	if tb.skipped != "" {
		t.Fatalf("Start skipped (%q); it must fail", tb.skipped)
	}
	if !strings.Contains(tb.fatal, BuildScript) {
		t.Fatalf("Start's failure %q does not name %s", tb.fatal, BuildScript)
	}
}
