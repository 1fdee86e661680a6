// Package controlplane starts a real etcd and kube-apiserver on 127.0.0.1
// for the tier-3 tests, from binaries that test/tools/build.sh builds into
// ${KIPVS_CACHE:-/var/cache/kube-ipvs}/bin.
//
// Each ControlPlane has its own CA, serving certificate, service-account
// signing key, free ports and temporary directory. kube-apiserver runs with
// RBAC and the Node authorizer, advertises a TEST-NET address that nothing on
// the host owns, and reconciles no endpoints for the default "kubernetes"
// Service. No controller-manager or scheduler runs: tests create the
// objects they need (Services, EndpointSlices, ServiceAccounts, Nodes)
// themselves.
//
// Roughly what this does by hand:
//
//	etcd --data-dir D/etcd --listen-client-url http://127.0.0.1:E ...
//	kube-apiserver --etcd-servers http://127.0.0.1:E --bind-address 127.0.0.1 \
//	  --secure-port P --authorization-mode Node,RBAC --token-auth-file D/tokens.csv ...
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// DefaultAdvertiseAddress is the address kube-apiserver advertises
	// (RFC 5737 TEST-NET-1): it is never configured on the host.
	DefaultAdvertiseAddress = "192.0.2.1"
	// DefaultServiceCIDR is the Service ClusterIP range, like kubeadm's.
	DefaultServiceCIDR = "10.96.0.0/16"
	// DefaultStartTimeout bounds each wait for etcd or kube-apiserver.
	DefaultStartTimeout = 3 * time.Minute
	// AdminUser is the static-token user, member of system:masters.
	AdminUser = "kube-ipvs-admin"
	// BuildScript builds the binaries this package runs.
	BuildScript = "test/tools/build.sh"

	stopGrace = 20 * time.Second
)

// Options tune a control plane. The zero value is ready to use.
type Options struct {
	// BinDir holds the kube-apiserver and etcd binaries. Default:
	// $KIPVS_CACHE/bin, or /var/cache/kube-ipvs/bin when KIPVS_CACHE is unset.
	BinDir string
	// ExtraSANs are IP addresses or DNS names added to the serving
	// certificate, e.g. the address an agent inside a VM dials through a
	// qemu guestfwd. 127.0.0.1, ::1, localhost, the kubernetes.default names,
	// the first Service IP and the advertise address are always included.
	ExtraSANs []string
	// AdvertiseAddress is passed to --advertise-address. Default 192.0.2.1.
	AdvertiseAddress string
	// ServiceCIDR is passed to --service-cluster-ip-range. Default 10.96.0.0/16.
	ServiceCIDR string
	// ExtraAPIServerArgs are appended to the kube-apiserver command line
	// (a later flag overrides an earlier one).
	ExtraAPIServerArgs []string
	// StartTimeout bounds each readiness wait. Default DefaultStartTimeout.
	StartTimeout time.Duration
	// Logf receives progress lines. Start(t, …) defaults it to t.Logf.
	Logf func(format string, args ...any)
}

// ControlPlane is a running etcd plus kube-apiserver. Its methods are safe
// for concurrent use.
type ControlPlane struct {
	opts       Options
	dir        string
	url        string
	pki        *pki
	adminToken string
	admin      *rest.Config
	client     kubernetes.Interface

	apiserverPath string
	apiserverArgs []string

	mu        sync.Mutex
	etcd      *process
	apiserver *process // nil while stopped by StopAPIServer
	stopped   bool
}

// Start starts a control plane for t and stops it in t.Cleanup, also when
// the test fails; on failure the end of both logs is written to the test
// log. It fails the test (never skips it) when the binaries are missing.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	cp, err := StartContext(context.Background(), opts)
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs (test failed):\n%s", cp.logTails(40))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return cp
}

