//go:build vmguest

package guest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SCTP for the guest tests: backends that also answer on SCTP, and a client.
// Package net has no SCTP, so the client opens a one-to-one style socket
// (`socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)`) and connects it with raw
// system calls, then hands it to package net: Go's net takes any connected
// stream socket of an IP family as a TCP one, so reads, writes and
// deadlines go through its poller. The VM loads the sctp module; IPVS's
// SCTP support is built into ip_vs (`ipvsadm --sctp-service`).

// ipprotoSCTP is IPPROTO_SCTP.
const ipprotoSCTP = 132

// StartBackendSCTP is StartBackend answering on SCTP too: on every given
// port, TCP, UDP and SCTP, `backend -name NAME -tcp :P -udp :P -sctp :P`.
func StartBackendSCTP(t testing.TB, ns, name string, ports ...uint16) *Proc {
	t.Helper()
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = fmt.Sprintf(":%d", p)
	}
	list := strings.Join(addrs, ",")
	p := Start(t, ns, BackendBin, "-name", name, "-tcp", list, "-udp", list, "-sctp", list)
	if len(ports) == 0 || p.WaitOutput("ready\n", 20*time.Second) != nil {
		t.Fatalf("SCTP backend %s in %q on ports %v did not start:\n%s", name, ns, ports, p.Output())
	}
	return p
}

// DialSCTP opens an SCTP association from namespace ns (Node for the VM's)
// to addr. Each Ask on it is one request message and one reply, as on TCP.
func DialSCTP(ns string, addr netip.AddrPort) (*Conn, error) {
	var c net.Conn
	err := InNetns(ns, func() (err error) {
		c, err = dialSCTP(addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReader(c)}, nil
}

// AskSCTP makes one request on a new SCTP association from ns to addr.
func AskSCTP(ns string, addr netip.AddrPort) (Reply, error) { return askOnce(DialSCTP(ns, addr)) }

// askOnce makes one request on a new connection c (unless dialling it
// failed with err) and closes it.
func askOnce(c *Conn, err error) (Reply, error) {
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	return c.Ask()
}

// dialSCTP connects a non-blocking SCTP socket in the calling thread's
// namespace to addr, waiting at most RequestTimeout for the association.
func dialSCTP(addr netip.AddrPort) (net.Conn, error) {
	family, ip := syscall.AF_INET6, addr.Addr()
	var sa syscall.Sockaddr = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: ip.As16()}
	if ip.Is4() {
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, ipprotoSCTP)
	if err != nil {
		return nil, fmt.Errorf("sctp socket: %w (is the sctp module loaded?)", err)
	}
	f := os.NewFile(uintptr(fd), "sctp "+addr.String()) // non-blocking: on the poller
	defer f.Close()                                     // net.FileConn works on a duplicate
	if err := syscall.Connect(fd, sa); err != nil && !errors.Is(err, syscall.EINPROGRESS) {
		return nil, fmt.Errorf("sctp connect %s: %w", addr, err)
	}
	if err := waitConnected(f); err != nil {
		return nil, fmt.Errorf("sctp connect %s: %w", addr, err)
	}
	return net.FileConn(f)
}

// waitConnected waits, up to RequestTimeout, until the socket of f is
// writable and connected, and returns the connect error (SO_ERROR).
func waitConnected(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if err := f.SetWriteDeadline(time.Now().Add(RequestTimeout)); err != nil {
		return err
	}
	var connErr error
	err = rc.Write(func(fd uintptr) bool {
		e, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		switch {
		case err != nil:
			connErr = err
		case e != 0 && e != int(syscall.EINPROGRESS) && e != int(syscall.EALREADY) && e != int(syscall.EINTR):
			connErr = syscall.Errno(e)
		default:
			_, err := syscall.Getpeername(int(fd))
			return err == nil // not yet connected: wait for writability
		}
		return true
	})
	if err != nil {
		return err // the deadline
	}
	return connErr
}
