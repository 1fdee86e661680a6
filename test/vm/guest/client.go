//go:build vmguest

package guest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequestTimeout bounds every request of the client helpers (the VM is slow).
var RequestTimeout = 5 * time.Second

// Reply is one answer of a backend: its name and the client address it saw
// (a masqueraded request shows the node's address here).
type Reply struct {
	Name   string
	Source netip.AddrPort
}

// parseReply reads a backend's "pod1 10.244.1.1:54321" line.
func parseReply(line string) (Reply, error) {
	name, src, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return Reply{}, fmt.Errorf("malformed reply %q", line)
	}
	ap, err := netip.ParseAddrPort(src)
	if err != nil {
		return Reply{}, fmt.Errorf("malformed reply %q: %w", line, err)
	}
	return Reply{Name: name, Source: ap}, nil
}

// Conn is a TCP connection to a backend, directly or through a virtual server.
// Each Ask is one request line and one reply on the same connection, so a test can
// hold it open across changes (an agent restart) and check it still works.
type Conn struct {
	c net.Conn
	r *bufio.Reader
}

// DialTCP connects from namespace ns (Node for the node) to addr.
func DialTCP(ns string, addr netip.AddrPort) (*Conn, error) {
	var c net.Conn
	err := InNetns(ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), RequestTimeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReader(c)}, nil
}

// Ask sends one request line and reads the reply line.
func (c *Conn) Ask() (Reply, error) {
	if err := c.c.SetDeadline(time.Now().Add(RequestTimeout)); err != nil {
		return Reply{}, err
	}
	if _, err := c.c.Write([]byte("hello\n")); err != nil {
		return Reply{}, err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("reading the reply from %s: %w", c.c.RemoteAddr(), err)
	}
	return parseReply(line)
}

// LocalAddr is the client side of the connection.
func (c *Conn) LocalAddr() netip.AddrPort {
	return c.c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// AskTCP makes one request on a new TCP connection from ns to addr.
func AskTCP(ns string, addr netip.AddrPort) (Reply, error) {
	c, err := DialTCP(ns, addr)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	return c.Ask()
}

// AskUDP sends one datagram from a new socket in ns to addr and reads the reply.
func AskUDP(ns string, addr netip.AddrPort) (Reply, error) {
	var r Reply
	err := InNetns(ns, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		defer c.Close()
		r, err = askUDP(c)
		return err
	})
	return r, err
}

func askUDP(c *net.UDPConn) (Reply, error) {
	if err := c.SetDeadline(time.Now().Add(RequestTimeout)); err != nil {
		return Reply{}, err
	}
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return Reply{}, fmt.Errorf("reading the reply from %s: %w", c.RemoteAddr(), err)
	}
	return parseReply(string(buf[:n]))
}

// Tally counts the answers to a series of requests.
type Tally struct {
	ByName  map[string]int // answers per backend name
	Replies []Reply        // every answer, in order
	Failed  int            // requests without an answer
	Errors  []error        // the first few failures
}

func (t *Tally) add(r Reply, err error) {
	if err != nil {
		t.Failed++
		if len(t.Errors) < 5 {
			t.Errors = append(t.Errors, err)
		}
		return
	}
	t.ByName[r.Name]++
	t.Replies = append(t.Replies, r)
}

// String reads like "pod1=100 pod2=100 pod3=100 failed=0".
func (t Tally) String() string {
	names := make([]string, 0, len(t.ByName))
	for n := range t.ByName {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%d ", n, t.ByName[n])
	}
	fmt.Fprintf(&b, "failed=%d", t.Failed)
	if len(t.Errors) > 0 {
		fmt.Fprintf(&b, " (first errors: %v)", t.Errors)
	}
	return b.String()
}

// CountTCP makes n requests from ns to addr, one at a time, each on a new TCP
// connection, and counts the answers per backend name.
func CountTCP(ns string, addr netip.AddrPort, n int) Tally {
	t := Tally{ByName: map[string]int{}}
	err := InNetns(ns, func() error {
		for range n {
			t.add(askTCPHere(addr))
		}
		return nil
	})
	if err != nil {
		t.add(Reply{}, err)
		t.Failed = n
	}
	return t
}

