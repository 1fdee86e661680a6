package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// Tier 1: reads deploy/ and checks it without any cluster.
//
//	go test ./test/deploy/

const (
	namespace  = "kube-system"
	name       = "kube-ipvs"
	configName = "kube-ipvs-config"
	configFile = "/etc/kube-ipvs/config.yaml"
)

func readManifests(t testing.TB) []Object {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Read(dir)
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	return objs
}

// only returns the single object of type T in deploy/.
func only[T runtime.Object](t testing.TB, objs []Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.Object.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %T in deploy/, found %d", *new(T), len(found))
	}
	return found[0]
}

// Every document decodes strictly, and deploy/ holds exactly these
// objects, in an order that applies cleanly (the account before its
// binding, the ConfigMap before the DaemonSet that mounts it).
func TestManifestsAreTheseObjectsInOrder(t *testing.T) {
	objs := readManifests(t)
	var got []string
	for _, o := range objs {
		got = append(got, strings.SplitN(o.String(), " (", 2)[0])
	}
	want := []string{
		"ServiceAccount kube-system/kube-ipvs",
		"ClusterRole kube-ipvs",
		"ClusterRoleBinding kube-ipvs",
		"ConfigMap kube-system/kube-ipvs-config",
		"DaemonSet kube-system/kube-ipvs",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects in deploy/:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A typo in a field name is an error, not a silently dropped setting.
func TestReadRefusesUnknownFields(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  namespace: kube-system\nautomountServiceAcountToken: false\n"
	if err := os.WriteFile(filepath.Join(dir, "sa.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read(dir)
	if err == nil || !strings.Contains(err.Error(), "automountServiceAcountToken") {
		t.Fatalf("Read with a misspelled field: %v, want an error naming it", err)
	}
}

func TestDaemonSet(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, readManifests(t))
	pod := ds.Spec.Template.Spec
	agent := container(t, pod.Containers, name)
	setup := container(t, pod.InitContainers, "setup")

	cases := []struct {
		name  string
		check func() error
	}{
		{"host network namespace", func() error {
			return expect(pod.HostNetwork && !pod.HostPID && !pod.HostIPC, "hostNetwork only: got hostNetwork=%v hostPID=%v hostIPC=%v",
				pod.HostNetwork, pod.HostPID, pod.HostIPC)
		}},
		{"node's DNS, not the cluster's (which it serves)", func() error {
			return expect(pod.DNSPolicy == corev1.DNSDefault, "dnsPolicy %q, want Default", pod.DNSPolicy)
		}},
		{"system-node-critical", func() error {
			return expect(pod.PriorityClassName == "system-node-critical", "priorityClassName %q", pod.PriorityClassName)
		}},
		{"tolerates every taint", func() error { return toleratesEverything(pod.Tolerations) }},
		{"runs as the kube-ipvs service account", func() error {
			return expect(pod.ServiceAccountName == name, "serviceAccountName %q", pod.ServiceAccountName)
		}},
		{"selector matches the template", func() error {
			for k, v := range ds.Spec.Selector.MatchLabels {
				if ds.Spec.Template.Labels[k] != v {
					return fmt.Errorf("selector %s=%s not in template labels %v", k, v, ds.Spec.Template.Labels)
				}
			}
			return expect(len(ds.Spec.Selector.MatchLabels) > 0, "empty selector")
		}},
		{"rolling update, one node at a time", func() error {
			u := ds.Spec.UpdateStrategy
			return expect(u.Type == appsv1.RollingUpdateDaemonSetStrategyType && u.RollingUpdate != nil &&
				u.RollingUpdate.MaxUnavailable != nil && u.RollingUpdate.MaxUnavailable.String() == "1",
				"updateStrategy %+v", u)
		}},
		{"reads its config file", func() error {
			return expect(slices.Equal(agent.Args, []string{"--config=" + configFile}) && len(agent.Command) == 0,
				"command %q args %q", agent.Command, agent.Args)
		}},
		{"config file comes from the ConfigMap", func() error { return configMounted(pod, agent) }},
		{"kubeadm's kube-proxy kubeconfig is mounted where the config looks", func() error {
			return kubeProxyKubeconfigMounted(t, pod, agent)
		}},
		{"no apiserver address in the environment", func() error {
			var names []string
			for _, e := range agent.Env {
				names = append(names, e.Name)
			}
			return expect(slices.Equal(names, []string{"NODE_NAME"}), "env %q, want just NODE_NAME", names)
		}},
		{"NODE_NAME from spec.nodeName", func() error { return nodeNameEnv(agent) }},
		{"shares the node's xtables lock", func() error {
			if err := mounted(agent, "/run/xtables.lock", false); err != nil {
				return err
			}
			return hostPath(pod, agent, "/run/xtables.lock", "/run/xtables.lock", corev1.HostPathFileOrCreate)
		}},
		{"agent reads /lib/modules", func() error { return libModules(pod, agent) }},
		{"setup reads /lib/modules", func() error { return libModules(pod, setup) }},
		{"agent is not privileged and keeps only NET_ADMIN", func() error { return agentSecurity(agent) }},
		{"setup is privileged (modules, /proc/sys)", func() error {
			sc := setup.SecurityContext
			return expect(sc != nil && sc.Privileged != nil && *sc.Privileged, "setup securityContext %+v", sc)
		}},
		{"setup runs the agent's image", func() error {
			return expect(setup.Image == agent.Image, "setup image %q, agent image %q", setup.Image, agent.Image)
		}},
		{"liveness probe on /livez of the healthz port", func() error {
			p := agent.LivenessProbe
			if p == nil || p.HTTPGet == nil {
				return fmt.Errorf("livenessProbe %+v, want an HTTP GET", p)
			}
			_, port, _ := net.SplitHostPort(loadConfigMap(t, readManifests(t)).HealthzBind)
			return expect(p.HTTPGet.Path == "/livez" && p.HTTPGet.Port.String() == port,
				"livenessProbe GET %s on %s, want /livez on the configured healthzBindAddress port %s", p.HTTPGet.Path, p.HTTPGet.Port.String(), port)
		}},
		{"resource requests", func() error {
			r := agent.Resources.Requests
			return expect(r.Cpu().Equal(resource.MustParse("50m")) && r.Memory().Equal(resource.MustParse("64Mi")),
				"requests %v", r)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.check(); err != nil {
				t.Error(err)
			}
		})
	}
}

// The setup container loads every scheduler the configuration accepts and
// sets exactly the sysctls the agent checks.
func TestSetupListsMatchTheCode(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, readManifests(t))
	setup := container(t, ds.Spec.Template.Spec.InitContainers, "setup")
	got := strings.Fields(scriptList(t, setup, `for s in ([^;]*); do`))
	if !slices.Equal(got, ipvs.Schedulers) {
		t.Errorf("setup loads %q, ipvs.Schedulers is %q", got, ipvs.Schedulers)
	}
	got = strings.Fields(scriptList(t, setup, `for kv in ([^;]*); do`))
	var sysctls []string
	for _, s := range proxier.Sysctls {
		sysctls = append(sysctls, s.Key+"="+s.Value)
	}
	if !slices.Equal(got, sysctls) {
		t.Errorf("setup sets %q, proxier.Sysctls is %q", got, sysctls)
	}
}

func expect(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in the DaemonSet", name)
	return corev1.Container{}
}

func toleratesEverything(ts []corev1.Toleration) error {
	for _, t := range ts {
		if t.Operator == corev1.TolerationOpExists && t.Key == "" && t.Effect == "" && t.TolerationSeconds == nil {
			return nil
		}
	}
	return fmt.Errorf("no {operator: Exists} toleration in %+v", ts)
}

func nodeNameEnv(c corev1.Container) error {
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" {
			ok := e.Value == "" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
				e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
			return expect(ok, "NODE_NAME is %+v, want valueFrom.fieldRef spec.nodeName", e)
		}
	}
	return fmt.Errorf("no NODE_NAME in %s's env", c.Name)
}

