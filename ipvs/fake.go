package ipvs

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/kube-ipvs/kube-ipvs/internal/fakecall"
)

var _ Interface = (*Fake)(nil)

// Fake is an in-memory IPVS table with the Kernel's semantics: adding a
// taken key is ErrExists, touching a missing virtual server or real server
// is ErrNotFound, a scheduler Linux does not have (any name but rr, wrr,
// lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh and twos) is
// ErrNoScheduler, and invalid input (bad address, real server of another
// family, weight out of range) is an error before any change. Errors are
// worded like the Kernel's.
//
// For tests it counts every call (Calls, Reads, Writes), injects failures
// (FailOn), renders its table like `ipvsadm -Sn` (Dump) and can be seeded
// from that same text (Load). It is safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	services map[ServiceKey]*fakeService
	rec      *fakecall.Recorder[ServiceKey]
	batches  int
}

type fakeService struct {
	svc   Service
	dests map[netip.AddrPort]Destination
	stats map[netip.AddrPort]Stats // set by SetStats; a real server added again starts at zero
}

// NewFake returns an empty table.
func NewFake() *Fake {
	return &Fake{
		services: map[ServiceKey]*fakeService{},
		rec: fakecall.New[ServiceKey]("ipvs.Fake",
			[]string{MethodListServices, MethodListDestinations},
			[]string{MethodAddService, MethodUpdateService, MethodDeleteService,
				MethodAddDestination, MethodUpdateDestination, MethodDeleteDestination}),
	}
}

// FailOn makes every later call of method (MethodAddService, …) on key
// fail with err, wrapped as the Kernel wraps its errors, before the table
// is looked at or changed. The zero ServiceKey matches every key (and is
// the key of ListServices). A nil err removes the failure. A failed call is
// still counted. FailOn panics on a name that is not an Interface method,
// so a typo cannot make a test pass silently.
func (f *Fake) FailOn(method string, key ServiceKey, err error) { f.rec.FailOn(method, key, err) }

// Calls returns how many times each method was called since NewFake or
// ResetCalls, failed calls included. Methods never called are absent.
func (f *Fake) Calls() map[string]int { return f.rec.Calls() }

// ResetCalls zeroes the call counters; the table and failures stay.
func (f *Fake) ResetCalls() { f.rec.Reset() }

// Reads returns the number of ListServices and ListDestinations calls.
func (f *Fake) Reads() int { return f.rec.Reads() }

// Writes returns the number of calls to the other, table-changing methods,
// whether or not they failed or changed anything.
func (f *Fake) Writes() int { return f.rec.Writes() }

// begin counts a call and returns the injected failure for it, if any.
func (f *Fake) begin(method string, key ServiceKey) error { return f.rec.Begin(method, key) }

// ListServices returns every virtual server, sorted by key.
func (f *Fake) ListServices() ([]Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(MethodListServices, ServiceKey{}); err != nil {
		return nil, opError(MethodListServices, ServiceKey{}, netip.AddrPort{}, err)
	}
	return f.servicesLocked(), nil
}

func (f *Fake) servicesLocked() []Service {
	out := make([]Service, 0, len(f.services))
	for _, fs := range f.services {
		out = append(out, fs.svc)
	}
	slices.SortFunc(out, func(a, b Service) int { return a.Key.Compare(b.Key) })
	return out
}

// AddService creates a virtual server; ErrExists if the key is taken.
func (f *Fake) AddService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodAddService, s.Key)
	if err == nil {
		err = addService(f.services, s)
	}
	return opError(MethodAddService, s.Key, netip.AddrPort{}, err)
}

func addService(table map[ServiceKey]*fakeService, s Service) error {
	if err := validateFakeService(s); err != nil {
		return err
	}
	if table[s.Key] != nil {
		return ErrExists
	}
	table[s.Key] = &fakeService{svc: normalize(s), dests: map[netip.AddrPort]Destination{}}
	return nil
}

