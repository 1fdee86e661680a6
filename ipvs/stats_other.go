//go:build !linux

package ipvs

// ListDestinationStats fails off Linux.
func (k *Kernel) ListDestinationStats(ServiceKey) ([]DestinationStats, error) {
	return nil, errUnsupported
}
