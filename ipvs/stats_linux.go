//go:build linux

package ipvs

import (
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
