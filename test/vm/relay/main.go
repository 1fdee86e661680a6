// Command relay is the host end of the test VM's one way out. qemu runs it
// once per guest connection to the guestfwd address (user networking,
// guestfwd=tcp:10.0.2.100:P-cmd:relay 127.0.0.1:P), with the guest's
// connection on stdin and stdout, and relay joins it to a new connection to
// the given address on the host's loopback:
//
//	relay 127.0.0.1:6443
//
// It accepts only loopback addresses. It writes nothing of its own: stderr is
// the guest's connection too. It exits once both directions are done, or
// when the host side ends; the guest then sees its connection close (or be
// refused, when nothing listens on the host port).
package main

import (
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// drainTimeout bounds how long relay waits for the host side to finish
// after the guest has finished sending.
const drainTimeout = 30 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout))
}

// run joins guest (in, out) to a new connection to the loopback address in
// args, and returns the exit status: 2 for bad arguments, 1 when the host
// side cannot be reached, 0 otherwise.
func run(args []string, in io.Reader, out io.Writer) int {
	if len(args) != 1 {
		return 2
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil || !ap.Addr().IsLoopback() {
		return 2
	}
	conn, err := net.DialTimeout("tcp", ap.String(), 10*time.Second)
	if err != nil {
		return 1
	}
	defer conn.Close()
	hostDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, conn) // host -> guest
		close(hostDone)
	}()
	guestDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, in) // guest -> host
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(guestDone)
	}()
	select {
	case <-hostDone: // the host closed (or failed): closing our end tells the guest
	case <-guestDone:
		select {
		case <-hostDone:
		case <-time.After(drainTimeout):
		}
	}
	return 0
}
