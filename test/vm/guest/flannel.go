//go:build vmguest

package guest

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// The real Flannel beside kube-ipvs: flanneld (v0.28.10, built static by
// test/tools/build.sh; the e2e driver's initramfs carries it at
// FlanneldBin) runs on both nodes of the two-node bed the way
// kube-flannel.yml runs it, with its kube subnet manager against the
// host's apiserver, --ip-masq, and the vxlan backend. The bed leaves out
// its own routes between the nodes' pod CIDRs (WithoutPodRoutes): flanneld
// adds them, through its vxlan device flannel.1.
//
//	bed := guest.NewFlannelBed(t, api)     // br_netfilter, the bed, both Nodes with their podCIDR
//	fl := guest.StartFlannel(t, api, bed)  // flanneld on both nodes; routes via flannel.1
//	fl.Restart(t, bed.A)                   // SIGTERM, then the same command again
//	rx, tx := guest.FlannelStats(t, bed.A) // flannel.1's packet counters

// FlanneldBin is flanneld in the guest.
const FlanneldBin = vmrun.GuestFlanneld

// FlannelVersion is the release test/tools/flannel/go.mod pins, which
// `flanneld --version` prints.
const FlannelVersion = "v0.28.10"

// FlannelDevice is the vxlan device flanneld makes on each node (VNI 1,
// UDP port 8472), holding the node's pod CIDR's network address as a /32.
const FlannelDevice = "flannel.1"

// FlannelAnnotations is the prefix of the Node annotations flanneld's kube
// subnet manager writes (its default --kube-annotation-prefix).
const FlannelAnnotations = "flannel.alpha.coreos.com/"

// FlannelNetConf is the net-conf.json flanneld runs with: kube-flannel.yml's
// (iptables, not nftables), with the guest tests' cluster CIDR.
var FlannelNetConf = fmt.Sprintf(`{
  "Network": %q,
  "EnableNFTables": false,
  "Backend": {"Type": "vxlan"}
}
`, ClusterCIDR)

// FlannelWait bounds the waits for flanneld: its start (node informer,
// lease, about 20 iptables runs) and the other node's route.
const FlannelWait = 90 * time.Second

// NeedFlannel fails the test (never skips it) unless the guest has
// flanneld, statically linked, and it runs (`flanneld --version` prints
// FlannelVersion). Only the e2e driver's image carries it.
func NeedFlannel(t testing.TB) {
	t.Helper()
	if err := checkFlanneld(); err != nil {
		t.Fatalf("flanneld cannot run in the guest: %v; build it with test/tools/build.sh and run the test "+
			"with `go test -tags vmtest ./test/vm/e2e` (the image carries $KIPVS_CACHE/bin/flanneld only there)", err)
	}
}

func checkFlanneld() error {
	fi, err := os.Stat(FlanneldBin)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable (%v)", FlanneldBin, fi.Mode())
	}
	f, err := elf.Open(FlanneldBin)
	if err != nil {
		return fmt.Errorf("%s: %w", FlanneldBin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New(FlanneldBin + " is dynamically linked: the guest has no libc for it")
		}
	}
	out, err := Exec(Node, FlanneldBin, "--version")
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(out); got != FlannelVersion {
		return fmt.Errorf("%s --version printed %q, want %s", FlanneldBin, got, FlannelVersion)
	}
	return nil
}

// KubeletAnnotation is the annotation kubelet puts on the Node it
// registers (volumes.kubernetes.io/controller-managed-attach-detach).
// flanneld v0.28.10 writes its own into Node.metadata.annotations without
// checking that there are any (kubeSubnetManager.AcquireLease: "panic:
// assignment to entry in nil map"), which on a real cluster there always
// are.
const KubeletAnnotation = "volumes.kubernetes.io/controller-managed-attach-detach"

