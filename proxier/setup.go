package proxier

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/iptables"
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

// Setup prepares the node: the dummy interface exists and is up, and the
// sysctls are set (written only where they differ). It is the explicit step
// constructors leave out.
func Setup(k Kernel, sc netif.Sysctl) error {
	if err := k.Addrs.EnsureLink(); err != nil {
		return fmt.Errorf("creating dummy interface: %w", err)
	}
	for _, s := range Sysctls {
		v, err := sc.Get(s.Key)
		if err == nil && v == s.Value {
			continue
		}
		if err := sc.Set(s.Key, s.Value); err != nil {
			return fmt.Errorf("setting sysctl %s=%s (%s): %w", s.Key, s.Value, s.Why, err)
		}
	}
	return nil
}

// Cleanup removes everything kube-ipvs made and nothing else: its virtual
// servers (those on its VIPs), the dummy interface with the VIPs, its jump
// rules, chains and ipsets. Missing pieces are fine; every other error is
// returned, all of them at once, after trying the rest.
func Cleanup(k Kernel, r Rules, family v1.IPFamily) error {
	var errs []error
	keep := func(err error, notFound error) {
		if err != nil && !errors.Is(err, notFound) {
			errs = append(errs, err)
		}
	}
	if cur, _, err := ReadState(k, family, nil); err != nil {
		errs = append(errs, err)
	} else {
		for key := range cur.Servers {
			keep(k.IPVS.DeleteService(key), ipvs.ErrNotFound)
		}
	}
	keep(k.Addrs.DeleteLink(), netif.ErrNotFound)
	for _, j := range r.Jumps {
		keep(k.IPTables.DeleteRule(j.Table, j.Chain, j.Spec), iptables.ErrNotFound)
	}
	for _, table := range []string{iptables.TableNAT, iptables.TableFilter} {
		for _, c := range r.Chains[table] {
			keep(k.IPTables.DeleteChain(table, c.Name), iptables.ErrNotFound)
		}
	}
	for _, s := range r.Sets {
		keep(k.Sets.DestroySet(s.Name), iptables.ErrNotFound)
	}
	return errors.Join(errs...)
}
