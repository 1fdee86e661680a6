package netif

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kube-ipvs/kube-ipvs/internal/fakecall"
)

// Names of the methods, as the fakes' Calls count them and FailOn takes
// them.
const (
	MethodEnsureLink = "EnsureLink"
	MethodDeleteLink = "DeleteLink"
	MethodListAddrs  = "ListAddrs"
	MethodAddAddr    = "AddAddr"
	MethodDelAddr    = "DelAddr"
	MethodListRoutes = "ListRoutes"
	MethodAddRoute   = "AddRoute"
	MethodDelRoute   = "DelRoute"
	MethodGet        = "Get"
	MethodSet        = "Set"
	MethodLocalAddrs = "LocalAddrs"
)

var _ Addrs = (*FakeAddrs)(nil)

// FakeAddrs is an in-memory dummy interface with Dummy's semantics: no
// link until EnsureLink, ListAddrs empty without a link, AddAddr ErrExists
// for a bound address, DelAddr ErrNotFound for an unbound one, address
// calls ErrNotFound without a link, DeleteLink ErrNotFound without a link,
// and a link of the name that is not a dummy (see SeedLink) refused by
// EnsureLink and DeleteLink. Errors are worded like Dummy's.
//
// For tests it counts calls (Calls, Reads, Writes), injects failures
// (FailOn) and renders its state (Dump). It is safe for concurrent use.
type FakeAddrs struct {
	mu     sync.Mutex
	name   string
	exists bool
	kind   string
	up     bool
	addrs  map[netip.Addr]bool
	routes map[netip.Prefix]bool
	// rec counts calls; an EnsureLink that finds the link up changes
	// nothing and, as Dummy then only reads, counts as a read.
	rec *fakecall.Recorder[netip.Addr]
}

// NewFakeAddrs returns a fake for the interface name ("" is DefaultLink),
// which does not exist yet.
func NewFakeAddrs(name string) *FakeAddrs {
	if name == "" {
		name = DefaultLink
	}
	return &FakeAddrs{
		name:   name,
		addrs:  map[netip.Addr]bool{},
		routes: map[netip.Prefix]bool{},
		rec: fakecall.New[netip.Addr]("netif.FakeAddrs", []string{MethodListAddrs, MethodListRoutes},
			[]string{MethodEnsureLink, MethodDeleteLink, MethodAddAddr, MethodDelAddr, MethodAddRoute, MethodDelRoute}),
	}
}

// Name returns the interface name.
func (f *FakeAddrs) Name() string { return f.name }

// SeedLink sets the link's state directly, as if left by an earlier run or
// by someone else: it exists, of kind ("" is "dummy"), up or down, with
// exactly addrs bound. It is not counted as a call.
func (f *FakeAddrs) SeedLink(kind string, up bool, addrs ...netip.Addr) {
	if kind == "" {
		kind = "dummy"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exists, f.kind, f.up = true, kind, up
	f.addrs = map[netip.Addr]bool{}
	for _, a := range addrs {
		f.addrs[a] = true
	}
	f.routes = map[netip.Prefix]bool{}
}

// FailOn makes every later call of method (MethodAddAddr, …) for addr fail
// with err, wrapped as Dummy wraps its errors, before the state is looked
// at. The zero Addr matches every address and is the key of EnsureLink,
// DeleteLink and ListAddrs. A nil err removes the failure. Failed calls are
// counted. It panics on a name that is not an Addrs method.
func (f *FakeAddrs) FailOn(method string, addr netip.Addr, err error) {
	f.rec.FailOn(method, addr, err)
}

// Calls returns how many times each method was called since creation or
// ResetCalls, failed calls included; methods never called are absent.
func (f *FakeAddrs) Calls() map[string]int { return f.rec.Calls() }

// ResetCalls zeroes the call counters; state and failures stay.
func (f *FakeAddrs) ResetCalls() { f.rec.Reset() }

// Reads returns the number of ListAddrs calls, plus EnsureLink calls that
// found the link up (Dummy only looks then).
func (f *FakeAddrs) Reads() int { return f.rec.Reads() }

// Writes returns the number of calls to the other methods, whether or not
// they failed or changed anything, except EnsureLink calls that found the
// link up.
func (f *FakeAddrs) Writes() int { return f.rec.Writes() }

// dummyLocked returns nil if the link exists and is a dummy, else the
// error Dummy gives.
func (f *FakeAddrs) dummyLocked() error {
	if !f.exists {
		return fmt.Errorf("link %s: %w", f.name, ErrNotFound)
	}
	if f.kind != "dummy" {
		return fmt.Errorf("link %s exists and is a %q, not a dummy; kube-ipvs will not use or change it", f.name, f.kind)
	}
	return nil
}

// EnsureLink creates the link if missing and sets it up.
func (f *FakeAddrs) EnsureLink() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodEnsureLink)
	if err == nil && f.exists && f.up && f.kind == "dummy" {
		f.rec.CountAsRead()
		return nil
	}
	if err == nil && !f.exists {
		f.exists, f.kind, f.up = true, "dummy", false
	}
	if err == nil {
		err = f.dummyLocked()
	}
	if err != nil {
		return fmt.Errorf("ensuring link: %w", err)
	}
	f.up = true
	return nil
}