func askTCPHere(addr netip.AddrPort) (Reply, error) {
	c, err := net.DialTimeout("tcp", addr.String(), RequestTimeout)
	if err != nil {
		return Reply{}, err
	}
	conn := &Conn{c: c, r: bufio.NewReader(c)}
	defer conn.Close()
	return conn.Ask()
}

// CountUDP sends n datagrams from ns to addr, one at a time, each from a new socket,
// and counts the answers per backend name. The sockets stay open until all n are
// done, so no two requests share a source port (IPVS keeps a UDP connection per
// client port for its udp timeout, 300s by default, and would send a reused port
// to the same backend again; the same holds across calls).
func CountUDP(ns string, addr netip.AddrPort, n int) Tally {
	t := Tally{ByName: map[string]int{}}
	err := InNetns(ns, func() error {
		var open []*net.UDPConn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for range n {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
			if err != nil {
				t.add(Reply{}, err)
				continue
			}
			open = append(open, c)
			t.add(askUDP(c))
		}
		return nil
	})
	if err != nil {
		t.add(Reply{}, err)
		t.Failed = n
	}
	return t
}

// UDPStream is one UDP socket that sends a datagram at a fixed interval and
// records every answer, as a long-lived UDP client (DNS, games, media)
// keeps its source port.
type UDPStream struct {
	mu      sync.Mutex
	answers []TimedReply
	stop    chan struct{}
	done    chan error
}

// TimedReply is an answer and when it came.
type TimedReply struct {
	Reply
	At time.Time
}

// StartUDPStream sends "hello" from one socket in ns to addr every
// interval until the test ends, waiting at most interval for each answer.
func StartUDPStream(t testing.TB, ns string, addr netip.AddrPort, interval time.Duration) *UDPStream {
	s := &UDPStream{stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan *net.UDPConn, 1)
	go func() {
		s.done <- InNetns(ns, func() error {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
			if err != nil {
				ready <- nil
				return err
			}
			ready <- c
			return nil
		})
	}()
	c := <-ready
	if err := <-s.done; c == nil || err != nil {
		t.Fatalf("UDP socket in %s to %s: %v", ns, addr, err)
	}
	go s.run(c, interval)
	t.Cleanup(func() {
		close(s.stop)
		<-s.done
		c.Close()
	})
	return s
}

func (s *UDPStream) run(c *net.UDPConn, interval time.Duration) {
	buf := make([]byte, 512)
	for {
		select {
		case <-s.stop:
			s.done <- nil
			return
		default:
		}
		sent := time.Now()
		_ = c.SetDeadline(sent.Add(interval))
		if _, err := c.Write([]byte("hello\n")); err == nil {
			if n, err := c.Read(buf); err == nil {
				if r, err := parseReply(string(buf[:n])); err == nil {
					s.mu.Lock()
					s.answers = append(s.answers, TimedReply{Reply: r, At: time.Now()})
					s.mu.Unlock()
				}
			}
		}
		time.Sleep(time.Until(sent.Add(interval)))
	}
}

// WaitAnswer waits for the first answer.
func (s *UDPStream) WaitAnswer(t testing.TB, timeout time.Duration) TimedReply {
	t.Helper()
	return s.WaitAnswerFrom(t, timeout, func(Reply) bool { return true })
}

// WaitAnswerFrom waits for the first answer, from now on, that ok accepts.
func (s *UDPStream) WaitAnswerFrom(t testing.TB, timeout time.Duration, ok func(Reply) bool) TimedReply {
	t.Helper()
	since := time.Now()
	deadline := since.Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, a := range s.answers {
			if !a.At.Before(since) && ok(a.Reply) {
				s.mu.Unlock()
				return a
			}
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("no such UDP answer within %v; the last answers: %v", timeout, lastAnswers(s.answers, 5))
	return TimedReply{}
}

func lastAnswers(a []TimedReply, n int) []TimedReply {
	if len(a) > n {
		return a[len(a)-n:]
	}
	return a
}
