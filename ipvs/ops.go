package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
)

// Names of the Interface methods, as Fake.Calls counts them and Fake.FailOn
// takes them.
const (
	MethodListServices      = "ListServices"
	MethodAddService        = "AddService"
	MethodUpdateService     = "UpdateService"
	MethodDeleteService     = "DeleteService"
	MethodListDestinations  = "ListDestinations"
	MethodAddDestination    = "AddDestination"
	MethodUpdateDestination = "UpdateDestination"
	MethodDeleteDestination = "DeleteDestination"
)

// opError wraps err with a short message naming the operation, the virtual
// server and, for real server operations, the real server. The Kernel and
// the Fake word their errors the same way.
func opError(method string, key ServiceKey, dest netip.AddrPort, err error) error {
	if err == nil {
		return nil
	}
	switch method {
	case MethodListServices:
		return fmt.Errorf("listing virtual servers: %w", err)
	case MethodAddService:
		return fmt.Errorf("adding virtual server %s: %w", key, err)
	case MethodUpdateService:
		return fmt.Errorf("updating virtual server %s: %w", key, err)
	case MethodDeleteService:
		return fmt.Errorf("deleting virtual server %s: %w", key, err)
	case MethodListDestinations:
		return fmt.Errorf("listing real servers of %s: %w", key, err)
	case MethodAddDestination:
		return fmt.Errorf("adding real server %s to %s: %w", dest, key, err)
	case MethodUpdateDestination:
		return fmt.Errorf("updating real server %s of %s: %w", dest, key, err)
	case MethodDeleteDestination:
		return fmt.Errorf("deleting real server %s from %s: %w", dest, key, err)
	}
	return fmt.Errorf("%s %s: %w", method, key, err)
}

// validateAddr rejects addresses the kernel cannot take as they are: the
// zero Addr, zoned addresses and IPv4-mapped IPv6 addresses (which would be
// sent as IPv4 under an IPv6 family).
func validateAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	case a.Is4In6():
		return fmt.Errorf("address %s is IPv4-mapped IPv6; use the IPv4 form", a)
	}
	return nil
}

// validateKey checks a virtual server key before it is sent to the kernel.
// A firewall-mark key must be as MarkKey makes it.
func validateKey(k ServiceKey) error {
	if k.IsMark() {
		return validateMarkKey(k)
	}
	if err := validateAddr(k.Addr); err != nil {
		return err
	}
	switch k.Proto {
	case TCP, UDP, SCTP:
		return nil
	}
	return fmt.Errorf("unsupported protocol %s", k.Proto)
}

// validateMarkKey checks a firewall-mark key: the unspecified address of
// its family, no protocol and no port, as MarkKey makes it.
func validateMarkKey(k ServiceKey) error {
	if k.Addr != netip.IPv4Unspecified() && k.Addr != netip.IPv6Unspecified() {
		return fmt.Errorf("firewall-mark key has address %v, want 0.0.0.0 or ::", k.Addr)
	}
	if k.Proto != 0 || k.Port != 0 {
		return fmt.Errorf("firewall-mark key has protocol %d and port %d, want neither", uint16(k.Proto), k.Port)
	}
	return nil
}

// validateService checks a whole virtual server. An empty scheduler is
// ErrNoScheduler, as the kernel answers for it.
func validateService(s Service) error {
	if err := validateKey(s.Key); err != nil {
		return err
	}
	if s.Scheduler == "" {
		return fmt.Errorf("empty scheduler name: %w", ErrNoScheduler)
	}
	if s.Flags&^schedFlagsMask != 0 {
		return fmt.Errorf("unknown scheduler flags %#x", uint32(s.Flags&^schedFlagsMask))
	}
	return nil
}

// MaxWeight is the largest real server weight accepted. The kernel takes
// up to 2^31-1, but github.com/moby/ipvs reads weights back as 16 bits, so
// a larger weight would never compare equal to what was written.
const MaxWeight = 65535

// validateDest checks a real server for the virtual server k. The real
// server must be of the virtual server's family: github.com/moby/ipvs does
// not send a real server's own family, so the kernel would misread it.
func validateDest(k ServiceKey, d Destination) error {
	if err := validateAddr(d.Addr.Addr()); err != nil {
		return err
	}
	if d.Addr.Addr().Is4() != k.Addr.Is4() {
		return fmt.Errorf("real server %s is not of the virtual server's address family", d.Addr)
	}
	if d.Weight < 0 || d.Weight > MaxWeight {
		return fmt.Errorf("weight %d out of range 0..%d", d.Weight, MaxWeight)
	}
	if d.Forward > Route {
		return fmt.Errorf("unknown forwarding method %d", uint32(d.Forward))
	}
	return nil
}

// normalize returns s as the kernel reports it back: the timeout is kept
// only for a persistent virtual server.
func normalize(s Service) Service {
	if !s.Persistent {
		s.Timeout = 0
	}
	return s
}

// written returns d as a write leaves it in the table: connection counts
// are the kernel's, never the writer's.
func written(d Destination) Destination {
	d.ActiveConns, d.InactiveConns = 0, 0
	return d
}