// DeleteLink removes the link and its addresses.
func (f *FakeAddrs) DeleteLink() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodDeleteLink)
	if err == nil {
		err = f.dummyLocked()
	}
	if err != nil {
		return fmt.Errorf("deleting link: %w", err)
	}
	f.exists, f.kind, f.up = false, "", false
	clear(f.addrs)
	clear(f.routes)
	return nil
}

// ListAddrs returns the bound addresses sorted; empty without a link.
func (f *FakeAddrs) ListAddrs() ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.Begin(MethodListAddrs); err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", f.name, err)
	}
	if !f.exists {
		return []netip.Addr{}, nil
	}
	return sortedAddrs(f.addrs), nil
}

// AddAddr binds addr; ErrExists if bound, ErrNotFound without a link.
func (f *FakeAddrs) AddAddr(addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodAddAddr, addr)
	if err == nil {
		err = f.addrOpLocked(addr)
	}
	if err == nil && f.addrs[addr] {
		err = ErrExists
	}
	if err == nil {
		f.addrs[addr] = true
	}
	return addrError(verbAdd, addr, f.name, err)
}

// DelAddr unbinds addr; ErrNotFound if not bound or without a link.
func (f *FakeAddrs) DelAddr(addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodDelAddr, addr)
	if err == nil {
		err = f.addrOpLocked(addr)
	}
	if err == nil && !f.addrs[addr] {
		err = ErrNotFound
	}
	if err == nil {
		delete(f.addrs, addr)
		f.dropIPv4RoutesLocked()
	}
	return addrError(verbDel, addr, f.name, err)
}

// ListRoutes returns the local routes sorted; empty without a link. Like
// the kernel, the link loses its IPv4 routes with its last IPv4 address.
func (f *FakeAddrs) ListRoutes() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.Begin(MethodListRoutes); err != nil {
		return nil, fmt.Errorf("listing local routes of %s: %w", f.name, err)
	}
	if !f.exists {
		return []netip.Prefix{}, nil
	}
	return sortedPrefixes(f.routes), nil
}

// AddRoute adds p's local route; ErrExists if there, ErrNotFound without a
// link. FailOn keys it by p's address.
func (f *FakeAddrs) AddRoute(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodAddRoute, p.Addr())
	if err == nil {
		err = f.routeOpLocked(p)
	}
	if err == nil && f.routes[p] {
		err = ErrExists
	}
	if err == nil {
		f.routes[p] = true
	}
	return routeError(verbAdd, p, f.name, err)
}

// DelRoute removes p's local route; ErrNotFound if absent or without a
// link.
func (f *FakeAddrs) DelRoute(p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodDelRoute, p.Addr())
	if err == nil {
		err = f.routeOpLocked(p)
	}
	if err == nil && !f.routes[p] {
		err = ErrNotFound
	}
	if err == nil {
		delete(f.routes, p)
	}
	return routeError(verbDel, p, f.name, err)
}

