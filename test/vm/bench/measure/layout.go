// Package measure holds the pure parts of the VM benchmark (make bench-vm,
// ../README.md): the objects both proxies are given, reading what the
// guest's /proc says (/proc/net/ip_vs, /proc/PID/stat and status, a
// Prometheus scrape), summarising figures and printing the table. It does
// no I/O of its own, so it tests on any machine.
package measure

import (
	"fmt"
	"net/netip"
)

// Fixed parts of the benchmark's objects: every Service has one TCP port
// ServicePort whose endpoints listen on TargetPort.
const (
	ServicePort = 80
	TargetPort  = 8080
	Namespace   = "default"
)

// firstVIP is the ClusterIP of Service 0; the apiserver's own kubernetes
// Service (10.96.0.1) and anything a test allocates stay below it.
var (
	firstVIP     = netip.MustParseAddr("10.96.16.0")
	firstPod     = netip.MustParseAddr("10.244.1.0")
	maxAddresses = 60000 // of each range: 10.96.16.0 + 60000 and 10.244.1.0 + 60000 stay in their /16
)

// Layout is the benchmark's objects for N Services of M endpoints each:
// Service "bench-I" with ClusterIP VIP(I), port 80/TCP, and one
// EndpointSlice "bench-I" of M ready endpoints Endpoint(I, J):8080. Both
// the host (which creates them) and the guest (which checks the kernel)
// derive everything from it, so the guest never lists the API.
type Layout struct {
	Services, Endpoints int
	// Changes is how many EndpointSlice changes the guest makes; change K
	// replaces endpoint 0 of ChangedService(K) by Replacement(K).
	Changes int
}

// Validate says whether the layout's addresses fit their ranges.
func (l Layout) Validate() error {
	switch {
	case l.Services < 1 || l.Endpoints < 1:
		return fmt.Errorf("services %d, endpoints %d: both must be at least 1", l.Services, l.Endpoints)
	case l.Services > maxAddresses:
		return fmt.Errorf("services %d: at most %d", l.Services, maxAddresses)
	case l.Services*l.Endpoints+l.Changes+1 > maxAddresses: // + WarmUpAddress
		return fmt.Errorf("services × endpoints + changes + 1 = %d: at most %d pod addresses", l.Services*l.Endpoints+l.Changes+1, maxAddresses)
	case l.Changes < 0 || l.Changes > l.Services:
		// Two changes of one Service could coalesce, and the first's real
		// server never reach the kernel.
		return fmt.Errorf("changes %d: from 0 to the number of Services (%d)", l.Changes, l.Services)
	}
	return nil
}

// Name is the name of Service i and of its EndpointSlice.
func Name(i int) string { return fmt.Sprintf("bench-%d", i) }

// VIP is the ClusterIP of Service i.
func VIP(i int) netip.Addr { return addN(firstVIP, i) }

// VS is Service i's IPVS virtual server address.
func VS(i int) netip.AddrPort { return netip.AddrPortFrom(VIP(i), ServicePort) }

// Endpoint is the address of endpoint j of Service i.
func (l Layout) Endpoint(i, j int) netip.Addr { return addN(firstPod, i*l.Endpoints+j) }

// ChangedService is the Service change k touches: the changes are spread
// evenly over the Services, never the same one twice while k < Services.
func (l Layout) ChangedService(k int) int {
	if l.Changes == 0 {
		return 0
	}
	return (k * l.Services / l.Changes) % l.Services
}

// Replacement is the address change k gives endpoint 0 of its Service:
// a pod address no initial endpoint uses.
func (l Layout) Replacement(k int) netip.Addr { return addN(firstPod, l.Services*l.Endpoints+k) }

// WarmUpService is the Service of the warm-up change, which the guest
// makes one interval before the timed ones (Result.WarmUp): the last one
// no change touches, or -1 when every Service is changed.
func (l Layout) WarmUpService() int {
	changed := make(map[int]bool, l.Changes)
	for k := 0; k < l.Changes; k++ {
		changed[l.ChangedService(k)] = true
	}
	for i := l.Services - 1; i >= 0; i-- {
		if !changed[i] {
			return i
		}
	}
	return -1
}

// WarmUpAddress is the address the warm-up change gives endpoint 0 of
// WarmUpService: after every Replacement.
func (l Layout) WarmUpAddress() netip.Addr { return l.Replacement(l.Changes) }

// Want is the real servers of Service i: its endpoints on TargetPort.
func (l Layout) Want(i int) []netip.AddrPort {
	out := make([]netip.AddrPort, l.Endpoints)
	for j := range out {
		out[j] = netip.AddrPortFrom(l.Endpoint(i, j), TargetPort)
	}
	return out
}

// addN is a + n for an IPv4 address (no overflow check: Validate bounds n).
func addN(a netip.Addr, n int) netip.Addr {
	v := u32(a) + uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// u32 is an IPv4 address as a number.
func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
