//go:build !linux

package ipvs

// ListDestinationStats fails off Linux.
func (k *Kernel) ListDestinationStats(ServiceKey) ([]DestinationStats, error) {
	return nil, errUnsupported
}

// ListServiceStats fails off Linux.
func (k *Kernel) ListServiceStats() (map[ServiceKey]Stats, error) {
	return nil, errUnsupported
}