// dropIPv4RoutesLocked deletes the IPv4 routes when the link has no IPv4
// address left, as the kernel does (fib_disable_ip).
func (f *FakeAddrs) dropIPv4RoutesLocked() {
	for a := range f.addrs {
		if a.Is4() {
			return
		}
	}
	for p := range f.routes {
		if p.Addr().Is4() {
			delete(f.routes, p)
		}
	}
}

func (f *FakeAddrs) routeOpLocked(p netip.Prefix) error {
	if err := validatePrefix(p); err != nil {
		return err
	}
	if !f.exists {
		return fmt.Errorf("link %s: %w", f.name, ErrNotFound)
	}
	return nil
}

// addrOpLocked checks what AddAddr and DelAddr check before the address
// itself: a valid address and an existing link.
func (f *FakeAddrs) addrOpLocked(addr netip.Addr) error {
	if err := validateAddr(addr); err != nil {
		return err
	}
	if !f.exists {
		return fmt.Errorf("link %s: %w", f.name, ErrNotFound)
	}
	return nil
}

// Dump renders the state: "" without a link, else a line
// "link kipvs0 up" (or "down"; " type bridge" appended for a link that is
// not a dummy) followed by the bound addresses as host prefixes, sorted,
// one per line, then the local routes:
//
//	link kipvs0 up
//	10.96.0.10/32
//	fd00::10/128
//	local 10.97.0.0/16
//
// It is not counted as a call.
func (f *FakeAddrs) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exists {
		return ""
	}
	var b strings.Builder
	state := "down"
	if f.up {
		state = "up"
	}
	fmt.Fprintf(&b, "link %s %s", f.name, state)
	if f.kind != "dummy" {
		fmt.Fprintf(&b, " type %s", f.kind)
	}
	b.WriteByte('\n')
	for _, a := range sortedAddrs(f.addrs) {
		b.WriteString(hostPrefix(a) + "\n")
	}
	for _, p := range sortedPrefixes(f.routes) {
		b.WriteString("local " + p.String() + "\n")
	}
	return b.String()
}

var _ Sysctl = (*FakeSysctl)(nil)

// FakeSysctl is an in-memory Sysctl with ProcSysctl's semantics: values
// are trimmed, invalid keys are refused, Get and Set of a key that does not
// exist are ErrNotFound (seed the keys the code under test may set), and a
// key that holds integers (like "1" or "4096 87380 6291456") takes only
// decimal integers, else syscall.EINVAL, as the kernel refuses "abc". It counts calls, injects failures and renders itself with Dump. It
// is safe for concurrent use.
type FakeSysctl struct {
	mu     sync.Mutex
	values map[string]string
	rec    *fakecall.Recorder[string]
}

// NewFakeSysctl returns a fake holding the seed keys (nil for none).
func NewFakeSysctl(seed map[string]string) *FakeSysctl {
	f := &FakeSysctl{
		values: map[string]string{},
		rec:    fakecall.New[string]("netif.FakeSysctl", []string{MethodGet}, []string{MethodSet}),
	}
	for k, v := range seed {
		f.values[k] = strings.TrimSpace(v)
	}
	return f
}

// Get returns the value of key; ErrNotFound if there is no such key.
func (f *FakeSysctl) Get(key string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rec.Begin(MethodGet, key)
	if err == nil {
		err = validateKey(key)
	}
	v, ok := f.values[key]
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	return v, nil
}

// Set changes the value of an existing key; ErrNotFound if there is none.
func (f *FakeSysctl) Set(key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	value = strings.TrimSpace(value)
	err := f.rec.Begin(MethodSet, key)
	if err == nil {
		err = validateKey(key)
	}
	old, ok := f.values[key]
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err == nil && isIntegers(old) && !isIntegers(value) {
		err = syscall.EINVAL
	}
	if err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	f.values[key] = value
	return nil
}

