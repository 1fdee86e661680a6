// Command backend is the test bed's pod: it answers on TCP and UDP with its name
// and the client address it saw, so a test can count where requests went and
// whether they were masqueraded.
//
//	backend -name pod1 -tcp :8080 -udp :8080
//
// TCP: every request line on a connection gets one reply line, so one long-lived
// connection can be reused (e.g. across an agent restart). UDP: every datagram gets
// one reply datagram. A reply reads "pod1 10.244.1.1:54321\n". Once every listener
// is bound it prints "ready" on stdout; it runs until killed.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

func main() {
	name := flag.String("name", "", "name to answer with (required)")
	tcp := flag.String("tcp", "", "comma-separated TCP listen addresses, e.g. :8080,:9090")
	udp := flag.String("udp", "", "comma-separated UDP listen addresses")
	flag.Parse()
	if err := run(*name, split(*tcp), split(*udp)); err != nil {
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

func run(name string, tcpAddrs, udpAddrs []string) error {
	if name == "" || strings.ContainsAny(name, " \n") {
		return fmt.Errorf("-name %q: must be set and hold no space", name)
	}
	if len(tcpAddrs)+len(udpAddrs) == 0 {
		return errors.New("nothing to listen on: give -tcp and/or -udp")
	}
	var listeners []net.Listener
	for _, a := range tcpAddrs {
		l, err := net.Listen("tcp", a)
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
