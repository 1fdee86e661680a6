//go:build vmguest

package guest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// NodeName is the Node the agent in the VM serves; endpoints on it are local.
const NodeName = "node-a"

// ClusterCIDR is the pod range the agent is told about.
const ClusterCIDR = "10.244.0.0/16"

// Objects is a directory of Service, EndpointSlice and Node YAML files that the
// agent reads with --objects-dir, standing in for the apiserver.
type Objects struct {
	t   testing.TB
	Dir string
}

// NewObjects makes an empty objects directory, removed at cleanup.
func NewObjects(t testing.TB) *Objects {
	return &Objects{t: t, Dir: t.TempDir()}
}

// Put writes obj as NAME.yaml, atomically (the agent never sees half a file).
func (o *Objects) Put(name string, obj any) {
	o.t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		o.t.Fatalf("marshal %s: %v", name, err)
	}
	tmp := filepath.Join(o.Dir, name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		o.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(o.Dir, name+".yaml")); err != nil {
		o.t.Fatal(err)
	}
}

// Delete removes NAME.yaml.
func (o *Objects) Delete(name string) {
	o.t.Helper()
	if err := os.Remove(filepath.Join(o.Dir, name+".yaml")); err != nil {
		o.t.Fatal(err)
	}
}

// Port is a Service port and the pods' target port.
type Port struct {
	Name     string
	Protocol v1.Protocol
	Port     int32
	Target   int32
}

// ServiceObject is a ClusterIP Service in namespace default.
func ServiceObject(name string, vip netip.Addr, ports ...Port) *v1.Service {
	s := &v1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: vip.String(), ClusterIPs: []string{vip.String()},
			SessionAffinity: v1.ServiceAffinityNone,
		},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: intstr.FromInt32(p.Target),
		})
	}
	return s
}

