//go:build linux

package ipvs

import (
	"net/netip"
	"slices"

	libipvs "github.com/moby/ipvs"
)

// ListDestinationStats returns the real servers of one virtual server with
// their traffic counters, sorted by address, like
// `ipvsadm -Ln --stats -t VIP:PORT`; ErrNotFound if the virtual server does
// not exist. The counters come in the same dump as the real servers
// (github.com/moby/ipvs reads IPVS_DEST_ATTR_STATS: 32-bit connection and
// packet counts, 64-bit byte counts).
func (k *Kernel) ListDestinationStats(key ServiceKey) ([]DestinationStats, error) {
	raw, err := k.dumpDests(key)
	if err != nil {
		return nil, err
	}
	return destStatsFromLib(key, raw), nil
}

// destStatsFromLib converts a kernel dump with its counters, skipping what
// fromLibDest rejects, and sorts it by address.
func destStatsFromLib(key ServiceKey, raw []*libipvs.Destination) []DestinationStats {
	out := make([]DestinationStats, 0, len(raw))
	for _, ld := range raw {
		d, ok := fromLibDest(key, ld)
		if !ok {
			continue
		}
		s := ld.Stats
		out = append(out, DestinationStats{Destination: d, Stats: Stats{
			Conns:      uint64(s.Connections),
			PacketsIn:  uint64(s.PacketsIn),
			PacketsOut: uint64(s.PacketsOut),
			BytesIn:    s.BytesIn,
			BytesOut:   s.BytesOut,
		}})
	}
	slices.SortFunc(out, func(a, b DestinationStats) int { return a.Addr.Compare(b.Addr) })
	return out
}

// ListServiceStats returns the counters of every virtual server, from one
// dump (github.com/moby/ipvs reads IPVS_SVC_ATTR_STATS: 32-bit connection
// and packet counts, which wrap, and 64-bit byte counts).
func (k *Kernel) ListServiceStats() (map[ServiceKey]Stats, error) {
	var raw []*libipvs.Service
	err := k.do(func(h *libipvs.Handle) (err error) {
		raw, err = h.GetServices()
		return err
	})
	if err != nil {
		return nil, opError(MethodListServices, ServiceKey{}, netip.AddrPort{}, mapErrno(err, ErrNotFound))
	}
	return svcStatsFromLib(raw), nil
}

// svcStatsFromLib converts a kernel dump's counters, skipping what
// keyFromLib rejects.
func svcStatsFromLib(raw []*libipvs.Service) map[ServiceKey]Stats {
	out := make(map[ServiceKey]Stats, len(raw))
	for _, ls := range raw {
		if ls == nil {
			continue
		}
		key, ok := keyFromLib(ls)
		if !ok {
			continue
		}
		s := ls.Stats
		out[key] = Stats{Conns: uint64(s.Connections), PacketsIn: uint64(s.PacketsIn), PacketsOut: uint64(s.PacketsOut),
			BytesIn: s.BytesIn, BytesOut: s.BytesOut}
	}
	return out
}