// mount returns c's mount at path.
func mount(c corev1.Container, path string) (corev1.VolumeMount, error) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m, nil
		}
	}
	return corev1.VolumeMount{}, fmt.Errorf("%s mounts nothing at %s", c.Name, path)
}

func mounted(c corev1.Container, path string, readOnly bool) error {
	m, err := mount(c, path)
	if err != nil {
		return err
	}
	return expect(m.ReadOnly == readOnly, "%s: %s readOnly=%v, want %v", c.Name, path, m.ReadOnly, readOnly)
}

func volume(pod corev1.PodSpec, name string) (corev1.Volume, error) {
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v, nil
		}
	}
	return corev1.Volume{}, fmt.Errorf("no volume %q", name)
}

// hostPath checks that c's mount at path is the host's hostPath of type typ.
func hostPath(pod corev1.PodSpec, c corev1.Container, path, host string, typ corev1.HostPathType) error {
	m, err := mount(c, path)
	if err != nil {
		return err
	}
	v, err := volume(pod, m.Name)
	if err != nil {
		return err
	}
	hp := v.HostPath
	if hp == nil || hp.Path != host {
		return fmt.Errorf("%s at %s is volume %+v, want hostPath %s", c.Name, path, v.VolumeSource, host)
	}
	got := corev1.HostPathUnset
	if hp.Type != nil {
		got = *hp.Type
	}
	return expect(got == typ, "hostPath %s type %q, want %q", host, got, typ)
}

