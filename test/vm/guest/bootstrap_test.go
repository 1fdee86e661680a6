//go:build vmguest

package guest

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// The DaemonSet test/vm/e2e applied from deploy/, the container in it that
// runs the agent, and the ConfigMap kubeadm writes for kube-proxy.
const (
	systemNamespace    = "kube-system"
	daemonSetName      = "kube-ipvs"
	agentContainer     = "kube-ipvs"
	kubeProxyConfigMap = "kube-proxy"
	// podServiceAccount is where kubelet mounts a pod's ServiceAccount
	// token and CA; kubeadm's kube-proxy kubeconfig names the files there.
	podServiceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"
	// imagePath is the PATH of the agent's image (debian:bookworm-slim).
	imagePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// TestE2EStartsWithoutKubeProxy starts the agent as the DaemonSet of
// deploy/ does on a node where nothing serves the kubernetes Service's
// ClusterIP (no kube-proxy, and no route to it): first on a kubeadm
// cluster, through kubeadm's kube-proxy kubeconfig; then on a cluster not
// made by kubeadm (no such ConfigMap), with the config edited as its
// comment says: `apiServer: https://<control-plane-endpoint>:6443`. The
// test plays kubelet: it mounts the pod's volumes and ServiceAccount from
// what the API holds, and sets the container's environment.
func TestE2EStartsWithoutKubeProxy(t *testing.T) {
	api := NeedAPI(t)
	CleanupAgent(t)
	pod := newPodStandIn(t, api)
	apiSvc := pod.kubernetesService()
	block(t, apiSvc)

	AddPod(t, "client", outsider)
	pods := []*APIPod{api.StartPod(t, "boot", 1), api.StartPod(t, "boot", 2)}
	svc := api.CreateService(t, "boot", e2eHTTP)
	vs := netip.AddrPortFrom(ClusterIP(svc), 80)
	slices := api.Slices(t, svc)
	slices.Sync(t)

	t.Log("kubeadm cluster: the DaemonSet as deploy/ has it, with kubeadm's kube-proxy ConfigMap")
	pod.mount()
	agent := pod.start()
	WaitIPVSFor(t, 60*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	wantEven(t, CountTCP("client", vs, 40), podsOf(pods...), 20)
	pod3 := api.StartPod(t, "boot", 3)
	slices.Sync(t)
	pods = append(pods, pod3)
	WaitIPVSFor(t, 30*time.Second, &vs, servedBy(pods)...)
	wantEven(t, CountTCP("client", vs, 30), podsOf(pods...), 10)
	pod.checkNoClusterIPDial(agent)
	checkAgent(t, agent)

	t.Log("cluster not made by kubeadm: no kube-proxy ConfigMap; the config edited as its comment says")
	agent.Stop()
	pod.unmount()
	if out, err := Exec(Node, AgentBin, "--cleanup", "--log-format", "console"); err != nil {
		t.Fatalf("kube-ipvs --cleanup: %v\n%s", err, out)
	}
	wantUnreachable(t, apiSvc) // the agent bound it; now nothing serves it again
	pod.withoutKubeadm()
	pod.mount()
	agent = pod.start()
	WaitIPVSFor(t, 60*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	wantEven(t, CountTCP("client", vs, 30), podsOf(pods...), 10)
	pod.checkNoClusterIPDial(agent)
	checkAgent(t, agent)
}

// podStandIn does for one kube-ipvs pod of the DaemonSet what kubelet
// would, in the node's own filesystem: mount its volumes and its
// ServiceAccount, and set its container's environment.
type podStandIn struct {
	t         *testing.T
	api       *API
	spec      v1.PodSpec
	container v1.Container
	mounted   []string // directories mount created, removed by unmount
}

// newPodStandIn reads the DaemonSet the host applied from deploy/.
func newPodStandIn(t *testing.T, api *API) *podStandIn {
	t.Helper()
	ds, err := api.Client.AppsV1().DaemonSets(systemNamespace).Get(apiCtx(t), daemonSetName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading DaemonSet %s/%s, which test/vm/e2e applies from deploy/: %v", systemNamespace, daemonSetName, err)
	}
	p := &podStandIn{t: t, api: api, spec: ds.Spec.Template.Spec}
	p.container = findContainer(t, ds, agentContainer)
	if len(p.container.Command) > 0 {
		t.Fatalf("the DaemonSet sets command %q; this test runs the image's entrypoint, %s", p.container.Command, AgentBin)
	}
	t.Cleanup(p.unmount)
	return p
}

func findContainer(t *testing.T, ds *appsv1.DaemonSet, name string) v1.Container {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("DaemonSet %s has no container %q", ds.Name, name)
	return v1.Container{}
}

// kubernetesService is the address in-cluster clients dial: the kubernetes
// Service's ClusterIP and port, as kubelet puts them in
// $KUBERNETES_SERVICE_HOST and $KUBERNETES_SERVICE_PORT.
func (p *podStandIn) kubernetesService() netip.AddrPort {
	p.t.Helper()
	svc, err := p.api.Client.CoreV1().Services(metav1.NamespaceDefault).Get(apiCtx(p.t), "kubernetes", metav1.GetOptions{})
	if err != nil {
		p.t.Fatalf("reading Service default/kubernetes: %v", err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || len(svc.Spec.Ports) == 0 {
		p.t.Fatalf("Service default/kubernetes has ClusterIP %q and ports %v", svc.Spec.ClusterIP, svc.Spec.Ports)
	}
	return netip.AddrPortFrom(ip, uint16(svc.Spec.Ports[0].Port))
}

// mount writes what the container sees: every ConfigMap volume it mounts,
// as kubelet lays it out (each key, or the listed items, a file under the
// mount path; a missing optional ConfigMap an empty directory), its
// hostPath volumes (the node's own files), and the pod's ServiceAccount
// token and CA.
func (p *podStandIn) mount() {
	p.t.Helper()
	for _, m := range p.container.VolumeMounts {
		vol := p.volume(m.Name)
		switch {
		case vol.ConfigMap != nil:
			p.mountConfigMap(m.MountPath, vol.ConfigMap)
		case vol.HostPath != nil:
			p.mountHostPath(m.MountPath, vol.HostPath)
		default:
			p.t.Fatalf("volume %q: this stand-in for kubelet mounts only ConfigMaps and hostPaths: %+v", m.Name, vol.VolumeSource)
		}
	}
	if a := p.spec.AutomountServiceAccountToken; a != nil && !*a {
		return
	}
	if p.spec.ServiceAccountName != "kube-ipvs" {
		p.t.Fatalf("the DaemonSet runs as ServiceAccount %q; the host gave the guest a token of kube-ipvs", p.spec.ServiceAccountName)
	}
	p.makeDir(podServiceAccount)
	for _, f := range []string{"token", "ca.crt"} {
		data, err := os.ReadFile(filepath.Join(vmrun.GuestServiceAccount, f))
		if err != nil {
			p.t.Fatalf("the host gave the guest no ServiceAccount %s: %v", f, err)
		}
		p.writeFile(filepath.Join(podServiceAccount, f), data)
	}
	p.writeFile(filepath.Join(podServiceAccount, "namespace"), []byte(systemNamespace))
	p.t.Logf("mounted ServiceAccount kube-system/kube-ipvs at %s", podServiceAccount)
}

func (p *podStandIn) volume(name string) v1.Volume {
	for _, v := range p.spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	p.t.Fatalf("the DaemonSet mounts volume %q, which it does not define", name)
	return v1.Volume{}
}

func (p *podStandIn) mountConfigMap(dir string, src *v1.ConfigMapVolumeSource) {
	p.t.Helper()
	cm, err := p.api.Client.CoreV1().ConfigMaps(systemNamespace).Get(apiCtx(p.t), src.Name, metav1.GetOptions{})
	optional := src.Optional != nil && *src.Optional
	switch {
	case apierrors.IsNotFound(err) && optional:
		cm = &v1.ConfigMap{}
	case err != nil:
		p.t.Fatalf("ConfigMap %s/%s, mounted at %s (kubelet would not start the pod): %v", systemNamespace, src.Name, dir, err)
	}
	files := map[string]string{}
	if len(src.Items) == 0 {
		for k, v := range cm.Data {
			files[k] = v
		}
	}
	for _, it := range src.Items {
		v, ok := cm.Data[it.Key]
		if !ok && !optional && cm.Name != "" {
			p.t.Fatalf("ConfigMap %s has no key %q (kubelet would not start the pod)", src.Name, it.Key)
		}
		if ok {
			files[it.Path] = v
		}
	}
	p.makeDir(dir)
	var names []string
	for name, text := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			p.t.Fatal(err)
		}
		p.writeFile(path, []byte(text))
		names = append(names, name)
	}
	p.t.Logf("mounted ConfigMap %s/%s at %s: %q", systemNamespace, src.Name, dir, names)
}

// mountHostPath checks the volume is the node's own path at the same place,
// which is what the node's filesystem already is, and creates a missing
// FileOrCreate file as kubelet does.
func (p *podStandIn) mountHostPath(dir string, src *v1.HostPathVolumeSource) {
	p.t.Helper()
	if src.Path != dir {
		p.t.Fatalf("hostPath %s mounted at %s: this stand-in for kubelet cannot remap paths", src.Path, dir)
	}
	if src.Type != nil && *src.Type == v1.HostPathFileOrCreate {
		f, err := os.OpenFile(dir, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			p.t.Fatal(err)
		}
		f.Close()
	}
}

// makeDir creates dir, which must not exist yet, and records the first
// directory it had to create, for unmount.
func (p *podStandIn) makeDir(dir string) {
	p.t.Helper()
	if _, err := os.Stat(dir); err == nil {
		p.t.Fatalf("%s exists already on the node", dir)
	}
	top := dir
	for parent := filepath.Dir(top); parent != top; parent = filepath.Dir(top) {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		top = parent
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	p.mounted = append(p.mounted, top)
}

func (p *podStandIn) writeFile(path string, data []byte) {
	p.t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// unmount removes what mount wrote.
func (p *podStandIn) unmount() {
	for i := len(p.mounted) - 1; i >= 0; i-- {
		if err := os.RemoveAll(p.mounted[i]); err != nil {
			p.t.Errorf("unmounting %s: %v", p.mounted[i], err)
		}
	}
	p.mounted = nil
}

// env is the container's environment: the image's PATH, the DaemonSet's
// env (NODE_NAME from spec.nodeName) and what kubelet adds for the
// kubernetes Service.
func (p *podStandIn) env() []string {
	p.t.Helper()
	api := p.kubernetesService()
	env := []string{"PATH=" + imagePath}
	for _, e := range p.container.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env = append(env, e.Name+"="+NodeName)
		default:
			p.t.Fatalf("env %s: this stand-in for kubelet resolves only spec.nodeName: %+v", e.Name, e.ValueFrom)
		}
	}
	return append(env, "KUBERNETES_SERVICE_HOST="+api.Addr().String(),
		"KUBERNETES_SERVICE_PORT="+strconv.Itoa(int(api.Port())))
}

// start runs the agent as the container: the image's entrypoint with the
// DaemonSet's args, in exactly the container's environment (env -i), and
// waits until its caches have synced.
func (p *podStandIn) start() *Proc {
	p.t.Helper()
	args := append([]string{"env", "-i"}, p.env()...)
	args = append(append(args, AgentBin), p.container.Args...)
	p.t.Logf("starting %s", strings.Join(args, " "))
	agent := Start(p.t, Node, args...)
	if err := agent.WaitOutput("kube-ipvs running", 60*time.Second); err != nil {
		p.t.Fatalf("the agent did not start: %v", err)
	}
	return agent
}

// checkNoClusterIPDial fails if the agent took the in-cluster path, which
// dials the kubernetes Service's ClusterIP.
func (p *podStandIn) checkNoClusterIPDial(agent *Proc) {
	p.t.Helper()
	if out := agent.Output(); strings.Contains(out, "dialling the apiserver at the kubernetes Service's ClusterIP") {
		p.t.Errorf("the agent dialled the kubernetes Service's ClusterIP:\n%s", tail(out, 20))
	}
}

// withoutKubeadm makes the cluster one that kubeadm did not make: it
// deletes ConfigMap kube-proxy and edits the config as deploy/'s comment
// says, replacing the kubeconfig line with apiServer: the control-plane
// endpoint (here the one kubeadm's kubeconfig named). Both are put back at
// cleanup.
func (p *podStandIn) withoutKubeadm() {
	p.t.Helper()
	cms := p.api.Client.CoreV1().ConfigMaps(systemNamespace)
	kp, err := cms.Get(apiCtx(p.t), kubeProxyConfigMap, metav1.GetOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	kc, err := clientcmd.Load([]byte(kp.Data["kubeconfig.conf"]))
	if err != nil {
		p.t.Fatalf("kubeconfig.conf of ConfigMap kube-proxy: %v", err)
	}
	current := kc.Contexts[kc.CurrentContext]
	if current == nil || kc.Clusters[current.Cluster] == nil {
		p.t.Fatalf("kubeconfig.conf of ConfigMap kube-proxy has no current cluster")
	}
	server := kc.Clusters[current.Cluster].Server
	cfgName, key := p.configMapNamed()
	cfg, err := cms.Get(apiCtx(p.t), cfgName, metav1.GetOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^kubeconfig: .*$`)
	if n := len(line.FindAllString(cfg.Data[key], -1)); n != 1 {
		p.t.Fatalf("%s of ConfigMap %s has %d kubeconfig lines, want 1", key, cfgName, n)
	}
	original := cfg.Data[key]
	cfg.Data[key] = line.ReplaceAllLiteralString(original, "apiServer: "+server)
	if _, err := cms.Update(apiCtx(p.t), cfg, metav1.UpdateOptions{}); err != nil {
		p.t.Fatal(err)
	}
	if err := cms.Delete(apiCtx(p.t), kubeProxyConfigMap, metav1.DeleteOptions{}); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("deleted ConfigMap kube-proxy; ConfigMap %s now says apiServer: %s", cfgName, server)
	p.t.Cleanup(func() {
		kp.ResourceVersion, kp.UID = "", ""
		if _, err := cms.Create(apiCtx(p.t), kp, metav1.CreateOptions{}); err != nil {
			p.t.Errorf("putting ConfigMap kube-proxy back: %v", err)
		}
		now, err := cms.Get(apiCtx(p.t), cfgName, metav1.GetOptions{})
		if err == nil {
			now.Data[key] = original
			_, err = cms.Update(apiCtx(p.t), now, metav1.UpdateOptions{})
		}
		if err != nil {
			p.t.Errorf("putting ConfigMap %s back: %v", cfgName, err)
		}
	})
}

// configMapNamed is the ConfigMap mounted where the container's --config
// file is, and that file's key.
func (p *podStandIn) configMapNamed() (name, key string) {
	p.t.Helper()
	file := ""
	for i, a := range p.container.Args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			file = v
		} else if a == "--config" && i+1 < len(p.container.Args) {
			file = p.container.Args[i+1]
		}
	}
	for _, m := range p.container.VolumeMounts {
		if filepath.Join(m.MountPath, filepath.Base(file)) == file {
			if v := p.volume(m.Name); v.ConfigMap != nil {
				return v.ConfigMap.Name, filepath.Base(file)
			}
		}
	}
	p.t.Fatalf("the container's --config %q is not in a mounted ConfigMap (args %q)", file, p.container.Args)
	return "", ""
}

// block makes addr's IP unreachable from the node, as it is on a node
// where no proxy serves it (`ip route add unreachable IP/32`, removed at
// cleanup), and shows it with a failed dial. A VIP kube-ipvs binds on
// kipvs0 is local and takes precedence.
func block(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	route := []string{"unreachable", addr.Addr().String() + "/32"}
	Run(t, Node, append([]string{"ip", "route", "add"}, route...)...)
	t.Cleanup(func() {
		if out, err := Exec(Node, append([]string{"ip", "route", "del"}, route...)...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	})
	wantUnreachable(t, addr)
}

// wantUnreachable dials addr from the node and wants "no route to host".
func wantUnreachable(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s (the kubernetes Service) answers: the test needs a node where nothing serves it", addr)
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dialling %s: %v, want no route to host", addr, err)
	}
	t.Logf("the kubernetes Service is unreachable, as without kube-proxy: %v", err)
}
