//go:build vmguest

package guest

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// The two-node bed: one VM holds two Kubernetes nodes, because IPVS,
// iptables and ipsets are per network namespace. Each node is a namespace
// with its own kube-ipvs, its pods hang off it as in AddPod, and an outside
// client sits beside the nodes on their underlay:
//
//	namespace  underlay: bridge br0 (ports node-a, node-b, external), no address
//	node-a     eth0 192.168.60.11/24, pods 10.244.1.0/24, 10.244.2.0/24 via 192.168.60.12
//	node-b     eth0 192.168.60.12/24, pods 10.244.2.0/24, 10.244.1.0/24 via 192.168.60.11
//	external   eth0 192.168.60.100/24: no route to any pod, only what RouteVia adds
//
// No namespace of the bed has a default route, so nothing leaves the VM. The
// bridge has a namespace of its own so the VM's initial namespace, which the
// single-node tests use as their node, stays as it was: the bed goes away
// with its namespaces.

// Names and addresses of the bed (192.168.60.0/24 is used by no other guest
// test; the pod CIDRs are inside ClusterCIDR, and since the bed's pods hang off
// the node namespaces, not the VM's, only their names must differ from
// other tests' pods).
const (
	UnderlayNS = "underlay" // holds the underlay bridge
	ExternalNS = "external" // the client outside the cluster
	underlayBr = "br0"
)

// BedWait bounds WaitIPVSIn. It is twice WaitIPVS's: two agents share the
// VM's one CPU, and an agent's first full sync takes 5-12 s there.
const BedWait = 30 * time.Second

var (
	// UnderlayPrefix is the nodes' network.
	UnderlayPrefix = netip.MustParsePrefix("192.168.60.0/24")
	// ExternalIP is the outside client's address, in no cluster CIDR.
	ExternalIP = netip.MustParseAddr("192.168.60.100")
)

// Bed is the two-node bed (NewBed).
type Bed struct {
	A, B       *BedNode
	External   string     // the outside client's namespace (ExternalNS)
	ExternalIP netip.Addr // its address on the underlay
	Underlay   string     // the namespace of the underlay bridge (UnderlayNS)
}

// BedNode is one node of the bed: a network namespace with lo, an eth0 on the
// underlay holding IP, net.ipv4.ip_forward=1, a route to the other node's pod
// CIDR via the other node's IP (unless WithoutPodRoutes), and pods in PodCIDR.
type BedNode struct {
	Name    string       // the Node's name, "node-a"; also --node-name
	NS      string       // its network namespace (the same as Name)
	IP      netip.Addr   // its underlay address, the Node's InternalIP
	PodCIDR netip.Prefix // its pods' range, spec.podCIDR; .1 is the pods' gateway

	lastPod netip.Addr          // the last pod address handed out
	checked map[testing.TB]bool // tests whose cleanup runs kube-ipvs --cleanup here
}

// BedPod is a pod of a bed node (BedNode.AddPod).
type BedPod struct {
	*Pod
	Node *BedNode
}

// BedOption changes how NewBed wires the bed.
type BedOption func(*bedOptions)

type bedOptions struct{ noPodRoutes bool }

// WithoutPodRoutes leaves out the nodes' routes to each other's pod CIDR
// (10.244.2.0/24 via 192.168.60.12 on node-a, and back), for a CNI that
// routes pods across nodes itself: Flannel through flannel.1 (StartFlannel).
func WithoutPodRoutes() BedOption { return func(o *bedOptions) { o.noPodRoutes = true } }

