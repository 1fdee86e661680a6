package proxier

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// View is a read-only copy of what the proxier knows, and of the counters
// the kernel keeps, for `kube-ipvs show` and `kube-ipvs explain` (package
// inspect). It is plain data: nothing in it points into the proxier, and
// changing it changes nothing.
type View struct {
	// At is when the view was taken, on the proxier's clock.
	At       time.Time
	Family   v1.IPFamily
	NodeName string
	// Synced says a sync has read the kernel back and written it; before
	// that, Servers are what is wanted and nothing may be in the kernel.
	Synced bool
	DryRun bool
	// Build is the build configuration with the node-wide inputs as last
	// read: NodePortAddrs, NodeIPs, LocalAddrs.
	Build BuildConfig
	// RuleConfig and Rules are the constant netfilter configuration.
	RuleConfig RuleConfig
	Rules      Rules
	// Servers are the virtual servers kube-ipvs wants, sorted by key.
	Servers []ServerView
	// Entries are the members of kube-ipvs' sets and Addrs the addresses
	// bound on kipvs0, both sorted, as the kernel holds them as far as the
	// proxier knows (what took effect); before the first sync, what it
	// wants.
	Entries []SetEntry
	Addrs   []netip.Addr
	// Services are the Services of the snapshot, sorted by name.
	Services []ServiceView
	// Foreign are the virtual servers of Family in the kernel that are
	// not kube-ipvs' (no SetOwned record), sorted by key. kube-ipvs leaves
	// them alone.
	Foreign []ipvs.Service
	// HasStats says the kernel adapter reads traffic counters
	// (ipvs.StatsReader); without, every DestView.Stats is zero.
	HasStats bool
	// KernelErr, when not empty, says why the kernel's virtual servers or
	// counters could not be read; InKernel and the counts are then not
	// known.
	KernelErr string
}

// ServerView is one virtual server kube-ipvs wants.
type ServerView struct {
	Service ipvs.Service
	// Owner is the Service it is programmed for; Claimants the others
	// that want the same key, whose parts are not programmed.
	Owner     types.NamespacedName
	Claimants []types.NamespacedName
	// Entries are the set members that come with it (its kind's set,
	// EXTERNAL-LOCAL, SHORT-CIRCUIT, LB-FIREWALL, …), sorted.
	Entries []SetEntry
	// Dests are its wanted real servers, the draining ones at weight 0
	// included, sorted by address.
	Dests []DestView
	// InKernel says the kernel holds it as kube-ipvs'.
	InKernel bool
}

// DestView is one wanted real server: Destination is the wanted
// configuration with the kernel's connection counts, Stats its counters.
type DestView struct {
	ipvs.Destination
	Stats ipvs.Stats
	// DrainSince is when it was set to weight 0 to drain, its endpoint
	// having left the Service; zero when it is not draining.
	DrainSince time.Time
	// InKernel says the kernel lists it under its virtual server.
	InKernel bool
}

// ServiceView is one Service of the snapshot.
type ServiceView struct {
	Name types.NamespacedName
	// Service is a copy of the object.
	Service *v1.Service
	// Endpoints are its endpoints of Family, read from its EndpointSlices
	// as BuildService reads them (one per port and address), sorted by
	// port name, protocol and address.
	Endpoints []EndpointView
	// Skips are what BuildService did not program of it, and why.
	Skips []Skip
	// Failure is the last error of its kernel operations while they wait
	// for a retry; "" when none failed.
	Failure string
}

// EndpointView is one endpoint of one Service port.
type EndpointView struct {
	Port     string // the port's name, "" when unnamed
	Protocol v1.Protocol
	Addr     netip.AddrPort
	// Ready, Serving and Terminating are the endpoint's conditions,
	// defaulted as the API documents.
	Ready       bool
	Serving     bool
	Terminating bool
	// Node is the endpoint's nodeName; Pod its targetRef as
	// namespace/name when that is a Pod.
	Node string
	Pod  string
}

// View takes a View. The proxier's data is copied under viewMu's read lock,
// which Sync holds for writing, so the copy is of one moment between two
// syncs; the kernel's counters are read after, without the lock, so a
// view never holds a sync up for a kernel round trip. It changes nothing,
// in the proxier or in the kernel.
func (p *Proxier) View() *View {
	v, owned := p.copyView()
	p.readCounters(v, owned)
	return v
}

// copyView copies the proxier's data; owned are the keys of the virtual
// servers in the kernel that are kube-ipvs'.
func (p *Proxier) copyView() (*View, map[ipvs.ServiceKey]bool) {
	p.viewMu.RLock()
	defer p.viewMu.RUnlock()
	b := p.build
	b.NodePortAddrs, b.NodeIPs = slices.Clone(b.NodePortAddrs), slices.Clone(b.NodeIPs)
	b.LocalAddrs = maps.Clone(b.LocalAddrs)
	b.ExternalIPCIDRs, b.LoadBalancerCIDRs = slices.Clone(b.ExternalIPCIDRs), slices.Clone(b.LoadBalancerCIDRs)
	rc := p.opts.Rules
	rc.ClusterCIDRs = slices.Clone(rc.ClusterCIDRs)
	v := &View{
		At: p.clock.Now(), Family: p.opts.Build.Family, NodeName: p.opts.Build.NodeName,
		Synced: p.applied != nil, DryRun: p.opts.DryRun,
		Build: b, RuleConfig: rc, Rules: BuildRules(rc),
	}
	held := p.want.state
	if p.applied != nil {
		held = p.applied
	}
	v.Entries = slices.SortedFunc(maps.Keys(held.Entries), compareEntries)
	v.Addrs = slices.SortedFunc(maps.Keys(held.Addrs), netip.Addr.Compare)
	owned := make(map[ipvs.ServiceKey]bool, len(held.Servers))
	for k := range held.Servers {
		owned[k] = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(p.want.state.Servers), ipvs.ServiceKey.Compare) {
		v.Servers = append(v.Servers, p.serverView(k))
	}
	for _, name := range slices.SortedFunc(maps.Keys(p.services), compareNames) {
		v.Services = append(v.Services, p.serviceView(name))
	}
	return v, owned
}

