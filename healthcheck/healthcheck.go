// Package healthcheck serves the health-check node ports of Services with
// externalTrafficPolicy: Local, as kube-proxy's ServiceHealthServer does
// (k8s.io/kubernetes/pkg/proxy/healthcheck). A cloud load balancer probes
// http://NODE:healthCheckNodePort/ and sends the Service's traffic only to
// the nodes that answer 200.
//
// Every path and method gets the same answer, like
// `curl -i http://NODE:32100/anything`:
//
//	HTTP/1.1 200 OK
//	Content-Type: application/json
//	X-Content-Type-Options: nosniff
//
//	{
//		"service": {
//			"namespace": "default",
//			"name": "web"
//		},
//		"localEndpoints": 2,
//		"serviceProxyHealthy": true
//	}
//
// The status is 200 when the Service has at least one ready endpoint on this
// node and the proxy itself is healthy, and 503 Service Unavailable otherwise.
// The body is indented with tabs and has no trailing newline, byte for byte
// what kube-proxy writes.
package healthcheck

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
)

// Timeouts of every health-check HTTP server. A probe is one small request;
// a client that is slower than this is dropped rather than holding a
// connection open.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
)

// Service is one health-check node port to serve.
type Service struct {
	Name           types.NamespacedName
	Port           uint16 // spec.healthCheckNodePort
	LocalEndpoints int    // ready endpoints of the Service on this node
}

// PortError is one Service whose health-check port is not served, or not on
// every address. Sync returns them joined with errors.Join; the next Sync
// tries again.
type PortError struct {
	Service types.NamespacedName
	Port    uint16
	// Addr is the listen address that failed (":32100", "[fd00::1]:32100"),
	// or "" when the port was refused before any listen.
	Addr string
	Err  error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("health check port %d of %s: %v", e.Port, e.Service, e.Err)
}

func (e *PortError) Unwrap() error { return e.Err }

// errPortZero is the cause of a PortError for a Service without a port.
var errPortZero = errors.New("port 0 cannot be served")

// Server opens and closes one HTTP listener per health-check node port, on
// each given address. Sync, Close and Ports are safe for concurrent use; the
// HTTP handlers never wait for them.
type Server struct {
	log     *zap.Logger
	httpLog *log.Logger
	healthy func() bool
	listen  func(network, addr string) (net.Listener, error)

	mu    sync.Mutex
	ports map[uint16]*port
	// logged holds the errors of the last Sync, so that a problem that
	// persists is logged once and not at every Sync.
	logged map[string]bool
}

// port is one served health-check port: its answer and its listeners.
type port struct {
	answer    answer
	listeners map[netip.Addr]*listener // the zero Addr listens on all addresses
}

// listener is one HTTP server on one address; done is closed when its
// Serve has returned.
type listener struct {
	srv  *http.Server
	done chan struct{}
}

// status is what a port answers. It is never modified once stored, so a
// handler reads the name and the count of the same Sync.
type status struct {
	name  types.NamespacedName
	local int
}

// New returns a Server; healthy reports whether the proxy itself is healthy
// (serviceProxyHealthy); nil means always true. listen is how it opens a
// listener (nil: net.Listen); tests inject failures. New opens nothing.
func New(log *zap.Logger, healthy func() bool, listen func(network, addr string) (net.Listener, error)) *Server {
	if healthy == nil {
		healthy = func() bool { return true }
	}
	if listen == nil {
		listen = net.Listen
	}
	return &Server{
		log:     log,
		httpLog: zap.NewStdLog(log.Named("http")),
		healthy: healthy,
		listen:  listen,
		ports:   map[uint16]*port{},
		logged:  map[string]bool{},
	}
}