// isIntegers reports whether v is one or more blank-separated decimal
// integers, the values of the kernel's integer sysctls.
func isIntegers(v string) bool {
	fields := strings.Fields(v)
	for _, f := range fields {
		if _, err := strconv.ParseInt(f, 10, 64); err != nil {
			return false
		}
	}
	return len(fields) > 0
}

// FailOn makes every later call of method (MethodGet or MethodSet) on key
// fail with err, wrapped as ProcSysctl wraps its errors; "" matches every
// key, a nil err removes the failure. It panics on another method name.
func (f *FakeSysctl) FailOn(method, key string, err error) { f.rec.FailOn(method, key, err) }

// Calls returns how many times Get and Set were called, failures included.
func (f *FakeSysctl) Calls() map[string]int { return f.rec.Calls() }

// ResetCalls zeroes the call counters; values and failures stay.
func (f *FakeSysctl) ResetCalls() { f.rec.Reset() }

// Reads returns the number of Get calls.
func (f *FakeSysctl) Reads() int { return f.rec.Reads() }

// Writes returns the number of Set calls.
func (f *FakeSysctl) Writes() int { return f.rec.Writes() }

// Dump renders every key as "key = value", one per line, sorted by key
// (like `sysctl -a`, but with the slash-separated keys Get takes). It is
// not counted as a call.
func (f *FakeSysctl) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(f.values)) {
		fmt.Fprintf(&b, "%s = %s\n", k, f.values[k])
	}
	return b.String()
}

var _ AddrSource = (*FakeAddrSource)(nil)

// FakeAddrSource is an in-memory AddrSource: the node's addresses are what
// Set last gave, and LocalAddrs returns those of the family asked, sorted
// and without duplicates, leaving out IPv6 link-local addresses as
// KernelAddrSource does (the excepted link's addresses are simply not
// Set). Errors are worded like LocalAddrs'. It counts calls and injects
// failures (FailOn). It is safe for concurrent use.
type FakeAddrSource struct {
	mu    sync.Mutex
	addrs map[netip.Addr]bool
	rec   *fakecall.Recorder[bool]
}

// NewFakeAddrSource returns a fake holding addrs, as Set.
func NewFakeAddrSource(addrs ...netip.Addr) *FakeAddrSource {
	f := &FakeAddrSource{rec: fakecall.New[bool]("netif.FakeAddrSource", []string{MethodLocalAddrs}, nil)}
	f.Set(addrs...)
	return f
}

// Set replaces the node's addresses, of both families, with addrs: IPv4-mapped
// IPv6 addresses count as IPv4 and zones are dropped, as the kernel reports
// neither. It is not counted as a call. It panics on the zero Addr.
func (f *FakeAddrSource) Set(addrs ...netip.Addr) {
	set := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() {
			panic("netif.FakeAddrSource.Set: invalid address")
		}
		set[a.Unmap().WithZone("")] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = set
}

// LocalAddrs returns the addresses of the family, sorted; empty, not nil,
// when there are none.
func (f *FakeAddrSource) LocalAddrs(ipv6 bool) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.rec.Begin(MethodLocalAddrs); err != nil {
		return nil, fmt.Errorf("listing local %s addresses: %w", familyName(ipv6), err)
	}
	out := []netip.Addr{}
	for _, a := range sortedAddrs(f.addrs) {
		if a.Is6() == ipv6 && !(a.Is6() && a.IsLinkLocalUnicast()) {
			out = append(out, a)
		}
	}
	return out, nil
}

// FailOn makes every later LocalAddrs fail with err, wrapped as
// LocalAddrs wraps its errors; a nil err removes the failure. Failed calls
// are counted.
func (f *FakeAddrSource) FailOn(err error) { f.rec.FailOn(MethodLocalAddrs, false, err) }

// Calls returns how many times LocalAddrs was called, failures included.
func (f *FakeAddrSource) Calls() map[string]int { return f.rec.Calls() }

// ResetCalls zeroes the call counters; addresses and failures stay.
func (f *FakeAddrSource) ResetCalls() { f.rec.Reset() }

// Reads returns the number of LocalAddrs calls.
func (f *FakeAddrSource) Reads() int { return f.rec.Reads() }
