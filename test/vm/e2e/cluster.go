// Package e2e puts a real control plane next to the test VM, for the
// end-to-end suite (the guest's TestE2E* tests) and the demo: kube-apiserver
// and etcd on the host's loopback (test/controlplane), deploy/ applied, and
// the guest given kubeconfigs that reach the apiserver through the VM's one
// forwarded port (https://10.0.2.100:PORT).
//
//	go test -tags vmtest -v ./test/vm/e2e
//
// The guest can ask the host to stop and start kube-apiserver by printing
// "KIPVS-HOST: stop-apiserver" or "KIPVS-HOST: start-apiserver" on its
// console (guest.API.StopAPIServer); Cluster.HostCommand runs them.
//
// The suite also puts upstream kube-proxy (test/tools/build.sh, static) into
// the VM at /bin/kube-proxy (AddKubeProxy), for the guest tests that run it
// in IPVS mode (guest.StartKubeProxy).
package e2e

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-ipvs/kube-ipvs/test/controlplane"
	"github.com/kube-ipvs/kube-ipvs/test/deploy"
	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

const (
	// NodeName is the VM's Node, which the agent serves.
	NodeName = "node-a"
	// NodeIP is the VM's address on qemu's user network.
	NodeIP = "10.0.2.15"
	// agentNamespace and agentName are the ServiceAccount deploy/ creates.
	agentNamespace = "kube-system"
	agentName      = "kube-ipvs"
)

// GuestSuites matches the guest tests the e2e driver runs.
const GuestSuites = `^TestE2E`

// ControlPlaneOptions are the options a Cluster needs: the guestfwd address
// in the serving certificate, and privileged pods allowed so that deploy/'s
// DaemonSet (a privileged init container) applies, as on kubeadm.
func ControlPlaneOptions(logf func(string, ...any)) controlplane.Options {
	return controlplane.Options{
		ExtraSANs:          []string{vmrun.GuestFwdIP},
		ExtraAPIServerArgs: []string{"--allow-privileged=true"},
		Logf:               logf,
	}
}

// Cluster is a running control plane prepared for the agent in the VM.
type Cluster struct {
	CP   *controlplane.ControlPlane
	Port int // kube-apiserver's port on 127.0.0.1, forwarded into the guest
	// AgentKubeconfig holds a token of the kube-system/kube-ipvs
	// ServiceAccount; AdminKubeconfig the admin token. Both point at
	// https://10.0.2.100:Port.
	AgentKubeconfig, AdminKubeconfig []byte
	// AgentToken (that same token) and CA (the apiserver's) are what
	// kubelet mounts into a kube-ipvs pod as its ServiceAccount.
	AgentToken, CA []byte
	logf           func(string, ...any)
}

// Setup prepares cp (started with ControlPlaneOptions) for the VM, as an
// admin would with kubectl and as the controllers that do not run here
// would: it creates kubeadm's ConfigMap kube-system/kube-proxy (its
// kubeconfig.conf names https://10.0.2.100:PORT as the control-plane
// endpoint), applies deploy/ (the ServiceAccount, least-privilege RBAC,
// ConfigMap and DaemonSet), creates the ServiceAccount default/default that
// Pods need and the VM's Node, and makes a token for the kube-ipvs
// ServiceAccount (TokenRequest).
func Setup(ctx context.Context, cp *controlplane.ControlPlane, logf func(string, ...any)) (*Cluster, error) {
	u, err := url.Parse(cp.URL())
	if err != nil {
		return nil, fmt.Errorf("apiserver URL %q: %w", cp.URL(), err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("apiserver URL %q: %w", cp.URL(), err)
	}
	c := &Cluster{CP: cp, Port: port, logf: logf}
	admin := cp.Client()
	for _, ns := range []string{"default", agentNamespace} {
		if err := waitForNamespace(ctx, cp, ns); err != nil {
			return nil, err
		}
	}
	server := fmt.Sprintf("https://%s:%d", vmrun.GuestFwdIP, port)
	kubeProxy := deploy.KubeadmKubeProxyConfigMap(server)
	if _, err := admin.CoreV1().ConfigMaps(kubeProxy.Namespace).Create(ctx, kubeProxy, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating ConfigMap %s/%s: %w", kubeProxy.Namespace, kubeProxy.Name, err)
	}
	logf("created ConfigMap %s/%s as kubeadm would, control-plane endpoint %s", kubeProxy.Namespace, kubeProxy.Name, server)
	if err := c.applyDeploy(ctx); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "default"}}
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating ServiceAccount default/default: %w", err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node(), metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating Node %s: %w", NodeName, err)
	}
	logf("created ServiceAccount default/default and Node %s (%s)", NodeName, NodeIP)
	token, err := cp.ServiceAccountToken(ctx, agentNamespace, agentName)
	if err != nil {
		return nil, err
	}
	c.AgentToken, c.CA = []byte(token), cp.CABundle()
	if c.AgentKubeconfig, err = cp.KubeconfigFor(token, server); err != nil {
		return nil, err
	}
	if c.AdminKubeconfig, err = cp.KubeconfigFor(cp.AdminToken(), server); err != nil {
		return nil, err
	}
	logf("kubeconfigs for the guest point at %s: the kube-ipvs ServiceAccount's token and the admin's", server)
	return c, nil
}