// StartContext starts etcd, then kube-apiserver, and returns once
// /readyz answers 200. On error everything it started is stopped and its
// directory removed. The caller must call Stop.
func StartContext(ctx context.Context, opts Options) (*ControlPlane, error) {
	opts = withDefaults(opts)
	etcdPath, apiserverPath, err := findBinaries(opts.BinDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kipvs-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	cp := &ControlPlane{opts: opts, dir: dir, apiserverPath: apiserverPath}
	if err := cp.start(ctx, etcdPath); err != nil {
		if stopErr := cp.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) start(ctx context.Context, etcdPath string) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	if err := cp.writeFiles(); err != nil {
		return err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	began := time.Now()
	cp.etcd, err = startProcess("etcd", etcdPath, []string{
		"--data-dir=" + filepath.Join(cp.dir, "etcd"),
		"--listen-client-url=" + etcdURL,
		"--listen-peer-url=http://127.0.0.1:" + strconv.Itoa(etcdPeer),
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, filepath.Join(cp.dir, "etcd.log"))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if err := cp.etcd.waitUntil(wctx, 100*time.Millisecond, etcdHealthy(etcdURL)); err != nil {
		return err
	}
	cp.opts.Logf("etcd ready on %s after %v", etcdURL, time.Since(began).Round(time.Millisecond))

	cp.url = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	cp.apiserverArgs = cp.apiserverFlags(etcdURL, apiPort)
	cp.admin = cp.ConfigFor(cp.adminToken)
	cp.client, err = kubernetes.NewForConfig(cp.admin)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	return cp.StartAPIServer(ctx)
}

// writeFiles creates the key material and token file under cp.dir.
func (cp *ControlPlane) writeFiles() error {
	dns, ips, err := cp.sans()
	if err != nil {
		return err
	}
	if cp.pki, err = newPKI(dns, ips); err != nil {
		return err
	}
	if cp.adminToken, err = randomToken(); err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":      cp.pki.caCert,
		"serving.crt": cp.pki.servingCert,
		"serving.key": cp.pki.servingKey,
		"sa.key":      cp.pki.saKey,
		"sa.pub":      cp.pki.saPub,
		// token,user,uid,"group1,group2" — see --token-auth-file.
		"tokens.csv": fmt.Appendf(nil, "%s,%s,%s,\"system:masters\"\n", cp.adminToken, AdminUser, AdminUser),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(cp.dir, name), data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// sans lists the serving certificate's names and addresses.
func (cp *ControlPlane) sans() ([]string, []net.IP, error) {
	prefix, err := netip.ParsePrefix(cp.opts.ServiceCIDR)
	if err != nil {
		return nil, nil, fmt.Errorf("ServiceCIDR %q: %w", cp.opts.ServiceCIDR, err)
	}
	adv, err := netip.ParseAddr(cp.opts.AdvertiseAddress)
	if err != nil {
		return nil, nil, fmt.Errorf("AdvertiseAddress %q: %w", cp.opts.AdvertiseAddress, err)
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local"}
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback(),
		prefix.Masked().Addr().Next(), adv}
	for _, s := range cp.opts.ExtraSANs {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a)
		} else if s != "" {
			dns = append(dns, s)
		}
	}
	ips := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		ips = append(ips, net.IP(a.AsSlice()))
	}
	return dns, ips, nil
}

func (cp *ControlPlane) apiserverFlags(etcdURL string, port int) []string {
	f := func(name string) string { return filepath.Join(cp.dir, name) }
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--advertise-address=" + cp.opts.AdvertiseAddress,
		"--cert-dir=" + f("certs"),
		"--tls-cert-file=" + f("serving.crt"),
		"--tls-private-key-file=" + f("serving.key"),
		"--token-auth-file=" + f("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"),
		"--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=" + cp.opts.ServiceCIDR,
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	return append(args, cp.opts.ExtraAPIServerArgs...)
}

// StopAPIServer stops kube-apiserver only (SIGTERM, then SIGKILL after
// 20s), leaving etcd and all stored objects in place, e.g. to test an agent
// riding out an API outage. Stopping a stopped apiserver does nothing.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.apiserver == nil {
		return nil
	}
	err := cp.apiserver.stop(stopGrace)
	cp.apiserver = nil
	return err
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the
// same port with the same flags and etcd, and waits for /readyz. Clients
// made before keep working once it is back.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	switch {
	case cp.stopped:
		return errors.New("control plane is stopped")
	case cp.apiserver != nil:
		return errors.New("kube-apiserver is already running")
	}
	began := time.Now()
	p, err := startProcess("kube-apiserver", cp.apiserverPath, cp.apiserverArgs,
		filepath.Join(cp.dir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	cp.apiserver = p
	wctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if err := p.waitUntil(wctx, 250*time.Millisecond, cp.apiserverReady()); err != nil {
		// Leave nothing half-started: a later StartAPIServer may try again.
		if stopErr := p.stop(stopGrace); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		cp.apiserver = nil
		return err
	}
	cp.opts.Logf("kube-apiserver ready on %s after %v", cp.url, time.Since(began).Round(time.Millisecond))
	return nil
}

// Stop stops kube-apiserver, then etcd, and removes the temporary
// directory. It is idempotent: later calls do nothing and return nil.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return nil
	}
	cp.stopped = true
	var errs []error
	if cp.apiserver != nil {
		errs = append(errs, cp.apiserver.stop(stopGrace))
		cp.apiserver = nil
	}
	if cp.etcd != nil {
		errs = append(errs, cp.etcd.stop(stopGrace))
	}
	if err := os.RemoveAll(cp.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", cp.dir, err))
	}
	return errors.Join(errs...)
}