func libModules(pod corev1.PodSpec, c corev1.Container) error {
	if err := mounted(c, "/lib/modules", true); err != nil {
		return err
	}
	return hostPath(pod, c, "/lib/modules", "/lib/modules", corev1.HostPathUnset)
}

// configMounted checks that --config names the config.yaml key of the
// kube-ipvs-config ConfigMap, mounted read-only.
func configMounted(pod corev1.PodSpec, c corev1.Container) error {
	dir, key := filepath.Split(configFile)
	m, err := mount(c, filepath.Clean(dir))
	if err != nil {
		return err
	}
	v, err := volume(pod, m.Name)
	if err != nil {
		return err
	}
	cm := v.ConfigMap
	ok := cm != nil && cm.Name == configName && len(cm.Items) == 0 && m.ReadOnly && m.SubPath == ""
	return expect(ok && key == "config.yaml", "%s at %s is %+v (mount %+v), want ConfigMap %s read-only",
		c.Name, dir, v.VolumeSource, m, configName)
}

// kubeProxyKubeconfigMounted checks that the config's kubeconfig is key
// kubeconfig.conf of kubeadm's ConfigMap kube-proxy, and only that key,
// mounted read-only and optional (a cluster not made by kubeadm has none).
func kubeProxyKubeconfigMounted(t *testing.T, pod corev1.PodSpec, c corev1.Container) error {
	cfg := loadConfigMap(t, readManifests(t))
	dir, key := filepath.Split(cfg.Kubeconfig)
	m, err := mount(c, filepath.Clean(dir))
	if err != nil {
		return err
	}
	v, err := volume(pod, m.Name)
	if err != nil {
		return err
	}
	cm := v.ConfigMap
	want := []corev1.KeyToPath{{Key: KubeProxyKubeconfig, Path: KubeProxyKubeconfig}}
	ok := cm != nil && cm.Name == KubeProxyConfigMap && cm.Optional != nil && *cm.Optional &&
		reflect.DeepEqual(cm.Items, want) && m.ReadOnly && m.SubPath == "" && key == KubeProxyKubeconfig
	return expect(ok, "%s at %s is %+v (mount %+v), want key %s of optional ConfigMap %s, read-only",
		c.Name, dir, v.VolumeSource, m, KubeProxyKubeconfig, KubeProxyConfigMap)
}

func agentSecurity(c corev1.Container) error {
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		return fmt.Errorf("%s has no securityContext.capabilities", c.Name)
	}
	var errs []string
	if sc.Privileged != nil && *sc.Privileged {
		errs = append(errs, "privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, "allowPrivilegeEscalation not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errs = append(errs, "root filesystem writable")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		errs = append(errs, fmt.Sprintf("drops %q, want [ALL]", sc.Capabilities.Drop))
	}
	if !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) {
		errs = append(errs, fmt.Sprintf("adds %q, want [NET_ADMIN]", sc.Capabilities.Add))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %s", c.Name, strings.Join(errs, "; "))
	}
	return nil
}

