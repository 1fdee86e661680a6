package proxier

import (
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// Graceful termination. A TCP or SCTP real server whose endpoint left a
// Service is not deleted at once: with net.ipv4.vs.expire_nodest_conn=1
// that would reset its open connections. It is set to weight 0 (new
// connections avoid it, open ones go on) and deleted once the kernel counts
// no connection on it (ActiveConn and InActConn both 0) or DrainTimeout has
// passed, whichever comes first. Connection counts are read when the drain
// starts and at every full sync. A restarted agent finds such a real server
// at weight 0 and continues its drain, timed from its own start. UDP real
// servers are deleted at once; their conntrack entries go with them (see
// conntrackFlows).

// drainable reports whether real servers of a protocol are drained.
func drainable(p ipvs.Protocol) bool { return p == ipvs.TCP || p == ipvs.SCTP }

// drainReason says why a drain ended, for the log.
type drainReason string

const (
	drainBack    drainReason = "its endpoint is back"
	drainGone    drainReason = "it is no longer in the kernel"
	drainClosed  drainReason = "its connections are closed"
	drainTimeout drainReason = "the drain timeout passed"
)

// updateDrains decides, for each virtual server in keys, which real servers
// the kernel holds (current) that the desired fragments lack are kept
// draining at weight 0, and writes that into the desired state (and the
// keys it changed into sc), before planning. fresh says current's
// connection counts were just read; when they were not, the counts of a
// virtual server that has draining candidates are read now (one dump).
func (p *Proxier) updateDrains(current *State, keys []ipvs.ServiceKey, fresh bool, sc *Scope) {
	now := p.clock.Now()
	for _, k := range keys {
		want, wanted := p.want.wanted(k)
		since := p.drainSince[k]
		if !wanted || !drainable(k.Proto) || p.opts.DrainTimeout <= 0 {
			if len(since) > 0 || len(p.want.drains[k]) > 0 {
				delete(p.drainSince, k)
				p.want.setDrains(k, nil, sc)
			}
			continue
		}
		have := current.Servers[k].Dests
		candidates := false
		for _, d := range have {
			if _, ok := since[d.Addr]; !ok && !hasAddr(want.Dests, d.Addr) {
				candidates = true
			}
		}
		if !candidates && len(since) == 0 {
			continue
		}
		counts := have
		if !fresh {
			counts = p.readDests(k)
		}
		if since == nil {
			since = map[netip.AddrPort]time.Time{}
			p.drainSince[k] = since
		}
		for _, d := range have {
			if _, ok := since[d.Addr]; !ok && !hasAddr(want.Dests, d.Addr) {
				since[d.Addr] = now
				p.log.Info("draining real server", zap.Stringer("virtualServer", k), zap.Stringer("realServer", d.Addr),
					zap.Int("activeConns", countsOf(counts, d.Addr).ActiveConns), zap.Int("inactiveConns", countsOf(counts, d.Addr).InactiveConns))
			}
		}
		var keep []ipvs.Destination
		for _, addr := range sortedAddrPorts(since) {
			d, inKernel := findDest(have, addr)
			reason := drainReason("")
			switch {
			case hasAddr(want.Dests, addr):
				reason = drainBack
			case !inKernel:
				reason = drainGone
			case closed(counts, addr):
				reason = drainClosed
			case now.Sub(since[addr]) >= p.opts.DrainTimeout:
				reason = drainTimeout
			}
			if reason == "" {
				keep = append(keep, d)
				continue
			}
			p.log.Info("drain ended", zap.Stringer("virtualServer", k), zap.Stringer("realServer", addr),
				zap.String("because", string(reason)), zap.Duration("after", now.Sub(since[addr])))
			delete(since, addr)
		}
		if len(since) == 0 {
			delete(p.drainSince, k)
		}
		p.want.setDrains(k, keep, sc)
	}
}

// readDests reads the real servers of k for their connection counts; on
// failure (logged at debug: the next full sync reads them anyway) it
// returns nothing, which counts as "unknown".
func (p *Proxier) readDests(k ipvs.ServiceKey) []ipvs.Destination {
	dests, err := p.kernel.IPVS.ListDestinations(k)
	if err != nil {
		p.log.Debug("reading connection counts", zap.Stringer("virtualServer", k), zap.Error(err))
		return nil
	}
	return dests
}

// Draining returns the real servers being drained, by virtual server.
func (p *Proxier) Draining() map[ipvs.ServiceKey][]netip.AddrPort {
	out := map[ipvs.ServiceKey][]netip.AddrPort{}
	for k, since := range p.drainSince {
		out[k] = sortedAddrPorts(since)
	}
	return out
}

func hasAddr(dests []ipvs.Destination, a netip.AddrPort) bool {
	_, ok := findDest(dests, a)
	return ok
}

// findDest finds a real server in a list sorted by address.
func findDest(dests []ipvs.Destination, a netip.AddrPort) (ipvs.Destination, bool) {
	i, ok := slices.BinarySearchFunc(dests, a, func(d ipvs.Destination, a netip.AddrPort) int { return d.Addr.Compare(a) })
	if !ok {
		return ipvs.Destination{}, false
	}
	return dests[i], true
}

// closed reports whether the kernel listed real server a with no
// connection at all; not when it was not listed (counts unknown).
func closed(counts []ipvs.Destination, a netip.AddrPort) bool {
	d, ok := findDest(counts, a)
	return ok && d.Conns() == 0
}

func countsOf(dests []ipvs.Destination, a netip.AddrPort) ipvs.Destination {
	d, _ := findDest(dests, a)
	return d
}

func sortedAddrPorts(m map[netip.AddrPort]time.Time) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}
