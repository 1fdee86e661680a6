package ipvs

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Format renders virtual servers and their real servers the way
// `ipvsadm -Sn` does, one rule per line:
//
//	-A -t 10.96.0.10:80 -s mh -p 10800 -b mh-port
//	-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1
//	-A -f 8193 -s rr
//	-a -f 8193 -r 10.244.1.5:8080 -m -w 1
//	-A -f 8193 -6 -s rr
//
// Virtual servers are sorted by ServiceKey.Compare (firewall-mark ones
// last), each followed by its real servers sorted by address then port.
// IPv6 addresses are bracketed; an IPv6 firewall-mark virtual server is
// written `-f MARK -6`, as ipvsadm writes it.
// Real servers whose key has no entry in services are not rendered. The
// output is deterministic, so two states can be compared as text; Parse
// reads it back.
func Format(services []Service, dests map[ServiceKey][]Destination) string {
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, b Service) int { return a.Key.Compare(b.Key) })
	var b strings.Builder
	for _, s := range sorted {
		writeService(&b, normalize(s))
		ds := slices.Clone(dests[s.Key])
		sortDests(ds)
		for _, d := range ds {
			writeDest(&b, s.Key, d)
		}
	}
	return b.String()
}

func writeService(b *strings.Builder, s Service) {
	fmt.Fprintf(b, "-A %s -s %s", s.Key, s.Scheduler)
	if s.Persistent {
		fmt.Fprintf(b, " -p %d", s.Timeout)
	}
	if names := s.Flags.Names(s.Scheduler); len(names) > 0 {
		b.WriteString(" -b " + strings.Join(names, ","))
	}
	b.WriteByte('\n')
}

func writeDest(b *strings.Builder, k ServiceKey, d Destination) {
	fmt.Fprintf(b, "-a %s -r %s %s -w %d\n", k, d.Addr, d.Forward.Flag(), d.Weight)
}

// sortDests orders real servers by address, then port.
func sortDests(ds []Destination) {
	slices.SortFunc(ds, func(a, b Destination) int { return a.Addr.Compare(b.Addr) })
}

// Parse reads text in the format Format writes (and that `ipvsadm -Sn`
// prints) back into virtual servers and real servers. Blank lines and lines
// starting with '#' are skipped. A virtual server is -t, -u or
// --sctp-service with an address:port, or -f with a firewall mark, IPv4
// unless -6 is among the options. Options may come in any order; as in
// ipvsadm, a real server without -m, -g or -i is direct-routed (-g) and one
// without -w has weight 1. A real server must follow its virtual server.
// Errors name the line; a repeated virtual server or real server wraps
// ErrExists, a real server of an unknown virtual server wraps ErrNotFound.
func Parse(text string) ([]Service, map[ServiceKey][]Destination, error) {
	var services []Service
	dests := map[ServiceKey][]Destination{}
	seen := map[ServiceKey]map[netip.AddrPort]bool{}
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		r, err := parseRule(fields)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if r.isService {
			if seen[r.svc.Key] != nil {
				return nil, nil, fmt.Errorf("line %d: virtual server %s: %w", i+1, r.svc.Key, ErrExists)
			}
			seen[r.svc.Key] = map[netip.AddrPort]bool{}
			services = append(services, r.svc)
			continue
		}
		ds := seen[r.svc.Key]
		switch {
		case ds == nil:
			return nil, nil, fmt.Errorf("line %d: virtual server %s: %w", i+1, r.svc.Key, ErrNotFound)
		case ds[r.dest.Addr]:
			return nil, nil, fmt.Errorf("line %d: real server %s of %s: %w", i+1, r.dest.Addr, r.svc.Key, ErrExists)
		}
		ds[r.dest.Addr] = true
		dests[r.svc.Key] = append(dests[r.svc.Key], r.dest)
	}
	return services, dests, nil
}

// rule is one parsed line: a virtual server (-A) or a real server (-a) of
// svc.Key.
type rule struct {
	isService bool
	svc       Service
	dest      Destination
}