// Sync makes the served set exactly services, on each of addrs (the
// node-port addresses; an empty list means all addresses, ":port").
//
// Listeners no longer wanted (their port or their address is gone) are closed
// before any is opened, so moving a port between addresses does not collide
// with itself. A Service whose port is already served only gets its new count
// and name, without a reopen: probes in flight see no refused connection.
//
// Two Services with the same port: the first by namespace, then name, gets
// it. What is not served is reported in the returned error (errors.Join): a
// *PortError for each port that cannot be opened on an address (another
// process holds it), each duplicate and each port 0, and one error for
// invalid addresses, which are skipped. Each distinct error is logged once
// for as long as it persists; none is fatal. Every listener that did open
// serves, including a port's other addresses, and what failed is tried again
// at the next Sync, as is a listener whose server stopped by itself.
func (s *Server) Sync(addrs []netip.Addr, services []Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want, errs := assign(services)
	where, addrErrs := listenAddrs(addrs)
	errs = append(errs, addrErrs...)
	errs = append(errs, s.closeUnwanted(want, where)...)
	errs = append(errs, s.openWanted(want, where)...)
	s.logNew(errs)
	return errors.Join(errs...)
}

// assign gives each port to its first Service by namespace/name and reports
// the others.
func assign(services []Service) (map[uint16]status, []error) {
	sorted := slices.Clone(services)
	slices.SortStableFunc(sorted, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Name.Namespace, b.Name.Namespace), cmp.Compare(a.Name.Name, b.Name.Name))
	})
	want := make(map[uint16]status, len(sorted))
	var errs []error
	for _, svc := range sorted {
		if svc.Port == 0 {
			errs = append(errs, &PortError{Service: svc.Name, Err: errPortZero})
			continue
		}
		if owner, taken := want[svc.Port]; taken {
			errs = append(errs, &PortError{Service: svc.Name, Port: svc.Port,
				Err: fmt.Errorf("already served for %s", owner.name)})
			continue
		}
		want[svc.Port] = status{name: svc.Name, local: svc.LocalEndpoints}
	}
	return want, errs
}

// listenAddrs returns the addresses to listen on, without duplicates: the
// zero Addr alone (all addresses) for an empty list. Invalid addresses are
// skipped, with one error for them all.
func listenAddrs(addrs []netip.Addr) ([]netip.Addr, []error) {
	if len(addrs) == 0 {
		return []netip.Addr{{}}, nil
	}
	var out []netip.Addr
	invalid := 0
	for _, a := range addrs {
		switch {
		case !a.IsValid():
			invalid++
		case !slices.Contains(out, a):
			out = append(out, a)
		}
	}
	if invalid > 0 {
		return out, []error{fmt.Errorf("health check addresses: %d invalid address(es) skipped", invalid)}
	}
	return out, nil
}

// closeUnwanted closes the listeners of ports no longer wanted, on addresses
// no longer wanted, and those whose server stopped; it updates the answer of
// the ports that stay.
func (s *Server) closeUnwanted(want map[uint16]status, where []netip.Addr) []error {
	var errs []error
	for _, num := range sortedPorts(s.ports) {
		p := s.ports[num]
		st, keep := want[num]
		for _, addr := range sortedAddrs(p.listeners) {
			l := p.listeners[addr]
			if keep && slices.Contains(where, addr) && !l.stopped() {
				continue
			}
			if err := l.close(); err != nil {
				errs = append(errs, &PortError{Service: p.answer.name(), Port: num, Addr: listenAddr(addr, num),
					Err: fmt.Errorf("closing: %w", err)})
			}
			delete(p.listeners, addr)
			s.log.Debug("closed health check port", zap.Stringer("service", p.answer.name()),
				zap.String("address", listenAddr(addr, num)))
		}
		if !keep {
			delete(s.ports, num)
			continue
		}
		if cur := p.answer.status.Load(); *cur != st {
			p.answer.status.Store(&st)
		}
	}
	return errs
}