// UpdateService changes scheduler and persistence of an existing virtual
// server; ErrNotFound if there is none.
func (f *Fake) UpdateService(s Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodUpdateService, s.Key)
	if err == nil {
		err = validateService(s)
	}
	var fs *fakeService
	if err == nil {
		// The kernel looks the virtual server up before the scheduler.
		fs, err = f.lookup(s.Key)
	}
	if err == nil {
		err = validateFakeService(s)
	}
	if err == nil {
		fs.svc = normalize(s)
	}
	return opError(MethodUpdateService, s.Key, netip.AddrPort{}, err)
}

// kernelSchedulers are the IPVS schedulers of Linux (ip_vs_<name>). The
// Fake has all of them, as a kernel with every module loaded would; any
// other name is ErrNoScheduler, as the kernel answers.
var kernelSchedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// validateFakeService is validateService plus the check the kernel makes
// itself: that it has the scheduler.
func validateFakeService(s Service) error {
	if err := validateService(s); err != nil {
		return err
	}
	if !slices.Contains(kernelSchedulers, s.Scheduler) {
		return fmt.Errorf("%w (no module ip_vs_%s)", ErrNoScheduler, s.Scheduler)
	}
	return nil
}

// lookup returns the virtual server of key or ErrNotFound.
func (f *Fake) lookup(key ServiceKey) (*fakeService, error) {
	if err := validateKey(key); err != nil {
		return nil, err
	}
	fs := f.services[key]
	if fs == nil {
		return nil, ErrNotFound
	}
	return fs, nil
}

// DeleteService removes a virtual server and its real servers;
// ErrNotFound if there is none.
func (f *Fake) DeleteService(key ServiceKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodDeleteService, key)
	if err == nil {
		if _, err = f.lookup(key); err == nil {
			delete(f.services, key)
		}
	}
	return opError(MethodDeleteService, key, netip.AddrPort{}, err)
}

// ListDestinations returns the real servers of a virtual server sorted by
// address; ErrNotFound if the virtual server does not exist.
func (f *Fake) ListDestinations(key ServiceKey) ([]Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs, err := f.listLocked(key)
	if err != nil {
		return nil, err
	}
	return destsOf(fs), nil
}

// listLocked counts a ListDestinations (or ListDestinationStats) call and
// finds its virtual server. f.mu is held.
func (f *Fake) listLocked(key ServiceKey) (*fakeService, error) {
	err := f.begin(MethodListDestinations, key)
	var fs *fakeService
	if err == nil {
		fs, err = f.lookup(key)
	}
	if err != nil {
		return nil, opError(MethodListDestinations, key, netip.AddrPort{}, err)
	}
	return fs, nil
}

func destsOf(fs *fakeService) []Destination {
	out := slices.Collect(maps.Values(fs.dests))
	if out == nil {
		out = []Destination{}
	}
	sortDests(out)
	return out
}

// AddDestination adds a real server; ErrNotFound if the virtual server
// does not exist, ErrExists if the real server is already there.
func (f *Fake) AddDestination(key ServiceKey, d Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodAddDestination, key)
	if err == nil {
		err = addDest(f.services, key, d)
	}
	return opError(MethodAddDestination, key, d.Addr, err)
}

func addDest(table map[ServiceKey]*fakeService, key ServiceKey, d Destination) error {
	fs := table[key]
	switch {
	case validateKey(key) != nil:
		return validateKey(key)
	case fs == nil:
		return ErrNotFound
	}
	if err := validateDest(key, d); err != nil {
		return err
	}
	if _, ok := fs.dests[d.Addr]; ok {
		return ErrExists
	}
	fs.dests[d.Addr] = written(d)
	delete(fs.stats, d.Addr)
	return nil
}

// UpdateDestination changes weight or forwarding of a real server;
// ErrNotFound if the virtual server or the real server does not exist.
func (f *Fake) UpdateDestination(key ServiceKey, d Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodUpdateDestination, key)
	var fs *fakeService
	if err == nil {
		fs, err = f.lookup(key)
	}
	if err == nil {
		err = validateDest(key, d)
	}
	if err == nil {
		if old, ok := fs.dests[d.Addr]; ok {
			nd := written(d)
			nd.ActiveConns, nd.InactiveConns = old.ActiveConns, old.InactiveConns
			fs.dests[d.Addr] = nd
		} else {
			err = ErrNotFound
		}
	}
	return opError(MethodUpdateDestination, key, d.Addr, err)
}