// serverView copies one wanted virtual server.
func (p *Proxier) serverView(k ipvs.ServiceKey) ServerView {
	vs := p.want.state.Servers[k]
	sv := ServerView{Service: vs.Service}
	if claims := p.want.claims[k]; len(claims) > 0 {
		sv.Owner, sv.Claimants = claims[0], slices.Clone(claims[1:])
		sv.Entries = slices.Clone(p.want.part(claims[0], k).Entries)
	}
	for _, d := range vs.Dests {
		dv := DestView{Destination: ipvs.Destination{Addr: d.Addr, Weight: d.Weight, Forward: d.Forward}}
		dv.DrainSince = p.drainSince[k][d.Addr]
		sv.Dests = append(sv.Dests, dv)
	}
	return sv
}

// serviceView copies one Service, its endpoints and what BuildService
// skipped of it when the Service was last rebuilt.
func (p *Proxier) serviceView(name types.NamespacedName) ServiceView {
	svc := p.services[name]
	eps := p.slicesOf(name)
	out := ServiceView{Name: name, Service: svc.DeepCopy(), Skips: slices.Clone(p.skips[name]), Endpoints: endpointViews(eps, p.opts.Build.Family)}
	if r := p.failures[name]; r != nil && r.err != nil {
		out.Failure = r.err.Error()
	}
	return out
}

// endpointViews reads a Service's slices as BuildService does
// (collectEndpoints: one endpoint per port and address, a non-terminating
// copy winning), adding each endpoint's Pod from the slice it came from.
func endpointViews(eps []*discovery.EndpointSlice, family v1.IPFamily) []EndpointView {
	ignore := func(Reason, string, ...any) {}
	type ref struct {
		terminating bool
		pod         string
	}
	pods := map[netip.Addr][]ref{}
	for _, s := range eps {
		for _, ep := range s.Endpoints {
			a, ok := netip.Addr{}, len(ep.Addresses) > 0
			if ok {
				a, ok = parseIP(ep.Addresses[0])
			}
			if !ok || ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
				continue
			}
			r := ref{terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
				pod: types.NamespacedName{Namespace: cmp.Or(ep.TargetRef.Namespace, s.Namespace), Name: ep.TargetRef.Name}.String()}
			pods[a] = append(pods[a], r)
		}
	}
	var out []EndpointView
	for _, pe := range collectEndpoints(eps, family, ignore) {
		key := pe.key
		for _, e := range pe.list {
			ev := EndpointView{Port: key.name, Protocol: key.proto, Addr: e.addr, Ready: e.ready, Serving: e.serving,
				Terminating: e.terminating, Node: e.nodeName}
			refs := pods[e.addr.Addr()]
			if i := slices.IndexFunc(refs, func(r ref) bool { return r.terminating == e.terminating }); i >= 0 {
				ev.Pod = refs[i].pod
			} else if len(refs) > 0 {
				ev.Pod = refs[0].pod
			}
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b EndpointView) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol), a.Addr.Compare(b.Addr))
	})
	return out
}

// readCounters reads, without any lock of the proxier, which of v's
// virtual servers and real servers the kernel holds, their connection
// counts and traffic counters, and the foreign virtual servers. Reads
// only.
func (p *Proxier) readCounters(v *View, owned map[ipvs.ServiceKey]bool) {
	if p.kernel.IPVS == nil {
		v.KernelErr = "no IPVS adapter"
		return
	}
	listed, err := p.kernel.IPVS.ListServices()
	if err != nil {
		v.KernelErr = err.Error()
		return
	}
	in := map[ipvs.ServiceKey]bool{}
	for _, s := range listed {
		switch {
		case familyOf(s.Key.Addr) != v.Family:
		case owned[s.Key]:
			in[s.Key] = true
		default:
			v.Foreign = append(v.Foreign, s)
		}
	}
	stats, hasStats := p.kernel.IPVS.(ipvs.StatsReader)
	v.HasStats = hasStats
	for i := range v.Servers {
		sv := &v.Servers[i]
		if sv.InKernel = in[sv.Service.Key]; !sv.InKernel {
			continue
		}
		var got []ipvs.DestinationStats
		if hasStats {
			got, err = stats.ListDestinationStats(sv.Service.Key)
		} else {
			var dests []ipvs.Destination
			dests, err = p.kernel.IPVS.ListDestinations(sv.Service.Key)
			for _, d := range dests {
				got = append(got, ipvs.DestinationStats{Destination: d})
			}
		}
		if err != nil {
			v.KernelErr = err.Error()
			continue
		}
		for j := range sv.Dests {
			d := &sv.Dests[j]
			if i := slices.IndexFunc(got, func(k ipvs.DestinationStats) bool { return k.Addr == d.Addr }); i >= 0 {
				d.InKernel, d.Stats = true, got[i].Stats
				d.ActiveConns, d.InactiveConns = got[i].ActiveConns, got[i].InactiveConns
			}
		}
	}
}

// SetName is the name of a set of kube-ipvs in a family: base (SetVIP, …)
// for IPv4, base with "-6" for IPv6.
func SetName(base string, f v1.IPFamily) string { return setName(base, f) }