// NewBed builds the bed (see above) and removes all of it at cleanup: the
// namespaces go, and with them every link, address, route and rule in them.
func NewBed(t testing.TB, opts ...BedOption) *Bed {
	t.Helper()
	var o bedOptions
	for _, opt := range opts {
		opt(&o)
	}
	b := &Bed{
		A:          newBedNode("node-a", "192.168.60.11", "10.244.1.0/24"),
		B:          newBedNode("node-b", "192.168.60.12", "10.244.2.0/24"),
		External:   ExternalNS,
		ExternalIP: ExternalIP,
		Underlay:   UnderlayNS,
	}
	AddNetns(t, b.Underlay)
	Run(t, b.Underlay, "ip", "link", "add", underlayBr, "type", "bridge")
	Run(t, b.Underlay, "ip", "link", "set", underlayBr, "up")
	for _, n := range []*BedNode{b.A, b.B} {
		b.plug(t, n.NS, n.IP)
		Run(t, n.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	b.plug(t, b.External, b.ExternalIP)
	// A new namespace inherits the initial one's IPv4 settings, where AddPod
	// turns forwarding on: the outside client forwards nothing.
	Run(t, b.External, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	if !o.noPodRoutes {
		RouteVia(t, b.A.NS, b.B.PodCIDR, b.B.IP)
		RouteVia(t, b.B.NS, b.A.PodCIDR, b.A.IP)
	}
	return b
}

func newBedNode(name, ip, podCIDR string) *BedNode {
	cidr := netip.MustParsePrefix(podCIDR)
	return &BedNode{
		Name: name, NS: name, IP: netip.MustParseAddr(ip), PodCIDR: cidr,
		lastPod: cidr.Addr().Next(), checked: map[testing.TB]bool{},
	}
}

// plug makes namespace ns with an eth0 on the underlay bridge holding ip:
// `ip link add NS type veth peer name eth0 netns NS; ip link set NS master br0`
// in the underlay namespace.
func (b *Bed) plug(t testing.TB, ns string, ip netip.Addr) {
	t.Helper()
	AddNetns(t, ns)
	Run(t, b.Underlay, "ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
	Run(t, b.Underlay, "ip", "link", "set", ns, "master", underlayBr, "up")
	Run(t, ns, "ip", "addr", "add", netip.PrefixFrom(ip, UnderlayPrefix.Bits()).String(), "dev", "eth0")
	Run(t, ns, "ip", "link", "set", "eth0", "up")
}

// RouteVia adds a route to prefix via gateway via in namespace ns (`ip
// route add PREFIX via VIA`), e.g. the outside client's route to a
// LoadBalancer IP through a node, and deletes it at cleanup.
func RouteVia(t testing.TB, ns string, prefix netip.Prefix, via netip.Addr) {
	t.Helper()
	route := []string{"ip", "route", "add", prefix.String(), "via", via.String()}
	Run(t, ns, route...)
	t.Cleanup(func() {
		route[2] = "del"
		if _, err := Exec(ns, route...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// Nodes are both nodes, A first.
func (b *Bed) Nodes() []*BedNode { return []*BedNode{b.A, b.B} }

// NewObjects is an objects directory (NewObjects) holding both nodes' Node
// objects, as node-a.yaml and node-b.yaml; each agent sees only its own.
func (b *Bed) NewObjects(t testing.TB) *Objects {
	objs := NewObjects(t)
	for _, n := range b.Nodes() {
		objs.Put(n.Name, n.NodeObject())
	}
	return objs
}

// AddPod adds pod name on this node (AddPodOn) at the next free address of
// PodCIDR, from .2 on. Pod names must be unique across the VM: "a-pod1".
func (n *BedNode) AddPod(t testing.TB, name string) *BedPod {
	t.Helper()
	ip := n.lastPod.Next()
	if !n.PodCIDR.Contains(ip) {
		t.Fatalf("%s: no pod address left in %s", n.Name, n.PodCIDR)
	}
	n.lastPod = ip
	return &BedPod{Pod: AddPodOn(t, n.NS, name, ip), Node: n}
}

// NodeObject is the Node as kubelet registers it: named Name, with
// InternalIP IP, Hostname Name, spec.podCIDR PodCIDR and condition Ready.
func (n *BedNode) NodeObject() *v1.Node {
	return &v1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			v1.LabelHostname: n.Name, v1.LabelOSStable: "linux", v1.LabelArchStable: "amd64",
		}},
		Spec: v1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		Status: v1.NodeStatus{
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: n.IP.String()}, {Type: v1.NodeHostName, Address: n.Name},
			},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}},
		},
	}
}

// BedSlice is SliceObject with each endpoint on the node its pod hangs off.
func BedSlice(name, service string, ports []Port, pods ...*BedPod) *discovery.EndpointSlice {
	plain := make([]*Pod, len(pods))
	for i, p := range pods {
		plain[i] = p.Pod
	}
	s := SliceObject(name, service, ports, plain...)
	for i, p := range pods {
		s.Endpoints[i].NodeName = ptr(p.Node.Name)
	}
	return s
}

// StartAgent runs the real kube-ipvs in this node's namespace, fed from objs
// (Bed.NewObjects holds the Nodes), as StartAgent does on the VM's node but
// with --node-name Name, and waits until it runs. At cleanup, once it has
// stopped, CleanupAgent's check runs.
func (n *BedNode) StartAgent(t testing.TB, objs *Objects, extra ...string) *Proc {
	t.Helper()
	return n.startAgent(t, []string{"--objects-dir", objs.Dir}, extra)
}

func (n *BedNode) startAgent(t testing.TB, source, extra []string) *Proc {
	t.Helper()
	n.CleanupAgent(t)
	args := append([]string{AgentBin}, source...)
	args = append(args, "--node-name", n.Name, "--cluster-cidr", ClusterCIDR,
		"--min-sync-period", "100ms", "--sync-period", "2s", "--log-format", "console", "--log-level", "debug")
	p := Start(t, n.NS, append(args, extra...)...)
	if err := p.WaitOutput("kube-ipvs running", 30*time.Second); err != nil {
		t.Fatalf("agent on %s did not start: %v", n.Name, err)
	}
	return p
}

// CleanupAgent runs `kube-ipvs --cleanup` in this node's namespace at the end
// of the test and checks that nothing of kube-ipvs is left there (as
// CleanupAgent does on the VM's node). StartAgent calls it; calling it again
// in the same test does nothing.
func (n *BedNode) CleanupAgent(t testing.TB) {
	if n.checked[t] {
		return
	}
	n.checked[t] = true
	t.Cleanup(func() {
		if out, err := Exec(n.NS, AgentBin, "--cleanup", "--log-format", "console"); err != nil {
			t.Errorf("kube-ipvs --cleanup on %s: %v\n%s", n.Name, err, out)
		}
		if left := agentLeftovers(n.NS); left != "" {
			t.Errorf("kube-ipvs --cleanup on %s left:\n%s", n.Name, left)
		}
	})
}

// agentLeftovers lists what of kube-ipvs is in namespace ns: KIPVS- chains
// or rules, KIPVS- ipsets, the kipvs0 link.
func agentLeftovers(ns string) string {
	var left []string
	for _, c := range []struct {
		what string
		args []string
		left func(out string, err error) bool
	}{
		{"iptables", []string{"iptables-save"}, func(out string, _ error) bool { return strings.Contains(out, "KIPVS-") }},
		{"ipsets", []string{"ipset", "list", "-n"}, func(out string, _ error) bool { return strings.Contains(out, "KIPVS-") }},
		{"link", []string{"ip", "link", "show", "kipvs0"}, func(_ string, err error) bool { return err == nil }},
	} {
		if out, err := Exec(ns, c.args...); c.left(out, err) {
			left = append(left, c.what+":\n"+out)
		}
	}
	return strings.Join(left, "\n")
}

// IPVS is `ipvsadm -Ln` in this node's namespace.
func (n *BedNode) IPVS(t testing.TB) string { return Run(t, n.NS, "ipvsadm", "-Ln") }

// WaitIPVS is WaitIPVSIn on this node.
func (n *BedNode) WaitIPVS(t testing.TB, patterns ...string) string {
	t.Helper()
	return WaitIPVSIn(t, n.NS, patterns...)
}

// WaitIPVSIn is WaitIPVS in namespace ns (Node for the VM's): it polls
// `ipvsadm -Ln` there until every pattern matches (a pattern starting with
// "!" must not match), for up to BedWait, and returns the last output.
func WaitIPVSIn(t testing.TB, ns string, patterns ...string) string {
	t.Helper()
	deadline := time.Now().Add(BedWait)
	for {
		out := Run(t, ns, "ipvsadm", "-Ln")
		bad := unmatched(out, patterns)
		if bad == "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipvsadm -Ln in %q never matched %q within %v:\n%s", ns, bad, BedWait, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmatched is the first pattern out does not satisfy (see WaitIPVSIn), or "".
func unmatched(out string, patterns []string) string {
	for _, p := range patterns {
		negated := strings.HasPrefix(p, "!")
		if regexp.MustCompile(`(?m)`+strings.TrimPrefix(p, "!")).MatchString(out) == negated {
			return p
		}
	}
	return ""
}

// String reads like "node-a (192.168.60.11, pods 10.244.1.0/24)".
func (n *BedNode) String() string {
	return fmt.Sprintf("%s (%s, pods %s)", n.Name, n.IP, n.PodCIDR)
}

// The bed against the host's apiserver (the e2e suite): node namespaces
// have no route out, so a relay in the test process carries each agent's
// connections to the guestfwd address from the VM's initial namespace.

// ForwardAPI relays connections made inside this node's namespace to the
// host's apiserver (HostForward, 10.0.2.100:PORT); it returns the loopback
// address the relay listens on there. It fails the test when the guest was
// given no apiserver (see NeedAPI).
func (n *BedNode) ForwardAPI(t testing.TB) netip.AddrPort {
	t.Helper()
	target, ok := HostForward()
	if !ok {
		t.Fatalf("%s: the guest has no guestfwd to an apiserver: run this under test/vm/e2e", n.Name)
	}
	return Forward(t, n.NS, target)
}

// StartAPIAgent runs the real kube-ipvs in this node's namespace against the
// host's apiserver, as StartAPIAgent does on the VM's node: with the
// kube-ipvs ServiceAccount's token, through a relay (ForwardAPI). Its
// kubeconfig names the relay, https://127.0.0.1:PORT, with tls-server-name
// 10.0.2.100, the address the serving certificate holds. The Node named
// Name must exist for the agent to see its addresses (API.CreateNode).
func (n *BedNode) StartAPIAgent(t testing.TB, extra ...string) *Proc {
	t.Helper()
	kubeconfig := relayKubeconfig(t, AgentKubeconfig, n.ForwardAPI(t), n.Name)
	return n.startAgent(t, []string{"--kubeconfig", kubeconfig}, extra)
}

// CreateNode makes n's Node (NodeObject) in the apiserver, as kubelet
// registers it, and removes it at cleanup. The e2e driver's own Node node-a
// (the VM's initial namespace) is taken over instead: its labels and
// status become the bed's, its spec.podCIDR too if it had none, and at
// cleanup labels and status are given back (the apiserver does not let a
// set podCIDR change; the bed's 10.244.1.0/24 is what the VM's pods use).
func (a *API) CreateNode(t testing.TB, n *BedNode) *v1.Node {
	t.Helper()
	nodes := a.Client.CoreV1().Nodes()
	want := n.NodeObject()
	want.TypeMeta = metav1.TypeMeta{}
	old, err := nodes.Get(apiCtx(t), n.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		created, err := nodes.Create(apiCtx(t), want, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating Node %s: %v", n.Name, err)
		}
		t.Cleanup(func() {
			if err := nodes.Delete(apiCtx(t), n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting Node %s: %v", n.Name, err)
			}
		})
		return created
	}
	if err != nil {
		t.Fatalf("reading Node %s: %v", n.Name, err)
	}
	t.Cleanup(func() {
		if _, err := a.setNode(t, old.Name, old.Labels, old.Status); err != nil {
			t.Errorf("giving Node %s back: %v", old.Name, err)
		}
	})
	got, err := a.setNode(t, n.Name, want.Labels, want.Status, want.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("taking Node %s over: %v", n.Name, err)
	}
	return got
}

// setNode writes labels and status into the current Node name, and podCIDR
// when the Node has none.
func (a *API) setNode(t testing.TB, name string, labels map[string]string, status v1.NodeStatus, podCIDR ...string) (*v1.Node, error) {
	nodes := a.Client.CoreV1().Nodes()
	cur, err := nodes.Get(apiCtx(t), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	cur.Labels = labels
	if len(podCIDR) > 0 && cur.Spec.PodCIDR == "" {
		cur.Spec.PodCIDR, cur.Spec.PodCIDRs = podCIDR[0], podCIDR
	}
	if cur, err = nodes.Update(apiCtx(t), cur, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	cur.Status = status
	return nodes.UpdateStatus(apiCtx(t), cur, metav1.UpdateOptions{})
}

// Forward relays TCP connections made to the returned address, 127.0.0.1
// and a free port in namespace ns, to target, each dialled from the VM's
// initial namespace (like `socat TCP-LISTEN:P,fork TCP:TARGET` with the
// listening socket in ns); bytes are copied both ways and half-closes
// passed on. The listener and every open connection are closed at cleanup.
func Forward(t testing.TB, ns string, target netip.AddrPort) netip.AddrPort {
	t.Helper()
	var l net.Listener
	err := InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("relay listener in %q: %v", ns, err)
	}
	r := &relay{l: l, target: target, open: map[net.Conn]bool{}}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// relay is one Forward.
type relay struct {
	l      net.Listener
	target netip.AddrPort
	wg     sync.WaitGroup
	mu     sync.Mutex
	open   map[net.Conn]bool // nil once closed
}

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return // closed
		}
		r.wg.Add(1)
		go r.join(c)
	}
}

// track records c as open, or closes it and reports false once the relay is closed.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		c.Close()
		return false
	}
	r.open[c] = true
	return true
}