// DeleteDestination removes a real server; ErrNotFound if the virtual
// server or the real server does not exist.
func (f *Fake) DeleteDestination(key ServiceKey, addr netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(MethodDeleteDestination, key)
	var fs *fakeService
	if err == nil {
		fs, err = f.lookup(key)
	}
	if err == nil {
		if _, ok := fs.dests[addr]; ok {
			delete(fs.dests, addr)
			delete(fs.stats, addr)
		} else {
			err = ErrNotFound
		}
	}
	return opError(MethodDeleteDestination, key, addr, err)
}

// SetConns sets the connection counts the kernel would report for a real
// server, as if clients had connected (ipvsadm -Ln's ActiveConn and
// InActConn); ErrNotFound if there is no such real server. It is not
// counted as a call.
func (f *Fake) SetConns(key ServiceKey, addr netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs := f.services[key]
	if fs == nil {
		return opError(MethodUpdateDestination, key, addr, ErrNotFound)
	}
	d, ok := fs.dests[addr]
	if !ok {
		return opError(MethodUpdateDestination, key, addr, ErrNotFound)
	}
	d.ActiveConns, d.InactiveConns = active, inactive
	fs.dests[addr] = d
	return nil
}

// Dump renders the whole table with Format, like `ipvsadm -Sn`. It is not
// counted as a call.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	dests := make(map[ServiceKey][]Destination, len(f.services))
	for k, fs := range f.services {
		dests[k] = destsOf(fs)
	}
	return Format(f.servicesLocked(), dests)
}

// DumpService renders one virtual server and its real servers like Dump;
// "" if there is no such virtual server.
func (f *Fake) DumpService(key ServiceKey) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	fs := f.services[key]
	if fs == nil {
		return ""
	}
	return Format([]Service{fs.svc}, map[ServiceKey][]Destination{key: destsOf(fs)})
}

// Load parses text in Dump's format (see Parse) and adds its virtual
// servers and real servers to the table, as `ipvsadm-restore` would. Tests
// use it to seed a "kernel" with foreign virtual servers. It is all or
// nothing: on a parse error or a key that is already taken (ErrExists) the
// table is left as it was. It is not counted as a call and ignores FailOn.
func (f *Fake) Load(text string) error {
	services, dests, err := Parse(text)
	if err != nil {
		return fmt.Errorf("loading IPVS table: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	table := make(map[ServiceKey]*fakeService, len(f.services)+len(services))
	for k, fs := range f.services {
		table[k] = &fakeService{svc: fs.svc, dests: maps.Clone(fs.dests), stats: maps.Clone(fs.stats)}
	}
	for _, s := range services {
		if err := addService(table, s); err != nil {
			return fmt.Errorf("loading IPVS table: %w", opError(MethodAddService, s.Key, netip.AddrPort{}, err))
		}
		for _, d := range dests[s.Key] {
			if err := addDest(table, s.Key, d); err != nil {
				return fmt.Errorf("loading IPVS table: %w", opError(MethodAddDestination, s.Key, d.Addr, err))
			}
		}
	}
	f.services = table
	return nil
}

var _ Batcher = (*Fake)(nil)

// Batch runs each write as its method, in order (each counted as that
// call), and counts the batch (Batches).
func (f *Fake) Batch(ws []Write) []error {
	f.mu.Lock()
	f.batches++
	f.mu.Unlock()
	errs := make([]error, len(ws))
	for i, w := range ws {
		switch w.Method {
		case MethodAddService:
			errs[i] = f.AddService(w.Service)
		case MethodAddDestination:
			errs[i] = f.AddDestination(w.Key, w.Dest)
		default:
			errs[i] = fmt.Errorf("%s cannot be batched", w.Method)
		}
	}
	return errs
}

// Batches returns how many times Batch was called.
func (f *Fake) Batches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batches
}