// NewFlannelBed is the two-node bed as Flannel needs it: without its own
// pod routes (WithoutPodRoutes), both Node objects in the apiserver with
// spec.podCIDR the bed's pod CIDRs (API.CreateNode; it fails if the
// apiserver holds another one) and kubelet's annotation
// (KubeletAnnotation), and br_netfilter loaded (loadBrNetfilter) with
// bridged frames still kept out of iptables in the underlay. At cleanup
// the Nodes lose flanneld's annotations (FlannelAnnotations) and
// kubelet's if it was added here.
func NewFlannelBed(t testing.TB, api *API) *Bed {
	t.Helper()
	NeedFlannel(t)
	loadBrNetfilter(t)
	bed := NewBed(t, WithoutPodRoutes())
	// br_netfilter hands bridged frames to iptables in every namespace
	// (net.bridge.* is per namespace); the underlay's bridge keeps what the
	// bed promises: bridged frames skip iptables.
	Run(t, bed.Underlay, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0",
		"net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	for _, n := range bed.Nodes() {
		node := api.CreateNode(t, n)
		if node.Spec.PodCIDR != n.PodCIDR.String() {
			t.Fatalf("Node %s has spec.podCIDR %q, but its pods are in %s: flanneld would route another range",
				n.Name, node.Spec.PodCIDR, n.PodCIDR)
		}
	}
	api.annotateNodes(t, bed.Nodes())
	return bed
}

// loadBrNetfilter loads br_netfilter (prepare.sh puts it in the tree but
// /init does not load it) unless it is loaded, and unloads it at cleanup
// if it loaded it. flanneld's iptables mode exits at start without
// /proc/sys/net/bridge/bridge-nf-call-iptables, which the module provides;
// the other tests run without it.
func loadBrNetfilter(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/sys/module/br_netfilter"); err == nil {
		return
	}
	Run(t, Node, "modprobe", "br_netfilter")
	t.Cleanup(func() {
		if _, err := Exec(Node, "rmmod", "br_netfilter"); err != nil {
			t.Errorf("unloading br_netfilter: %v", err)
		}
	})
}

// annotateNodes gives each node's Node kubelet's annotation
// (KubeletAnnotation) unless it has it, and at cleanup removes flanneld's
// annotations (FlannelAnnotations) and the one it added, so that the next
// test's flanneld starts afresh (it would reuse a stored VTEP MAC and
// public IP): the e2e driver's node-a outlives the test.
func (a *API) annotateNodes(t testing.TB, nodes []*BedNode) {
	t.Helper()
	added := map[string]bool{}
	t.Cleanup(func() {
		for _, n := range nodes {
			node, err := a.Client.CoreV1().Nodes().Get(apiCtx(t), n.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				t.Errorf("reading Node %s: %v", n.Name, err)
				continue
			}
			drop := map[string]any{}
			for k := range node.Annotations {
				if strings.HasPrefix(k, FlannelAnnotations) || k == KubeletAnnotation && added[n.Name] {
					drop[k] = nil
				}
			}
			if len(drop) > 0 {
				if err := a.annotate(t, n.Name, drop); err != nil {
					t.Errorf("removing flanneld's annotations from Node %s: %v", n.Name, err)
				}
			}
		}
	})
	for _, n := range nodes {
		node, err := a.Client.CoreV1().Nodes().Get(apiCtx(t), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading Node %s: %v", n.Name, err)
		}
		if _, ok := node.Annotations[KubeletAnnotation]; ok {
			continue
		}
		if err := a.annotate(t, n.Name, map[string]any{KubeletAnnotation: "true"}); err != nil {
			t.Fatalf("annotating Node %s as kubelet does: %v", n.Name, err)
		}
		added[n.Name] = true
	}
}