func (r *relay) forget(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(r.open, c)
	}
}

// join dials the target for the accepted connection c and copies both ways
// until both directions are done.
func (r *relay) join(c net.Conn) {
	defer r.wg.Done()
	if !r.track(c) {
		return
	}
	up, err := net.DialTimeout("tcp", r.target.String(), 10*time.Second)
	if err != nil || !r.track(up) {
		r.forget(c)
		return
	}
	defer r.forget(c, up)
	done := make(chan struct{})
	go func() {
		pipe(up, c)
		close(done)
	}()
	pipe(c, up)
	<-done
}

// pipe copies from src to dst until src ends, then half-closes dst.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// close stops accepting, closes every open connection and waits for the
// relay's goroutines.
func (r *relay) close() {
	r.l.Close()
	r.mu.Lock()
	for c := range r.open {
		c.Close()
	}
	r.open = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// relayKubeconfig writes a copy of kubeconfig from whose clusters name the
// relay at addr (https://ADDR) and keep verifying the apiserver's
// certificate for the address they named (tls-server-name), into the
// test's temporary directory; it returns the path.
func relayKubeconfig(t testing.TB, from string, addr netip.AddrPort, name string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		t.Fatalf("reading %s: %v", from, err)
	}
	for cname, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatalf("%s: cluster %s: server %q: %v", from, cname, c.Server, err)
		}
		if c.TLSServerName == "" {
			c.TLSServerName = u.Hostname()
		}
		c.Server = "https://" + addr.String()
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
