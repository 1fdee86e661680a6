package proxier

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/netif"
)

// Sysctl is a kernel setting kube-ipvs needs, and why.
type Sysctl struct {
	Key, Value, Why string
}

// Sysctls are the settings Setup writes (IPv4), like
// `sysctl -w net.ipv4.vs.conntrack=1`. Cleanup leaves them: other
// software may rely on them too.
var Sysctls = []Sysctl{
	{"net/ipv4/vs/conntrack", "1", "netfilter tracks IPVS connections, so they can be masqueraded"},
	{"net/ipv4/vs/expire_nodest_conn", "1", "connections to a removed real server are dropped at once instead of hanging"},
	{"net/ipv4/vs/expire_quiescent_template", "1", "client-IP affinity to a removed real server ends"},
	{"net/ipv4/ip_forward", "1", "the node forwards traffic to pods"},
}

// StrictARPSysctls are what Setup writes with SetupOptions.StrictARP, the
// same as kube-proxy's ipvs.strictARP, like
// `sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2`.
// Without it they are not read or written; Cleanup leaves them either way.
var StrictARPSysctls = []Sysctl{
	{"net/ipv4/conf/all/arp_ignore", "1",
		"ARP is answered only for an address of the interface asked on, so no node answers for the Service addresses on the dummy interface (ipvs.strictARP)"},
	{"net/ipv4/conf/all/arp_announce", "2",
		"ARP requests name the outgoing interface's own address, never a Service address of the dummy interface (ipvs.strictARP)"},
}

// SetupOptions are the node-wide choices of Setup that come from the
// configuration.
type SetupOptions struct {
	// StrictARP writes StrictARPSysctls, so that the VIPs bound on the
	// dummy interface are neither answered nor announced by ARP: with
	// MetalLB in L2 mode only the node MetalLB elects answers for a
	// LoadBalancer IP. config's ipvs.strictARP.
	StrictARP bool
}

// Keys Setup reads or writes besides Sysctls.
const (
	sysctlOSRelease     = "kernel/osrelease"
	sysctlConnReuseMode = "net/ipv4/vs/conn_reuse_mode"
	sysctlBridgeNF      = "net/bridge/bridge-nf-call-iptables"
)

// Setup prepares the node: the dummy interface exists and is up, and the
// sysctls are set (written only where they differ). On kernels from 4.1 to
// 5.8 it also sets net.ipv4.vs.conn_reuse_mode=0, as kube-proxy does: there
// a client reusing a source port of a closed connection waits a second per
// SYN (kubernetes#81775); 5.9 fixed that, and the value is left as it is.
// It warns when bridged traffic bypasses iptables (br_netfilter). With
// o.StrictARP it also sets StrictARPSysctls. It is the explicit step
// constructors leave out.
func Setup(log *zap.Logger, k Kernel, sc netif.Sysctl, o SetupOptions) error {
	if err := k.Addrs.EnsureLink(); err != nil {
		return err
	}
	want := Sysctls
	if o.StrictARP {
		want = slices.Concat(Sysctls, StrictARPSysctls)
	}
	for _, s := range want {
		if err := ensureSysctl(sc, s); err != nil {
			return err
		}
	}
	if err := setConnReuseMode(log, sc); err != nil {
		return err
	}
	if v, err := sc.Get(sysctlBridgeNF); err != nil || v != "1" {
		log.Warn("net.bridge.bridge-nf-call-iptables is not 1 (or br_netfilter is not loaded): with a bridge CNI, "+
			"a pod's reply to a pod on the same bridge skips netfilter and IPVS, and Service connections between "+
			"pods of one node fail; `modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1` "+
			"(not needed with a routed CNI)", zap.String("value", v), zap.NamedError("reading", err))
	}
	return nil
}

func ensureSysctl(sc netif.Sysctl, s Sysctl) error {
	v, err := sc.Get(s.Key)
	if err == nil && v == s.Value {
		return nil
	}
	if err := sc.Set(s.Key, s.Value); err != nil {
		return fmt.Errorf("%w (kube-ipvs needs it: %s)", err, s.Why)
	}
	return nil
}