// openWanted opens every wanted listener that is not open yet.
func (s *Server) openWanted(want map[uint16]status, where []netip.Addr) []error {
	var errs []error
	for _, num := range sortedPorts(want) {
		p := s.ports[num]
		if p == nil {
			st := want[num]
			p = &port{answer: answer{healthy: s.healthy}, listeners: map[netip.Addr]*listener{}}
			p.answer.status.Store(&st)
		}
		for _, addr := range where {
			if p.listeners[addr] != nil {
				continue
			}
			l, err := s.open(listenAddr(addr, num), &p.answer)
			if err != nil {
				errs = append(errs, &PortError{Service: want[num].name, Port: num, Addr: listenAddr(addr, num), Err: err})
				continue
			}
			p.listeners[addr] = l
			s.log.Debug("opened health check port", zap.Stringer("service", want[num].name),
				zap.String("address", listenAddr(addr, num)))
		}
		if len(p.listeners) > 0 {
			s.ports[num] = p
		} else {
			delete(s.ports, num)
		}
	}
	return errs
}

// open listens on addr and serves h there until the listener is closed.
func (s *Server) open(addr string, h http.Handler) (*listener, error) {
	ln, err := s.listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &listener{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          s.httpLog,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		// Serve closes ln when it returns, even when Close came first.
		if err := l.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			// No caller to return it to: the next Sync reopens the listener.
			s.log.Error("health check server stopped", zap.String("address", addr), zap.Error(err))
		}
	}()
	return l, nil
}

// stopped reports whether the server stopped without being closed.
func (l *listener) stopped() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// close stops the server and waits until its Serve has returned and its
// socket is closed, so the port is free again when close returns.
func (l *listener) close() error {
	err := l.srv.Close()
	<-l.done
	return err
}

// logNew logs the errors that the previous Sync did not have.
func (s *Server) logNew(errs []error) {
	now := make(map[string]bool, len(errs))
	for _, err := range errs {
		msg := err.Error()
		now[msg] = true
		if !s.logged[msg] {
			s.log.Error("health check port not served", zap.Error(err))
		}
	}
	s.logged = now
}

// Close stops every listener and waits for their servers to return. The
// Server may be synced again afterwards.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, num := range sortedPorts(s.ports) {
		p := s.ports[num]
		for _, addr := range sortedAddrs(p.listeners) {
			if err := p.listeners[addr].close(); err != nil {
				errs = append(errs, &PortError{Service: p.answer.name(), Port: num, Addr: listenAddr(addr, num),
					Err: fmt.Errorf("closing: %w", err)})
			}
		}
	}
	s.ports = map[uint16]*port{}
	s.logged = map[string]bool{}
	return errors.Join(errs...)
}

// Ports returns the ports currently served on at least one address, sorted
// (for tests and diagnostics).
func (s *Server) Ports() []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedPorts(s.ports)
}

// answer is the HTTP handler of one port.
type answer struct {
	status  atomic.Pointer[status]
	healthy func() bool
}

func (a *answer) name() types.NamespacedName { return a.status.Load().name }

// reply is the body kube-proxy writes, fields in its order.
type reply struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// ServeHTTP answers any path and method with the port's status.
func (a *answer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	st := a.status.Load()
	var r reply
	r.Service.Namespace, r.Service.Name = st.name.Namespace, st.name.Name
	r.LocalEndpoints = st.local
	r.ServiceProxyHealthy = a.healthy()
	body, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusServiceUnavailable
	if st.local > 0 && r.ServiceProxyHealthy {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	_, _ = w.Write(body) // the client went away; nothing to do
}

// listenAddr is the net.Listen address of a port on addr: ":port" for the
// zero Addr, "[fd00::1]:port" for IPv6.
func listenAddr(addr netip.Addr, num uint16) string {
	if !addr.IsValid() {
		return ":" + strconv.Itoa(int(num))
	}
	return netip.AddrPortFrom(addr, num).String()
}

func sortedPorts[V any](m map[uint16]V) []uint16 { return slices.Sorted(maps.Keys(m)) }

func sortedAddrs(m map[netip.Addr]*listener) []netip.Addr {
	return slices.SortedFunc(maps.Keys(m), netip.Addr.Compare)
}
