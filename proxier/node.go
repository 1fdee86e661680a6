package proxier

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/healthcheck"
)

// Node-wide inputs: what every Service's fragment may depend on besides its
// own objects. They are the Node's addresses and the node's local
// addresses; when they change, every Service is rebuilt (its fragment
// compares equal when it does not depend on them, and then nothing is
// planned for it). A change to one Service still touches only that one.

// LocalAddrs lists the node's addresses on every interface but kipvs0
// (package netif).
type LocalAddrs interface {
	LocalAddrs(ipv6 bool) ([]netip.Addr, error)
}

// updateNodeInputs takes the recorded Node and, on a full sync or when an
// address changed, reads the local addresses again; it recomputes the
// node-wide part of the build configuration and reports whether it
// changed.
func (p *Proxier) updateNodeInputs(ch changes, full bool) bool {
	if ch.node == nil && !ch.addrs && !full {
		return false // nothing node-wide was recorded: an incremental sync stays per Service
	}
	if ch.node != nil {
		p.node = ch.node
	}
	if (full || ch.addrs) && p.kernel.Local != nil {
		local, err := p.kernel.Local.LocalAddrs(p.opts.Build.Family == v1.IPv6Protocol)
		if err != nil {
			// Keep the last good list; the next full sync reads again.
			p.log.Error("listing the node's addresses; keeping the previous ones", zap.Error(err))
		} else {
			p.local = local
		}
	}
	next := p.opts.Build
	next.NodeIPs = NodeIPs(p.node, next.Family)
	next.NodePortAddrs = NodePortAddrs(p.opts.NodePorts.Primary, p.opts.NodePorts.CIDRs, next.NodeIPs, p.local, next.Family)
	next.LocalAddrs = make(map[netip.Addr]bool, len(p.local))
	for _, a := range p.local {
		next.LocalAddrs[a] = true
	}
	changed := !slices.Equal(next.NodeIPs, p.build.NodeIPs) ||
		!slices.Equal(next.NodePortAddrs, p.build.NodePortAddrs) ||
		!maps.Equal(next.LocalAddrs, p.build.LocalAddrs)
	if changed {
		if !slices.Equal(next.NodePortAddrs, p.build.NodePortAddrs) {
			p.log.Info("NodePort addresses", zap.Stringers("addresses", next.NodePortAddrs))
			p.healthSync = true // health-check ports listen on them
		}
		p.build = next
	}
	return changed
}

// setHealth records a Service's health-check node port (nil: none).
func (p *Proxier) setHealth(name types.NamespacedName, h *Health) {
	old, had := p.health[name]
	switch {
	case h == nil && had:
		delete(p.health, name)
	case h != nil && (!had || old != *h):
		p.health[name] = *h
	default:
		return
	}
	p.healthSync = true
}

// syncHealth brings the health server in line with the Services' health-check
// node ports when they, or the addresses they listen on, changed, or when the
// last attempt failed. A port that cannot be opened (another process holds
// it) never fails the sync: the health server logs it, once per distinct
// error, and it is tried again at the next sync.
func (p *Proxier) syncHealth() {
	if p.opts.Health == nil || p.opts.DryRun || (!p.healthSync && !p.healthFailed) {
		return
	}
	p.healthSync = false
	var svcs []healthcheck.Service
	if len(p.build.NodePortAddrs) > 0 {
		svcs = make([]healthcheck.Service, 0, len(p.health))
		for name, h := range p.health {
			svcs = append(svcs, healthcheck.Service{Name: name, Port: h.Port, LocalEndpoints: h.LocalEndpoints})
		}
		slices.SortFunc(svcs, func(a, b healthcheck.Service) int {
			return cmp.Or(compareNames(a.Name, b.Name), cmp.Compare(a.Port, b.Port))
		})
	}
	p.healthFailed = p.opts.Health.Sync(p.build.NodePortAddrs, svcs) != nil
}
