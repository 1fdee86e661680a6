package measure

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// VSKey names a virtual server of /proc/net/ip_vs: protocol ("TCP", "UDP",
// "SCTP") and address, or "FWM" and the mark in Addr's port.
type VSKey struct {
	Proto string
	Addr  netip.AddrPort
	Mark  uint32
}

func (k VSKey) String() string {
	if k.Proto == "FWM" {
		return fmt.Sprintf("FWM %d", k.Mark)
	}
	return k.Proto + " " + k.Addr.String()
}

// RealServer is one "  -> ADDR:PORT Forward Weight ..." line.
type RealServer struct {
	Addr    netip.AddrPort
	Forward string // Masq, Local, Tunnel, Route
	Weight  int
}

// VirtualServer is one virtual server of /proc/net/ip_vs and its real servers.
type VirtualServer struct {
	Key       VSKey
	Scheduler string
	Real      []RealServer
}

// IPVSTable is /proc/net/ip_vs, parsed: what `ipvsadm -Ln` shows.
type IPVSTable map[VSKey]*VirtualServer

// CountIPVS counts the virtual servers and real servers of a
// /proc/net/ip_vs read without parsing it: cheap enough to run every
// few hundred milliseconds beside the proxy being measured.
func CountIPVS(b []byte) (virtual, real int) {
	real = bytes.Count(b, []byte("\n  -> ")) - 1 // the header's "  -> RemoteAddress:Port"
	lines := bytes.Count(b, []byte("\n"))
	virtual = lines - real - 3 // the three header lines
	if real < 0 || virtual < 0 {
		return 0, 0
	}
	return virtual, real
}

// ParseIPVS parses the text of /proc/net/ip_vs (addresses in hex, as the
// kernel's ip_vs_info_seq_show writes them):
//
//	IP Virtual Server version 1.2.1 (size=4096)
//	Prot LocalAddress:Port Scheduler Flags
//	  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//	TCP  0A601000:0050 rr
//	  -> 0AF40100:1F90      Masq    1      0          0
func ParseIPVS(b []byte) (IPVSTable, error) {
	t := IPVSTable{}
	var cur *VirtualServer
	for n, line := range strings.Split(string(b), "\n") {
		if n < 3 || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if f[0] == "->" {
			if cur == nil || len(f) < 3 {
				return nil, fmt.Errorf("line %d %q: a real server outside a virtual server", n+1, line)
			}
			addr, err := hexAddrPort(f[1])
			if err != nil {
				return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
			}
			w, err := strconv.Atoi(f[3])
			if err != nil {
				return nil, fmt.Errorf("line %d %q: weight: %w", n+1, line, err)
			}
			cur.Real = append(cur.Real, RealServer{Addr: addr, Forward: f[2], Weight: w})
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d %q: short virtual server line", n+1, line)
		}
		cur = &VirtualServer{Scheduler: f[2]}
		if f[0] == "FWM" {
			m, err := strconv.ParseUint(f[1], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("line %d %q: mark: %w", n+1, line, err)
			}
			cur.Key = VSKey{Proto: "FWM", Mark: uint32(m)}
		} else {
			addr, err := hexAddrPort(f[1])
			if err != nil {
				return nil, fmt.Errorf("line %d %q: %w", n+1, line, err)
			}
			cur.Key = VSKey{Proto: f[0], Addr: addr}
		}
		t[cur.Key] = cur
	}
	return t, nil
}

// hexAddrPort parses "0A601000:0050" or "[2001:db8::1]:0050".
func hexAddrPort(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port of %q: %w", s, err)
	}
	host := s[:i]
	var a netip.Addr
	if strings.HasPrefix(host, "[") {
		a, err = netip.ParseAddr(strings.Trim(host, "[]"))
	} else {
		var v uint64
		v, err = strconv.ParseUint(host, 16, 32)
		a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address of %q: %w", s, err)
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// Check compares the kernel's table with the layout: every Service's
// virtual server (TCP, scheduler rr) with exactly its real servers
// (masqueraded, weight 1), change k applied for every k < applied (and,
// once any is, the warm-up change, made before change 0), and no other
// virtual server in the benchmark's range (10.96.16.0 on). Virtual servers outside it
// (the apiserver's own kubernetes Service) are ignored. It returns nil or
// every difference, at most 10 of them spelled out.
func (l Layout) Check(t IPVSTable, applied int) error {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	want := make(map[int][]netip.AddrPort, l.Services)
	for i := 0; i < l.Services; i++ {
		want[i] = l.Want(i)
	}
	for k := 0; k < applied; k++ {
		i := l.ChangedService(k)
		want[i][0] = netip.AddrPortFrom(l.Replacement(k), TargetPort)
	}
	if w := l.WarmUpService(); applied > 0 && w >= 0 {
		want[w][0] = netip.AddrPortFrom(l.WarmUpAddress(), TargetPort)
	}
	for i := 0; i < l.Services; i++ {
		key := VSKey{Proto: "TCP", Addr: VS(i)}
		vs := t[key]
		if vs == nil {
			add("%s missing", key)
			continue
		}
		if vs.Scheduler != "rr" {
			add("%s: scheduler %s, want rr", key, vs.Scheduler)
		}
		if d := diffReal(vs.Real, want[i]); d != "" {
			add("%s: %s", key, d)
		}
	}
	for k := range t {
		a := k.Addr.Addr()
		if k.Proto == "FWM" || !a.Is4() || index(a) >= maxAddresses {
			continue // not in the benchmark's range
		}
		if k.Proto != "TCP" || k.Addr.Port() != ServicePort || index(a) >= l.Services {
			add("%s: not a benchmark virtual server", k)
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	n := len(diffs)
	if n > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("… and %d more", n-10))
	}
	return fmt.Errorf("%d differences from the expected IPVS table:\n  %s", n, strings.Join(diffs, "\n  "))
}

// index is i for VIP(i).
func index(a netip.Addr) int { return int(u32(a) - u32(firstVIP)) }

// diffReal says how got differs from want (masqueraded, weight 1), "" if not.
func diffReal(got []RealServer, want []netip.AddrPort) string {
	w := make(map[netip.AddrPort]bool, len(want))
	for _, a := range want {
		w[a] = true
	}
	var bad []string
	seen := 0
	for _, r := range got {
		switch {
		case !w[r.Addr]:
			bad = append(bad, "unexpected "+r.Addr.String())
		case r.Forward != "Masq" || r.Weight != 1:
			bad = append(bad, fmt.Sprintf("%s %s weight %d, want Masq weight 1", r.Addr, r.Forward, r.Weight))
		default:
			seen++
		}
	}
	if seen < len(want) {
		for _, a := range want {
			found := false
			for _, r := range got {
				found = found || r.Addr == a
			}
			if !found {
				bad = append(bad, "missing "+a.String())
			}
		}
	}
	return strings.Join(bad, ", ")
}