// setupScript returns the shell script the setup container runs.
func setupScript(t testing.TB, c corev1.Container) string {
	t.Helper()
	if !slices.Equal(c.Command, []string{"/bin/sh", "-c"}) || len(c.Args) != 1 {
		t.Fatalf("setup runs %q %q, want /bin/sh -c SCRIPT", c.Command, c.Args)
	}
	return c.Args[0]
}

// scriptList returns the first submatch of pattern in the setup script.
func scriptList(t testing.TB, c corev1.Container, pattern string) string {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(setupScript(t, c))
	if m == nil {
		t.Fatalf("setup script has no line matching %q", pattern)
	}
	return m[1]
}

// loadConfigMap loads the config.yaml of deploy/'s ConfigMap.
func loadConfigMap(t *testing.T, objs []Object) *config.Configuration {
	t.Helper()
	cm := only[*corev1.ConfigMap](t, objs)
	data, ok := cm.Data["config.yaml"]
	if !ok || len(cm.Data) != 1 || len(cm.BinaryData) != 0 {
		t.Fatalf("ConfigMap %s holds %d keys, want just config.yaml", cm.Name, len(cm.Data)+len(cm.BinaryData))
	}
	got, err := config.Load([]byte(data))
	if err != nil {
		t.Fatalf("config.Load(config.yaml):\n%v", err)
	}
	return got
}

// The ConfigMap's config.yaml loads, asks for the kernel (not dry-run),
// takes the node name from $NODE_NAME, reaches the apiserver through
// kubeadm's kube-proxy kubeconfig, and is config/example.yaml apart from
// that and the clusterCIDR placeholder.
func TestConfigMapLoads(t *testing.T) {
	got := loadConfigMap(t, readManifests(t))
	if got.Mode != config.ModeIPVS || got.NodeName != "" || got.APIServer != "" ||
		got.Kubeconfig != "/var/lib/kube-proxy/"+KubeProxyKubeconfig {
		t.Errorf("mode %q nodeName %q kubeconfig %q apiServer %q, want ipvs, empty ($NODE_NAME), kubeadm's kube-proxy kubeconfig, empty",
			got.Mode, got.NodeName, got.Kubeconfig, got.APIServer)
	}
	served := []corev1.IPFamily{corev1.IPv4Protocol}
	if len(got.ClusterCIDRs()) == 0 || len(got.Warnings(served)) > 0 {
		t.Errorf("clusterCIDR %q: %d prefixes, warnings %q; want a clean placeholder", got.ClusterCIDR,
			len(got.ClusterCIDRs()), got.Warnings(served))
	}
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "config", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := config.Load(example)
	if err != nil {
		t.Fatal(err)
	}
	ex.ClusterCIDR, ex.Kubeconfig = got.ClusterCIDR, got.Kubeconfig
	if !reflect.DeepEqual(got, ex) {
		t.Errorf("config.yaml differs from config/example.yaml beyond clusterCIDR and kubeconfig:\ngot  %+v\nwant %+v", got, ex)
	}
}

// On a cluster not made by kubeadm, the ConfigMap's comment says to
// replace the kubeconfig line with an apiServer line. Done as it says, the
// file loads, with no kubeconfig and that apiserver.
func TestConfigMapEditForOtherClusters(t *testing.T) {
	data := only[*corev1.ConfigMap](t, readManifests(t)).Data["config.yaml"]
	const hint = "#   apiServer: https://<control-plane-endpoint>:6443\n"
	const line = "kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\n"
	if strings.Count(data, hint) != 1 || strings.Count(data, line) != 1 {
		t.Fatalf("config.yaml has %d lines %q and %d lines %q, want one of each",
			strings.Count(data, hint), hint, strings.Count(data, line), line)
	}
	edited := strings.Replace(data, line, "apiServer: https://192.0.2.10:6443\n", 1)
	got, err := config.Load([]byte(edited))
	if err != nil {
		t.Fatalf("config.yaml edited as its comment says:\n%v", err)
	}
	if got.Kubeconfig != "" || got.APIServer != "https://192.0.2.10:6443" {
		t.Errorf("edited: kubeconfig %q apiServer %q, want empty and https://192.0.2.10:6443", got.Kubeconfig, got.APIServer)
	}
}