// SliceObject is the EndpointSlice the EndpointSlice controller would write
// for a Service whose ports are ports and whose ready pods are pods, all on
// NodeName.
func SliceObject(name, service string, ports []Port, pods ...*Pod) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{
			discovery.LabelServiceName: service,
			discovery.LabelManagedBy:   "endpointslice-controller.k8s.io",
		}},
		AddressType: discovery.AddressTypeIPv4,
		Endpoints:   []discovery.Endpoint{},
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(p.Target)})
	}
	for _, p := range pods {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{
			Addresses:  []string{p.IP().String()},
			Conditions: discovery.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
			NodeName:   ptr(NodeName),
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// StartAgent runs the real kube-ipvs binary on the node, fed from objs,
// with a fast pace so tests do not wait long, and waits until it runs.
// Extra flags come last and override.
func StartAgent(t testing.TB, objs *Objects, extra ...string) *Proc {
	t.Helper()
	return startAgent(t, []string{"--objects-dir", objs.Dir}, extra)
}

// startAgent runs kube-ipvs with the given source of objects (--objects-dir
// or --kubeconfig), the test pace and extra flags, and waits until its caches
// have synced ("kube-ipvs running").
func startAgent(t testing.TB, source, extra []string) *Proc {
	t.Helper()
	args := append([]string{AgentBin}, source...)
	args = append(args, "--node-name", NodeName,
		"--cluster-cidr", ClusterCIDR, "--min-sync-period", "100ms", "--sync-period", "2s",
		"--log-format", "console", "--log-level", "debug")
	p := Start(t, Node, append(args, extra...)...)
	if err := p.WaitOutput("kube-ipvs running", 30*time.Second); err != nil {
		t.Fatalf("agent did not start: %v", err)
	}
	return p
}

// CleanupAgent removes everything kube-ipvs made (kube-ipvs --cleanup), at
// the end of the test, so the next test starts from a clean node; it
// checks that nothing of kube-ipvs is left.
func CleanupAgent(t testing.TB) {
	t.Cleanup(func() {
		if out, err := Exec(Node, AgentBin, "--cleanup", "--log-format", "console"); err != nil {
			t.Errorf("kube-ipvs --cleanup: %v\n%s", err, out)
		}
		left := []string{}
		if out, _ := Exec(Node, "iptables-save"); strings.Contains(out, "KIPVS-") {
			left = append(left, "iptables:\n"+out)
		}
		if out, _ := Exec(Node, "ipset", "list", "-n"); strings.Contains(out, "KIPVS-") {
			left = append(left, "ipsets: "+out)
		}
		if out, err := Exec(Node, "ip", "link", "show", "kipvs0"); err == nil {
			left = append(left, "link: "+out)
		}
		if len(left) > 0 {
			t.Errorf("kube-ipvs --cleanup left: %s", strings.Join(left, "\n"))
		}
	})
}

// IPVS is `ipvsadm -Ln` on the node.
func IPVS(t testing.TB) string { return Run(t, Node, "ipvsadm", "-Ln") }

// WaitIPVS polls `ipvsadm -Ln` until every pattern matches (a pattern
// starting with "!" must not match), for up to 30 s (an agent's first sync
// writes every chain and set, about 10 s of iptables runs under TCG, more
// on a busy host); it returns the last output.
func WaitIPVS(t testing.TB, patterns ...string) string {
	t.Helper()
	return WaitIPVSFor(t, 30*time.Second, nil, patterns...)
}

// WaitIPVSFor is WaitIPVS with a timeout and, unless vs is nil, only virtual
// server vs (`ipvsadm -Ln -t VS`; no such virtual server reads as empty).
func WaitIPVSFor(t testing.TB, timeout time.Duration, vs *netip.AddrPort, patterns ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var out string
		if vs == nil {
			out = IPVS(t)
		} else {
			out, _ = Exec(Node, "ipvsadm", "-Ln", "-t", vs.String())
			if !strings.Contains(out, "Prot LocalAddress") {
				out = ""
			}
		}
		bad := ""
		for _, p := range patterns {
			want := !strings.HasPrefix(p, "!")
			if regexp.MustCompile(`(?m)`+strings.TrimPrefix(p, "!")).MatchString(out) != want {
				bad = p
				break
			}
		}
		if bad == "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipvsadm -Ln never matched %q within %v:\n%s", bad, timeout, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// VSLine is the ipvsadm -Ln pattern of a virtual server line.
func VSLine(proto string, vs netip.AddrPort, sched string) string {
	return fmt.Sprintf(`^%s\s+%s %s\b`, proto, regexp.QuoteMeta(vs.String()), sched)
}

// RSLine is the ipvsadm -Ln pattern of a masqueraded real server, weight 1.
func RSLine(rs netip.AddrPort) string {
	return fmt.Sprintf(`^\s+-> %s\s+Masq\s+1\s`, regexp.QuoteMeta(rs.String()))
}

// DrainLine is the ipvsadm -Ln pattern of a masqueraded real server at
// weight 0: it keeps its open connections and takes no new ones.
func DrainLine(rs netip.AddrPort) string {
	return fmt.Sprintf(`^\s+-> %s\s+Masq\s+0\s`, regexp.QuoteMeta(rs.String()))
}

// AnyRSLine is the ipvsadm -Ln pattern of real server rs, whatever its
// forwarding and weight; "!"+AnyRSLine(rs) asserts it is gone.
func AnyRSLine(rs netip.AddrPort) string {
	return fmt.Sprintf(`^\s+-> %s\s`, regexp.QuoteMeta(rs.String()))
}

// VIPBound reports whether addr is on kube-ipvs' dummy interface.
func VIPBound(t testing.TB, addr netip.Addr) bool {
	out, _ := Exec(Node, "ip", "-o", "addr", "show", "dev", "kipvs0")
	return strings.Contains(out, " "+addr.String()+"/")
}

// WriteFile writes text to path or fails the test.
func WriteFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
