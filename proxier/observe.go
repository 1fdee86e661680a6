package proxier

import (
	"slices"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// Metrics hears what a Proxier does, for its Prometheus metrics (package
// metrics implements it with kube-proxy's names). ServiceChanged and
// SliceChanged are called from the event handlers, the rest from Sync;
// none may block. Names and reasons are plain strings so that package
// metrics needs nothing of this one.
type Metrics interface {
	// ServiceChanged: a Service event was recorded; pending Services now
	// wait for a sync.
	ServiceChanged(pending int)
	// SliceChanged: an EndpointSlice event was recorded; pending slices
	// now wait for a sync.
	SliceChanged(pending int)
	// ChangesTaken: a sync took every pending change.
	ChangesTaken()
	// Programmed: the endpoint changes made at triggers (the
	// last-change-trigger-time of their EndpointSlices) are in the kernel
	// at at.
	Programmed(at time.Time, triggers []time.Time)
	// Applied: n kernel operations of kind op ran; err is nil when they
	// took effect.
	Applied(op string, err error, n int)
	// Skipped: input was not programmed, for reason (a Reason).
	Skipped(reason string)
	// Tallied gives the proxier's counts after a sync.
	Tallied(t Tallies)
}

// Tallies are the proxier's counts after a sync.
type Tallies struct {
	// NoLocalInternal and NoLocalExternal count the Services whose
	// internal or external traffic policy is Local and that have endpoints,
	// none of them on this node (kube-proxy's
	// sync_proxy_rules_no_local_endpoints_total).
	NoLocalInternal, NoLocalExternal int
	// Draining counts the real servers kept at weight 0 for their
	// connections.
	Draining int
	// Failing counts the Services whose operations wait for a retry.
	Failing int
}

// NoLocal says which Local traffic policies of a Service have endpoints
// but none on this node.
type NoLocal struct{ Internal, External bool }

// nopMetrics is the Metrics of a proxier that has none.
type nopMetrics struct{}

func (nopMetrics) ServiceChanged(int)                {}
func (nopMetrics) SliceChanged(int)                  {}
func (nopMetrics) ChangesTaken()                     {}
func (nopMetrics) Programmed(time.Time, []time.Time) {}
func (nopMetrics) Applied(string, error, int)        {}
func (nopMetrics) Skipped(string)                    {}
func (nopMetrics) Tallied(Tallies)                   {}

// parseTrigger is the endpoints.kubernetes.io/last-change-trigger-time
// of a slice, zero when it is not set or not well formed.
func parseTrigger(s *discovery.EndpointSlice) time.Time {
	v, ok := s.Annotations[v1.EndpointsLastChangeTriggerTime]
	if !ok {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// programmed reports the endpoint changes that are now in the kernel:
// those of every Service whose operations all took effect. A Service that
// waits for a retry keeps its trigger times until it is programmed.
func (p *Proxier) programmed() {
	if len(p.triggers) == 0 {
		return
	}
	now := p.clock.Now()
	for name, ts := range p.triggers {
		if p.failures[name] != nil {
			continue
		}
		p.metrics.Programmed(now, ts)
		delete(p.triggers, name)
	}
}

// tally reports the proxier's counts.
func (p *Proxier) tally() {
	t := Tallies{Failing: len(p.failures)}
	for _, n := range p.noLocal {
		if n.Internal {
			t.NoLocalInternal++
		}
		if n.External {
			t.NoLocalExternal++
		}
	}
	for _, d := range p.drainSince {
		t.Draining += len(d)
	}
	p.metrics.Tallied(t)
}

// setNoLocal records a Service's NoLocal (the zero value: none).
func (p *Proxier) setNoLocal(name types.NamespacedName, n NoLocal) {
	if n == (NoLocal{}) {
		delete(p.noLocal, name)
	} else {
		p.noLocal[name] = n
	}
}

// Name is the op's kind as a metric label: add_entry, bind_addr,
// add_service, update_service, add_real_server, update_real_server,
// del_real_server, del_service, unbind_addr, del_entry.
func (k OpKind) Name() string {
	switch k {
	case OpAddEntry:
		return "add_entry"
	case OpBindAddr:
		return "bind_addr"
	case OpAddService:
		return "add_service"
	case OpUpdateService:
		return "update_service"
	case OpAddDest:
		return "add_real_server"
	case OpUpdateDest:
		return "update_real_server"
	case OpDelDest:
		return "del_real_server"
	case OpDelService:
		return "del_service"
	case OpUnbindAddr:
		return "unbind_addr"
	case OpDelEntry:
		return "del_entry"
	}
	return "unknown"
}

// takeTriggers adds the trigger times a sync took to those not yet
// programmed; nil for a Service drops its times (one of its slices was
// deleted).
func (p *Proxier) takeTriggers(taken map[types.NamespacedName][]time.Time) {
	for name, ts := range taken {
		if ts == nil {
			delete(p.triggers, name)
			continue
		}
		p.triggers[name] = append(p.triggers[name], ts...)
	}
}

// logDryRun logs, in dry-run mode, the operations that would run. A full
// sync plans against the kernel, which dry-run never changes, so it finds
// again every operation logged before: only those not logged yet are,
// and what it plans becomes the set logged. An incremental sync plans a
// change against the pretend state: all of it is logged.
func (p *Proxier) logDryRun(ops []Op) {
	if p.dryPlanned == nil {
		p.dryPlanned = map[string]struct{}{}
	}
	planned := p.dryPlanned
	if p.dryFull {
		planned = p.pass.dryPlanned // what the pass logged, kept at its end
	}
	for _, o := range ops {
		s := o.String()
		if _, logged := p.dryPlanned[s]; !logged || !p.dryFull {
			p.log.Info("dry-run", zap.String("op", s))
		}
		planned[s] = struct{}{}
	}
	if !p.dryFull {
		p.dryPlanned = planned
	}
}

// ServerOwner names the Service and port a virtual server is programmed
// for, for the per-virtual-server metrics.
type ServerOwner struct {
	Key     ipvs.ServiceKey
	Service types.NamespacedName
	// Port is the Service port's name: the port whose port (or, on a node
	// address, nodePort) and protocol are the key's; "" when it has none,
	// and for a short circuit, which serves one port on several addresses.
	Port string
}

// ServerOwners lists the owner of every virtual server kube-ipvs wants.
// It reads under the view lock and copies no object, so a scrape holds a
// sync up for one pass over the keys at most.
func (p *Proxier) ServerOwners() []ServerOwner {
	p.viewMu.RLock()
	defer p.viewMu.RUnlock()
	out := make([]ServerOwner, 0, len(p.want.claims))
	for k, claims := range p.want.claims {
		if len(claims) == 0 {
			continue
		}
		out = append(out, ServerOwner{Key: k, Service: claims[0], Port: portName(p.services[claims[0]], k)})
	}
	return out
}

// portName is the name of svc's port that virtual server k serves, as
// ServerOwner.Port says: by port on one of the Service's own addresses
// (ClusterIP, external and load-balancer IPs), by nodePort on the others.
func portName(svc *v1.Service, k ipvs.ServiceKey) string {
	if svc == nil || k.IsMark() {
		return ""
	}
	addr := k.Addr.String()
	own := slices.Contains(svc.Spec.ClusterIPs, addr) || svc.Spec.ClusterIP == addr || slices.Contains(svc.Spec.ExternalIPs, addr) ||
		slices.ContainsFunc(svc.Status.LoadBalancer.Ingress, func(i v1.LoadBalancerIngress) bool { return i.IP == addr })
	for _, sp := range svc.Spec.Ports {
		port := sp.NodePort
		if own {
			port = sp.Port
		}
		if proto, ok := protocol(sp.Protocol); ok && proto == k.Proto && port > 0 && int(port) == int(k.Port) {
			return sp.Name
		}
	}
	return ""
}