// KubeadmKubeProxyConfigMap, which the tier-3 and e2e tests create as
// kubeadm would, holds a kubeconfig that names the ServiceAccount's files.
func TestKubeadmKubeProxyConfigMap(t *testing.T) {
	cm := KubeadmKubeProxyConfigMap("https://192.0.2.10:6443")
	kc, err := clientcmd.Load([]byte(cm.Data[KubeProxyKubeconfig]))
	if err != nil {
		t.Fatal(err)
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil || kc.Clusters[ctx.Cluster] == nil || kc.AuthInfos[ctx.AuthInfo] == nil {
		t.Fatalf("kubeconfig.conf has no complete current context: %+v", kc)
	}
	cluster, user := kc.Clusters[ctx.Cluster], kc.AuthInfos[ctx.AuthInfo]
	if cluster.Server != "https://192.0.2.10:6443" || cluster.CertificateAuthority != ServiceAccountDir+"/ca.crt" ||
		user.TokenFile != ServiceAccountDir+"/token" {
		t.Errorf("server %q CA %q tokenFile %q", cluster.Server, cluster.CertificateAuthority, user.TokenFile)
	}
}

// writeVerbs are the verbs that change objects ("*" included).
var writeVerbs = []string{"create", "update", "patch", "delete", "deletecollection", "*"}

// The ClusterRole grants exactly what the agent needs, with no wildcard and
// no write on the objects that decide where traffic goes.
func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	role := only[*rbacv1.ClusterRole](t, readManifests(t))
	if role.AggregationRule != nil {
		t.Errorf("ClusterRole %s aggregates other roles", role.Name)
	}
	var grants []string
	for i, r := range role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("rule %d: nonResourceURLs %q resourceNames %q, want none", i, r.NonResourceURLs, r.ResourceNames)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					grants = append(grants, fmt.Sprintf("%s/%s %s", g, res, v))
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("rule %d: wildcard in %q %q %q", i, g, res, v)
					}
					base, _, _ := strings.Cut(res, "/")
					if slices.Contains([]string{"services", "endpoints", "endpointslices", "nodes"}, base) &&
						slices.Contains(writeVerbs, v) {
						t.Errorf("rule %d: grants %s on %s/%s", i, v, g, res)
					}
				}
			}
		}
	}
	slices.Sort(grants)
	want := []string{
		"/events create",
		"/nodes get", "/nodes list", "/nodes watch",
		"/services list", "/services watch",
		"discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch",
		"events.k8s.io/events create", // created once, never patched
	}
	if !slices.Equal(grants, want) {
		t.Errorf("ClusterRole grants:\n%s\nwant:\n%s", strings.Join(grants, "\n"), strings.Join(want, "\n"))
	}
}

// The binding gives that role to the account the DaemonSet runs as, and
// nothing else.
func TestClusterRoleBinding(t *testing.T) {
	objs := readManifests(t)
	b := only[*rbacv1.ClusterRoleBinding](t, objs)
	role := only[*rbacv1.ClusterRole](t, objs)
	sa := only[*corev1.ServiceAccount](t, objs)
	ds := only[*appsv1.DaemonSet](t, objs)
	if b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
		t.Errorf("roleRef %+v, want ClusterRole %s", b.RoleRef, role.Name)
	}
	wantSubject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}
	if len(b.Subjects) != 1 || b.Subjects[0] != wantSubject {
		t.Errorf("subjects %+v, want just %+v", b.Subjects, wantSubject)
	}
	if sa.Namespace != ds.Namespace || sa.Name != ds.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("DaemonSet %s/%s runs as %q, but the bound account is %s/%s", ds.Namespace, ds.Name,
			ds.Spec.Template.Spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
}