// applyDeploy creates every object in deploy/, like `kubectl apply -f deploy/`.
func (c *Cluster) applyDeploy(ctx context.Context) error {
	dir, err := deploy.Dir()
	if err != nil {
		return err
	}
	objs, err := deploy.Read(dir)
	if err != nil {
		return err
	}
	if err := deploy.Apply(ctx, c.CP.AdminConfig(), objs); err != nil {
		return fmt.Errorf("applying deploy/: %w", err)
	}
	for _, o := range objs {
		c.logf("applied %s", o)
	}
	return nil
}

// node is the VM's Node as kubelet would register it.
func node() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
			corev1.LabelHostname: NodeName, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
		}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: NodeIP}, {Type: corev1.NodeHostName, Address: NodeName},
		}},
	}
}

// waitForNamespace waits for kube-apiserver's bootstrap to create ns.
func waitForNamespace(ctx context.Context, cp *controlplane.ControlPlane, ns string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cp.Client().CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s never appeared: %w", ns, err)
	}
	return nil
}

// Configure points a VM run at the cluster: the guestfwd to the apiserver's
// port, the kubeconfigs and the kube-ipvs ServiceAccount's files in the
// initramfs, and the host commands.
func (c *Cluster) Configure(cfg *vmrun.Config) {
	cfg.GuestFwd = c.Port
	sa := vmrun.GuestServiceAccount[1:]
	cfg.Files = append(cfg.Files,
		vmrun.File{Name: vmrun.GuestAgentKubeconfig[1:], Mode: 0o600, Data: c.AgentKubeconfig},
		vmrun.File{Name: vmrun.GuestAdminKubeconfig[1:], Mode: 0o600, Data: c.AdminKubeconfig},
		vmrun.File{Name: sa + "/token", Mode: 0o600, Data: c.AgentToken},
		vmrun.File{Name: sa + "/ca.crt", Mode: 0o644, Data: c.CA})
	cfg.HostCommand = c.HostCommand
}

// HostCommand runs a command the guest asked for on the console:
// stop-apiserver (etcd and the objects stay) or start-apiserver (same port,
// waits until ready).
func (c *Cluster) HostCommand(cmd string) error {
	switch cmd {
	case "stop-apiserver":
		c.logf("the guest asked: stopping kube-apiserver")
		return c.CP.StopAPIServer()
	case "start-apiserver":
		c.logf("the guest asked: starting kube-apiserver")
		ctx, cancel := context.WithTimeout(context.Background(), controlplane.DefaultStartTimeout)
		defer cancel()
		return c.CP.StartAPIServer(ctx)
	default:
		return fmt.Errorf("unknown host command %q", cmd)
	}
}

// KubeProxyBinary is where test/tools/build.sh leaves upstream kube-proxy:
// $KIPVS_CACHE/bin/kube-proxy (default /var/cache/kube-ipvs/bin).
func KubeProxyBinary() string { return filepath.Join(vmrun.CacheRoot(), "bin", "kube-proxy") }

// AddKubeProxy adds upstream kube-proxy to the VM's initramfs at
// vmrun.GuestKubeProxy. It fails, saying how to build it, when the binary
// is missing or not executable, and when it is dynamically linked: the
// guest has no libc for a Go program, and exec would fail there with a
// puzzling "no such file or directory".
func AddKubeProxy(cfg *vmrun.Config) error {
	p := KubeProxyBinary()
	if err := checkStatic(p); err != nil {
		return fmt.Errorf("upstream kube-proxy for the VM: %w; build it with `%s` from the repository root "+
			"(a few minutes the first time; set KIPVS_CACHE to use a cache other than /var/cache/kube-ipvs)",
			err, controlplane.BuildScript)
	}
	cfg.Files = append(cfg.Files, vmrun.File{Name: vmrun.GuestKubeProxy[1:], Mode: 0o755, Src: p})
	return nil
}

// checkStatic checks that p is an executable ELF file without a program
// interpreter, i.e. statically linked.
func checkStatic(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New(p + " is dynamically linked (built without CGO_ENABLED=0)")
		}
	}
	return nil
}