// parseRule parses the fields of one -A or -a line.
func parseRule(f []string) (rule, error) {
	var r rule
	switch f[0] {
	case "-A":
		r.isService = true
	case "-a":
		r.dest = Destination{Weight: 1, Forward: Route}
	default:
		return r, fmt.Errorf("unknown command %q, want -A or -a", f[0])
	}
	if len(f) < 3 {
		return r, fmt.Errorf("%s needs a protocol option and an address", f[0])
	}
	key, err := parseKey(f[1], f[2])
	if err != nil {
		return r, err
	}
	r.svc.Key = key
	if err := r.parseOptions(f[3:]); err != nil {
		return r, err
	}
	key = r.svc.Key // -6 may have changed it
	if r.isService && r.svc.Scheduler == "" {
		return r, fmt.Errorf("virtual server %s has no -s scheduler", key)
	}
	if r.isService {
		return r, validateService(r.svc)
	}
	if !r.dest.Addr.IsValid() {
		return r, fmt.Errorf("real server line for %s has no -r address", key)
	}
	return r, validateDest(key, r.dest)
}

// parseKey parses a protocol option and an address:port, or -f and a
// firewall mark (an IPv4 one; a later -6 makes it IPv6).
func parseKey(flag, addr string) (ServiceKey, error) {
	var k ServiceKey
	switch flag {
	case "-f", "--fwmark-service":
		m, err := strconv.ParseUint(addr, 10, 32)
		if err != nil || m == 0 {
			return k, fmt.Errorf("firewall mark %q is not a number in 1..%d", addr, uint32(math.MaxUint32))
		}
		return MarkKey(uint32(m), false), nil
	case "-t", "--tcp-service":
		k.Proto = TCP
	case "-u", "--udp-service":
		k.Proto = UDP
	case "--sctp-service":
		k.Proto = SCTP
	default:
		return k, fmt.Errorf("unknown protocol option %q", flag)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return k, fmt.Errorf("virtual server address %q: %w", addr, err)
	}
	k.Addr, k.Port = ap.Addr(), ap.Port()
	return k, validateKey(k)
}

// parseOptions applies the options after the address to r.
func (r *rule) parseOptions(opts []string) error {
	for i := 0; i < len(opts); i++ {
		opt := opts[i]
		if fwd, ok := forwardFlags[opt]; ok && !r.isService {
			r.dest.Forward = fwd
			continue
		}
		if (opt == "-6" || opt == "--ipv6") && r.svc.Key.IsMark() {
			r.svc.Key = MarkKey(r.svc.Key.Mark, true)
			continue
		}
		if i+1 >= len(opts) {
			return fmt.Errorf("option %q is unknown here or lacks its value", opt)
		}
		val := opts[i+1]
		i++
		if err := r.parseValued(opt, val); err != nil {
			return err
		}
	}
	return nil
}

var forwardFlags = map[string]Forward{"-m": Masquerade, "-g": Route, "-i": Tunnel}

// parseValued applies one option that takes a value.
func (r *rule) parseValued(opt, val string) error {
	switch {
	case opt == "-s" && r.isService:
		r.svc.Scheduler = val
	case opt == "-p" && r.isService:
		t, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return fmt.Errorf("persistence timeout %q: %w", val, err)
		}
		r.svc.Persistent, r.svc.Timeout = true, uint32(t)
	case opt == "-b" && r.isService:
		f, err := ParseSchedFlags(val)
		if err != nil {
			return err
		}
		r.svc.Flags = f
	case opt == "-r" && !r.isService:
		ap, err := netip.ParseAddrPort(val)
		if err != nil {
			return fmt.Errorf("real server address %q: %w", val, err)
		}
		r.dest.Addr = ap
	case opt == "-w" && !r.isService:
		w, err := strconv.ParseInt(val, 10, 32)
		if err != nil {
			return fmt.Errorf("weight %q: %w", val, err)
		}
		r.dest.Weight = int(w)
	default:
		return fmt.Errorf("unknown option %q", opt)
	}
	return nil
}