// URL is the apiserver's base URL, https://127.0.0.1:<port>.
func (cp *ControlPlane) URL() string { return cp.url }

// CABundle is the PEM CA certificate that signed the serving certificate.
func (cp *ControlPlane) CABundle() []byte { return append([]byte(nil), cp.pki.caCert...) }

// AdminToken is the bearer token of AdminUser (system:masters).
func (cp *ControlPlane) AdminToken() string { return cp.adminToken }

// AdminConfig returns a copy of the admin client configuration.
func (cp *ControlPlane) AdminConfig() *rest.Config { return rest.CopyConfig(cp.admin) }

// Client is a clientset authenticated as AdminUser.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// logTails returns the last n lines of each log, for a failed test.
func (cp *ControlPlane) logTails(n int) string {
	var b strings.Builder
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		p := filepath.Join(cp.dir, name)
		fmt.Fprintf(&b, "---- %s\n%s\n", p, logTail(p, n))
	}
	return b.String()
}

func withDefaults(o Options) Options {
	if o.BinDir == "" {
		cache := os.Getenv("KIPVS_CACHE")
		if cache == "" {
			cache = "/var/cache/kube-ipvs"
		}
		o.BinDir = filepath.Join(cache, "bin")
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = DefaultAdvertiseAddress
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// findBinaries checks both binaries exist and are executable, and says how
// to build them when they are not.
func findBinaries(binDir string) (etcd, apiserver string, err error) {
	var errs []error
	for _, name := range []string{"etcd", "kube-apiserver"} {
		p := filepath.Join(binDir, name)
		fi, statErr := os.Stat(p)
		switch {
		case statErr != nil:
			errs = append(errs, fmt.Errorf("%s binary missing: %w", name, statErr))
		case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
			errs = append(errs, fmt.Errorf("%s is not an executable file", p))
		}
	}
	if len(errs) > 0 {
		errs = append(errs, fmt.Errorf("build them with `%s` from the repository root (about 10 minutes the first time; "+
			"set KIPVS_CACHE to use a cache other than /var/cache/kube-ipvs)", BuildScript))
		return "", "", errors.Join(errs...)
	}
	return filepath.Join(binDir, "etcd"), filepath.Join(binDir, "kube-apiserver"), nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// etcdHealthy checks etcd's /health endpoint, like `curl URL/health`.
func etcdHealthy(etcdURL string) func(context.Context) error {
	return func(ctx context.Context) error {
		body, err := get(ctx, http.DefaultClient, etcdURL+"/health", "")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `"health":"true"`) {
			return fmt.Errorf("unhealthy: %s", body)
		}
		return nil
	}
}

// apiserverReady checks /readyz with the admin token over verified TLS.
func (cp *ControlPlane) apiserverReady() func(context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caCert)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context) error {
		_, err := get(ctx, client, cp.url+"/readyz", cp.adminToken)
		return err
	}
}

// get returns the body of a 200 answer, or an error.
func get(ctx context.Context, c *http.Client, url, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