// setConnReuseMode handles net.ipv4.vs.conn_reuse_mode by kernel version,
// logging what it did either way.
func setConnReuseMode(log *zap.Logger, sc netif.Sysctl) error {
	release, err := sc.Get(sysctlOSRelease)
	major, minor, ok := kernelVersion(release)
	switch {
	case err != nil || !ok:
		log.Warn("cannot read the kernel version; net.ipv4.vs.conn_reuse_mode left as it is",
			zap.String("release", release), zap.NamedError("reading", err))
	case major < 4 || (major == 4 && minor < 1):
		log.Error("net.ipv4.vs.conn_reuse_mode needs Linux 4.1 or later; left as it is: "+
			"a client reusing a port may wait a second per connection", zap.String("kernel", release))
	case major > 5 || (major == 5 && minor >= 9):
		log.Info("net.ipv4.vs.conn_reuse_mode left as it is: this kernel (5.9 or later) reuses ports without delay",
			zap.String("kernel", release))
	default:
		s := Sysctl{sysctlConnReuseMode, "0", "kernels before 5.9 delay a reused client port by a second (kubernetes#81775)"}
		if err := ensureSysctl(sc, s); err != nil {
			return err
		}
		log.Info("net.ipv4.vs.conn_reuse_mode set to 0: kernels before 5.9 delay a reused client port by a second",
			zap.String("kernel", release))
	}
	return nil
}

// kernelVersion reads major and minor from a release such as
// "6.1.0-57-cloud-amd64" or "5.4.17".
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimSpace(release), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorDigits := strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	minor, err2 := strconv.Atoi(minorDigits)
	return major, minor, err1 == nil && err2 == nil
}

// Cleanup removes everything kube-ipvs made and nothing else: the virtual
// servers its SetOwned and SetOwnedMark records name, the dummy interface
// with the VIPs and the Service CIDRs' local routes, and every chain and ipset (of family) whose name starts
// with Prefix, with the jumps to those chains, whatever configuration or
// version made them (r only says which sets hold the records). A virtual
// server made by anyone else, on any address, stays. Missing pieces are
// fine; every other error is returned, all of them at once, after trying
// the rest. When a virtual server cannot be deleted the record is kept,
// so a later cleanup still knows it. A nil k.IPVS (a kernel without IPVS
// loaded) holds no virtual server.
func Cleanup(k Kernel, r Rules, family v1.IPFamily) error {
	var errs []error
	keep := func(err error, notFound error) bool {
		if err != nil && !errors.Is(err, notFound) {
			errs = append(errs, err)
			return false
		}
		return true
	}
	recordDone := true
	if k.IPVS == nil {
		// Nothing to read or delete; the records go with the other sets.
	} else if cur, _, err := ReadState(k, family, r.Sets, nil); err != nil {
		errs = append(errs, err)
		recordDone = false
	} else {
		for key := range cur.Servers {
			recordDone = keep(k.IPVS.DeleteService(key), ipvs.ErrNotFound) && recordDone
		}
	}
	keep(k.Addrs.DeleteLink(), netif.ErrNotFound)
	left, err := everything(k, family)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	records := func(s string) bool {
		return !recordDone && (s == setName(SetOwned, family) || s == setName(SetOwnedMark, family))
	}
	if _, err := left.remove(k.IPTables, k.Sets, records); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CleanupPlan lists, as the commands an operator would type, what Cleanup
// would remove now, reading the kernel and writing nothing (--cleanup in
// dry-run mode). Without IPVS (k.IPVS nil) no virtual server is listed.
func CleanupPlan(k Kernel, r Rules, family v1.IPFamily) ([]string, error) {
	var plan []string
	if k.IPVS != nil {
		cur, _, err := ReadState(k, family, r.Sets, nil)
		if err != nil {
			return nil, err
		}
		for _, key := range slices.SortedFunc(maps.Keys(cur.Servers), ipvs.ServiceKey.Compare) {
			plan = append(plan, Op{Kind: OpDelService, Service: ipvs.Service{Key: key}}.String())
		}
	}
	addrs, err := k.Addrs.ListAddrs()
	if err != nil {
		return nil, err
	}
	routes, err := k.Addrs.ListRoutes()
	if err != nil {
		return nil, err
	}
	// The interface is deleted whether it has addresses or not; without
	// any, the read cannot tell whether it exists.
	switch {
	case len(routes) > 0:
		plan = append(plan, fmt.Sprintf("ip link del %s (with its %d addresses and %d local routes)", netif.DefaultLink, len(addrs), len(routes)))
	case len(addrs) > 0:
		plan = append(plan, fmt.Sprintf("ip link del %s (with its %d addresses)", netif.DefaultLink, len(addrs)))
	default:
		plan = append(plan, fmt.Sprintf("ip link del %s (if it exists; it holds no address)", netif.DefaultLink))
	}
	left, err := everything(k, family)
	if err != nil {
		return nil, err
	}
	plan = append(plan, left.plan()...)
	return plan, nil
}

// everything is all of kube-ipvs' netfilter state of family that the
// kernel holds: what Cleanup removes.
func everything(k Kernel, family v1.IPFamily) (leftovers, error) {
	none := Rules{Family: family}
	saved, err := saveTables(k.IPTables, none)
	if err != nil {
		return leftovers{}, err
	}
	names, err := k.Sets.ListSets()
	if err != nil {
		return leftovers{}, err
	}
	return findLeftovers(saved, none, names), nil
}
