package ipvs

import "net/netip"

// Stats are the traffic counters the kernel keeps for a real server since
// it was added, like the Conns, InPkts, OutPkts, InBytes and OutBytes
// columns of `ipvsadm -Ln --stats`: the connections scheduled to it and
// the packets and bytes IPVS passed each way.
type Stats struct {
	Conns      uint64
	PacketsIn  uint64
	PacketsOut uint64
	BytesIn    uint64
	BytesOut   uint64
}

// DestinationStats is a real server as the kernel lists it, connection
// counts included, with its traffic counters.
type DestinationStats struct {
	Destination
	Stats Stats
}

// StatsReader reads the traffic counters of real servers. It is apart from
// Interface because only displays need it (`kube-ipvs show`): nothing is
// decided on it. The Kernel and the Fake implement it.
type StatsReader interface {
	// ListDestinationStats returns the real servers of one virtual server
	// with their counters, sorted by address, like
	// `ipvsadm -Ln --stats -t VIP:PORT`; ErrNotFound if the virtual server
	// does not exist. It is one kernel round trip, as ListDestinations.
	ListDestinationStats(ServiceKey) ([]DestinationStats, error)
}

var (
	_ StatsReader = (*Fake)(nil)
	_ StatsReader = (*Kernel)(nil)
)

// ListDestinationStats returns the real servers of a virtual server with
// the counters SetStats gave them (zero for the others); ErrNotFound if the
// virtual server does not exist. It is counted and fails as
// ListDestinations (FailOn MethodListDestinations).
func (f *Fake) ListDestinationStats(key ServiceKey) ([]DestinationStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.listLocked(key)
	if err != nil {
		return nil, err
	}
	dests := destsOf(fs)
	out := make([]DestinationStats, len(dests))
	for i, d := range dests {
		out[i] = DestinationStats{Destination: d, Stats: fs.stats[d.Addr]}
	}
	return out, nil
}

// SetStats sets the traffic counters the kernel would report for a real
// server, as if traffic had gone through it; ErrNotFound if there is no
// such real server. Deleting the real server, or adding it again, resets
// them. It is not counted as a call.
func (f *Fake) SetStats(key ServiceKey, addr netip.AddrPort, s Stats) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs := f.services[key]
	if fs == nil {
		return opError(MethodUpdateDestination, key, addr, ErrNotFound)
	}
	if _, ok := fs.dests[addr]; !ok {
		return opError(MethodUpdateDestination, key, addr, ErrNotFound)
	}
	if fs.stats == nil {
		fs.stats = map[netip.AddrPort]Stats{}
	}
	fs.stats[addr] = s
	return nil
}
