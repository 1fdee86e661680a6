// Command backend is the test bed's pod: it answers on TCP, UDP and SCTP with
// its name and the client address it saw, so a test can count where requests
// went and whether they were masqueraded.
//
//	backend -name pod1 -tcp :8080 -udp :8080 [-sctp :8080]
//
// TCP: every request line on a connection gets one reply line, so one long-lived
// connection can be reused (e.g. across an agent restart). UDP: every datagram gets
// one reply datagram. SCTP (one-to-one style sockets, like
// `socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP)`; the kernel needs the sctp
// module): every request line on an association gets one reply, as on TCP. A
// reply reads "pod1 10.244.1.1:54321\n". Once every listener is bound it prints
// "ready" on stdout; it runs until killed.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	name := flag.String("name", "", "name to answer with (required)")
	tcp := flag.String("tcp", "", "comma-separated TCP listen addresses, e.g. :8080,:9090")
	udp := flag.String("udp", "", "comma-separated UDP listen addresses")
	sctp := flag.String("sctp", "", "comma-separated SCTP listen addresses")
	flag.Parse()
	if err := run(*name, split(*tcp), split(*udp), split(*sctp)); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func run(name string, tcpAddrs, udpAddrs, sctpAddrs []string) error {
	if name == "" || strings.ContainsAny(name, " \n") {
		return fmt.Errorf("-name %q: must be set and hold no space", name)
	}
	if len(tcpAddrs)+len(udpAddrs)+len(sctpAddrs) == 0 {
		return errors.New("nothing to listen on: give -tcp, -udp and/or -sctp")
	}
	var listeners []net.Listener
	for _, a := range tcpAddrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	for _, a := range sctpAddrs {
		l, err := listenSCTP(a)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	var conns []net.PacketConn
	for _, a := range udpAddrs {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	errc := make(chan error, len(listeners)+len(conns))
	for _, l := range listeners {
		go func() { errc <- serveTCP(name, l) }()
	}
	for _, c := range conns {
		go func() { errc <- serveUDP(name, c) }()
	}
	fmt.Println("ready")
	return <-errc
}

// reply is the answer line for a client seen at remote.
func reply(name string, remote net.Addr) string {
	src := remote.String()
	switch a := remote.(type) {
	case *net.TCPAddr:
		src = unmap(a.AddrPort()).String()
	case *net.UDPAddr:
		src = unmap(a.AddrPort()).String()
	}
	return name + " " + src + "\n"
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func serveTCP(name string, l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		go answerLines(name, c)
	}
}

// answerLines writes one reply per request line until the client closes.
func answerLines(name string, c net.Conn) {
	defer c.Close()
	answer := reply(name, c.RemoteAddr())
	s := bufio.NewScanner(c)
	for s.Scan() {
		if _, err := c.Write([]byte(answer)); err != nil {
			return
		}
	}
}

func serveUDP(name string, c net.PacketConn) error {
	buf := make([]byte, 64*1024)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("read on %s: %w", c.LocalAddr(), err)
		}
		if _, err := c.WriteTo([]byte(reply(name, from)), from); err != nil {
			fmt.Fprintf(os.Stderr, "backend: reply to %s: %v\n", from, err)
		}
	}
}

// ipprotoSCTP is IPPROTO_SCTP, which package syscall does not name everywhere.
const ipprotoSCTP = 132

// listenSCTP listens on addr (":8080", "10.244.1.2:8080", "[fd00::2]:8080")
// with a one-to-one style SCTP socket: socket(2), bind(2) and listen(2) by
// hand, as package net has no SCTP, then handed to net.FileListener. Go's
// net takes any stream socket of an IP family for TCP, so accept, read,
// write and close work through its poller; an association reads like a
// stream of messages, one request line each. An empty host listens on
// every IPv4 and IPv6 address (IPV6_V6ONLY off, or IPv4 alone when the
// kernel has no IPv6).
func listenSCTP(addr string) (net.Listener, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sctp address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("sctp address %q: bad port", addr)
	}
	ip := netip.IPv6Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("sctp address %q: %w", addr, err)
		}
	}
	fd, err := sctpSocket(ip)
	if err != nil && host == "" && errors.Is(err, syscall.EAFNOSUPPORT) {
		ip = netip.IPv4Unspecified()
		fd, err = sctpSocket(ip)
	}
	if err != nil {
		return nil, fmt.Errorf("sctp socket for %s: %w (is the sctp module loaded?)", addr, err)
	}
	f := os.NewFile(uintptr(fd), "sctp "+addr)
	defer f.Close() // net.FileListener works on a duplicate
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("sctp %s: SO_REUSEADDR: %w", addr, err)
	}
	if ip.Is6() && host == "" {
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
			return nil, fmt.Errorf("sctp %s: IPV6_V6ONLY: %w", addr, err)
		}
	}
	var sa syscall.Sockaddr
	if ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	} else {
		sa = &syscall.SockaddrInet6{Port: int(port), Addr: ip.As16()}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("sctp bind %s: %w", addr, err)
	}
	if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("sctp listen %s: %w", addr, err)
	}
	return net.FileListener(f)
}

// sctpSocket is socket(AF_INET or AF_INET6, SOCK_STREAM, IPPROTO_SCTP) for ip's family.
func sctpSocket(ip netip.Addr) (int, error) {
	family := syscall.AF_INET
	if ip.Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, ipprotoSCTP)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	return fd, err
}