// annotate merge-patches Node name's annotations (a nil value removes one),
// like `kubectl annotate node NAME KEY=VALUE` (or `KEY-`).
func (a *API) annotate(t testing.TB, name string, annotations map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return err
	}
	_, err = a.Client.CoreV1().Nodes().Patch(apiCtx(t), name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// Flannel is flanneld on each node of a bed (StartFlannel).
type Flannel struct {
	bed   *Bed
	nodes map[*BedNode]*flanneld
}

// flanneld is one node's flanneld: its command and its current process.
type flanneld struct {
	node *BedNode
	args []string
	dir  string // net-conf.json, subnet.env, the kubeconfig
	proc *Proc
}

// StartFlannel runs flanneld on both nodes of bed (NewFlannelBed), each in
// its node's namespace, like
//
//	NODE_NAME=node-a flanneld --kube-subnet-mgr --kubeconfig-file K --iface 192.168.60.11 \
//	  --ip-masq --net-config-path DIR/net-conf.json --subnet-file DIR/subnet.env
//
// where K is the admin kubeconfig (flanneld needs get, list and watch on
// Nodes and patch on nodes/status) naming the node's relay to the
// apiserver (ForwardAPI). It waits until each says "flannel is ready", its
// subnet file holds the node's pod CIDR, and each node routes the other's
// pod CIDR through flannel.1 (WaitFlannelRoutes). The processes are
// stopped by PID at cleanup; what they made in the kernel (flannel.1, its
// routes, neighbours and FDB entries, the FLANNEL-* chains) goes with the
// bed's namespaces.
func StartFlannel(t testing.TB, api *API, bed *Bed) *Flannel {
	t.Helper()
	NeedFlannel(t)
	f := &Flannel{bed: bed, nodes: map[*BedNode]*flanneld{}}
	for _, n := range bed.Nodes() {
		dir := t.TempDir()
		WriteFile(t, filepath.Join(dir, "net-conf.json"), FlannelNetConf)
		kubeconfig := relayKubeconfig(t, AdminKubeconfig, n.ForwardAPI(t), n.Name+"-flanneld")
		fd := &flanneld{node: n, dir: dir, args: []string{
			"env", "NODE_NAME=" + n.Name, FlanneldBin,
			"--kube-subnet-mgr", "--kubeconfig-file", kubeconfig,
			"--iface", n.IP.String(), "--ip-masq",
			"--net-config-path", filepath.Join(dir, "net-conf.json"),
			"--subnet-file", filepath.Join(dir, "subnet.env"),
		}}
		f.nodes[n] = fd
		f.start(t, fd)
	}
	f.WaitRoutes(t)
	return f
}

// start runs fd's command (`env` execs flanneld, so the PID is
// flanneld's) and waits until it is ready and has written its subnet file.
func (f *Flannel) start(t testing.TB, fd *flanneld) {
	t.Helper()
	_ = os.Remove(filepath.Join(fd.dir, "subnet.env"))
	began := time.Now()
	fd.proc = Start(t, fd.node.NS, fd.args...)
	if err := fd.proc.WaitOutput("flannel is ready", FlannelWait); err != nil {
		t.Fatalf("flanneld on %s: %v", fd.node.Name, err)
	}
	env, err := os.ReadFile(filepath.Join(fd.dir, "subnet.env"))
	if err != nil {
		t.Fatalf("flanneld on %s is ready without a subnet file: %v", fd.node.Name, err)
	}
	want := netip.PrefixFrom(fd.node.PodCIDR.Addr().Next(), fd.node.PodCIDR.Bits())
	if !strings.Contains(string(env), "FLANNEL_SUBNET="+want.String()+"\n") {
		t.Fatalf("flanneld on %s wrote %s; want FLANNEL_SUBNET=%s, the node's pod CIDR", fd.node.Name, env, want)
	}
	t.Logf("flanneld on %s (pid %d) ready after %v: %s", fd.node.Name, fd.proc.PID(),
		time.Since(began).Round(100*time.Millisecond), strings.Join(strings.Fields(string(env)), " "))
}

// Proc is flanneld's current process on n.
func (f *Flannel) Proc(n *BedNode) *Proc { return f.nodes[n].proc }

// Restart stops flanneld on n by its PID (SIGTERM, as a DaemonSet's pod is
// stopped; flanneld exits cleanly and removes nothing from the kernel),
// runs the same command again and waits until it is ready and both nodes
// route through flannel.1 again.
func (f *Flannel) Restart(t testing.TB, n *BedNode) {
	t.Helper()
	fd := f.nodes[n]
	old := fd.proc
	old.Stop()
	_, err := old.Exited()
	t.Logf("flanneld on %s (pid %d) stopped (%v)", n.Name, old.PID(), err)
	f.start(t, fd)
	f.WaitRoutes(t)
}

// Check fails the test if a flanneld has exited or was refused by the
// apiserver.
func (f *Flannel) Check(t testing.TB) {
	t.Helper()
	for _, n := range f.bed.Nodes() {
		p := f.nodes[n].proc
		if done, err := p.Exited(); done {
			t.Errorf("flanneld on %s exited (%v):\n%s", n.Name, err, flannelTail(p.Output(), 40))
		}
		for _, bad := range []string{"forbidden", "Unauthorized"} {
			if strings.Contains(p.Output(), bad) {
				t.Errorf("flanneld on %s was refused by the apiserver (%q in its log):\n%s", n.Name, bad, flannelTail(p.Output(), 40))
			}
		}
	}
}

// WaitRoutes waits until each node of the bed routes the other's pod CIDR
// through flannel.1 (`ip route show 10.244.2.0/24` on node-a reads
// "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"), which flanneld
// adds once it has read the other node's lease from its Node's
// annotations; it returns each node's route.
func (f *Flannel) WaitRoutes(t testing.TB) map[*BedNode]string {
	t.Helper()
	routes := map[*BedNode]string{}
	deadline := time.Now().Add(FlannelWait)
	for _, pair := range [][2]*BedNode{{f.bed.A, f.bed.B}, {f.bed.B, f.bed.A}} {
		n, other := pair[0], pair[1]
		want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(other.PodCIDR.String()) + ` via ` +
			regexp.QuoteMeta(other.PodCIDR.Addr().String()) + ` dev ` + regexp.QuoteMeta(FlannelDevice) + ` `)
		for {
			out := Run(t, n.NS, "ip", "-4", "route", "show", other.PodCIDR.String())
			if want.MatchString(out) {
				routes[n] = strings.TrimSpace(out)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never routed %s through %s within %v: %q\nflanneld:\n%s", n.Name, other.PodCIDR,
					FlannelDevice, FlannelWait, out, flannelTail(f.nodes[n].proc.Output(), 30))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return routes
}

// FlannelStats are flannel.1's packet counters in n's namespace
// (/sys/class/net/flannel.1/statistics/{rx,tx}_packets; `ip netns exec`
// mounts the namespace's own sysfs).
func FlannelStats(t testing.TB, n *BedNode) (rx, tx uint64) {
	t.Helper()
	read := func(what string) uint64 {
		out := Run(t, n.NS, "cat", "/sys/class/net/"+FlannelDevice+"/statistics/"+what)
		v, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatalf("%s: %s of %s: %q", n.Name, what, FlannelDevice, out)
		}
		return v
	}
	return read("rx_packets"), read("tx_packets")
}

// FlannelAddr is the address flanneld put on flannel.1 in n's namespace:
// the network address of n's pod CIDR, as a /32 (what the node's traffic
// into the overlay is masqueraded to).
func FlannelAddr(t testing.TB, n *BedNode) netip.Addr {
	t.Helper()
	out := Run(t, n.NS, "ip", "-4", "-o", "addr", "show", "dev", FlannelDevice)
	m := regexp.MustCompile(`\binet (\S+)/32\b`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s: no /32 address on %s: %q", n.Name, FlannelDevice, out)
	}
	return netip.MustParseAddr(m[1])
}

// IPTablesLines is `iptables-save` (save names the program: iptables-save
// or ip6tables-save) in namespace ns reduced to the lines keep selects,
// each prefixed with its table ("nat: -A POSTROUTING …"), in their order:
// the part of the rules one owner wrote (KIPVSLine, FlannelLine), to be
// compared byte for byte across the other owner's restart.
func IPTablesLines(t testing.TB, ns, save string, keep func(line string) bool) string {
	t.Helper()
	var b strings.Builder
	table := ""
	for line := range strings.SplitSeq(Run(t, ns, save), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, "#"), line == "COMMIT":
		case keep(line):
			fmt.Fprintf(&b, "%s: %s\n", table, line)
		}
	}
	return b.String()
}

// KIPVSLine selects kube-ipvs' lines of iptables-save: those naming a
// KIPVS- chain or set.
func KIPVSLine(line string) bool { return strings.Contains(line, "KIPVS-") }

// FlannelLine selects flanneld's lines of iptables-save: its chains
// (FLANNEL-POSTRTG, FLANNEL-FWD) and rules (commented "flanneld masq",
// "flanneld forward").
func FlannelLine(line string) bool {
	return strings.Contains(line, "FLANNEL") || strings.Contains(line, "flanneld")
}

// flannelTail is the last n lines of s.
func flannelTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
