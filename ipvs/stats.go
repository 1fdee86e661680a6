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

// StatsReader reads the traffic counters of virtual and real servers. It
// is apart from Interface because only displays need it (`kube-ipvs
// show`, the opt-in per-virtual-server metrics): nothing is decided on it.
// The Kernel and the Fake implement it.
type StatsReader interface {
	// ListDestinationStats returns the real servers of one virtual server
	// with their counters, sorted by address, like
	// `ipvsadm -Ln --stats -t VIP:PORT`; ErrNotFound if the virtual server
	// does not exist. It is one kernel round trip, as ListDestinations.
	ListDestinationStats(ServiceKey) ([]DestinationStats, error)
	// ListServiceStats returns the counters of every virtual server, like
	// the virtual server lines of `ipvsadm -Ln --stats`: since it was
	// added, whatever real servers came and went. One kernel round trip,
	// as ListServices.
	ListServiceStats() (map[ServiceKey]Stats, error)
}

// ListServiceStats returns, per virtual server, the sum of the counters
// SetStats gave its real servers: the Fake keeps no counter of its own
// per virtual server. It is counted and fails as ListServices.
func (f *Fake) ListServiceStats() (map[ServiceKey]Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(MethodListServices, ServiceKey{}); err != nil {
		return nil, opError(MethodListServices, ServiceKey{}, netip.AddrPort{}, err)
	}
	out := make(map[ServiceKey]Stats, len(f.services))
	for k, fs := range f.services {
		var sum Stats
		for _, s := range fs.stats {
			sum.Conns += s.Conns
			sum.PacketsIn += s.PacketsIn
			sum.PacketsOut += s.PacketsOut
			sum.BytesIn += s.BytesIn
			sum.BytesOut += s.BytesOut
		}
		out[k] = sum
	}
	return out, nil
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
