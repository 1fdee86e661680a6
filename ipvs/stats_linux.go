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
	if err := validateKey(key); err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, err)
	}
	ls := toLibService(Service{Key: key})
	var raw []*libipvs.Destination
	err := k.do(func(h *libipvs.Handle) (err error) {
		if raw, err = h.GetDestinations(ls); err != nil || len(raw) > 0 {
			return err
		}
		_, err = h.GetService(ls) // an empty dump: tell "none" from "no such virtual server"
		return err
	})
	if err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, mapErrno(err, ErrNotFound))
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
