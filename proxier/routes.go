package proxier

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/netif"
)

// The Service CIDRs of the configuration (BuildConfig.ServiceCIDRs) are
// accepted on the node by one local route each on kipvs0, made and
// repaired by the full sync: the ClusterIPs inside them need no address of
// their own, so that the kernel work of a new Service is its virtual
// server, its real servers and its set members, and does not grow with
// the number of Services (the kernel's address list does). A ClusterIP
// outside them, and every external and load-balancer IP, is bound as
// before.
//
// The kernel deletes a link's IPv4 routes with its last IPv4 address
// (fib_disable_ip), so while a route is wanted kipvs0 keeps an anchor: the
// network address of each IPv4 Service CIDR (10.96.0.0/32 for
// 10.96.0.0/12), which the apiserver never allocates and the route accepts
// anyway. The anchors are node-wide desired addresses (anchorName's
// fragment), bound before the routes are added.

// anchorName is the desired-state name of the anchors' fragment: no
// Service can have it (a namespaced object has a namespace).
var anchorName = types.NamespacedName{Name: "service CIDR anchors"}

// anchors are the addresses kipvs0 keeps for the routes of cidrs.
func anchors(cidrs []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range cidrs {
		if p.Addr().Is4() {
			out = append(out, p.Masked().Addr())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// bindAnchors binds the anchors current (the kernel, as just read) lacks,
// before addRoutes adds the routes they keep, and records them in current.
func (p *Proxier) bindAnchors(current *State) error {
	for _, a := range anchors(p.opts.Build.ServiceCIDRs) {
		if _, ok := current.Addrs[a]; ok {
			continue
		}
		if p.opts.DryRun {
			p.log.Info("dry-run: would run", zap.String("op", Op{Kind: OpBindAddr, Addr: a}.String()))
			continue
		}
		if err := p.kernel.Addrs.AddAddr(a); err != nil && !errors.Is(err, netif.ErrExists) {
			return err
		}
		current.Addrs[a] = struct{}{}
	}
	return nil
}

// addRoutes adds the local route of each configured Service CIDR the
// kernel lacks, and returns those kube-ipvs made on kipvs0 that are no
// longer configured: delRoutes removes them after the full sync bound
// their ClusterIPs. In dry-run mode it logs what it would add.
func (p *Proxier) addRoutes() (stale []netip.Prefix, err error) {
	have, err := p.kernel.Addrs.ListRoutes()
	if err != nil {
		return nil, fmt.Errorf("reading the Service CIDRs' local routes: %w", err)
	}
	want := p.opts.Build.ServiceCIDRs
	for _, r := range want {
		if slices.Contains(have, r) {
			continue
		}
		if p.opts.DryRun {
			p.log.Info("dry-run: would run", zap.String("op", routeOp("add", r)))
			continue
		}
		if err := p.kernel.Addrs.AddRoute(r); err != nil && !errors.Is(err, netif.ErrExists) {
			return nil, err
		}
		p.log.Info("rules changed", zap.String("op", routeOp("add", r)))
	}
	for _, r := range have {
		if familyOf(r.Addr()) == p.opts.Build.Family && !slices.Contains(want, r) {
			stale = append(stale, r)
		}
	}
	return stale, nil
}

// delRoutes removes the local routes of Service CIDRs no longer
// configured.
func (p *Proxier) delRoutes(stale []netip.Prefix) error {
	for _, r := range stale {
		if p.opts.DryRun {
			p.log.Info("dry-run: would run", zap.String("op", routeOp("del", r)))
			continue
		}
		if err := p.kernel.Addrs.DelRoute(r); err != nil && !errors.Is(err, netif.ErrNotFound) {
			return err
		}
		p.log.Info("rules changed", zap.String("op", routeOp("del", r)))
	}
	return nil
}

// routeOp renders a route change as the command an operator would type.
func routeOp(verb string, r netip.Prefix) string {
	return fmt.Sprintf("ip route %s local %s dev %s table local", verb, r, netif.DefaultLink)
}
