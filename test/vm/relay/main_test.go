package main

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// echoOnce listens on 127.0.0.1, answers each line of one connection with
// "echo: LINE" and returns its address.
func echoOnce(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s := bufio.NewScanner(c)
		for s.Scan() {
			if _, err := io.WriteString(c, "echo: "+s.Text()+"\n"); err != nil {
				return
			}
		}
	}()
	return l.Addr().String()
}

func TestRelayJoinsTheGuestToALoopbackPort(t *testing.T) {
	addr := echoOnce(t)
	var out strings.Builder
	if rc := run([]string{addr}, strings.NewReader("one\ntwo\n"), &out); rc != 0 {
		t.Fatalf("exit status %d", rc)
	}
	if got, want := out.String(), "echo: one\necho: two\n"; got != want {
		t.Errorf("the guest got %q, want %q", got, want)
	}
}

func TestRelayRefuses(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := free.Addr().String()
	free.Close()
	for _, tc := range []struct {
		name string
		args []string
		rc   int
	}{
		{"no address", nil, 2},
		{"two addresses", []string{"127.0.0.1:1", "127.0.0.1:2"}, 2},
		{"not an address", []string{"localhost:80"}, 2},
		{"not loopback", []string{"192.0.2.1:443"}, 2},
		{"nothing listens", []string{closed}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if rc := run(tc.args, strings.NewReader("x\n"), &out); rc != tc.rc || out.Len() != 0 {
				t.Errorf("exit status %d, output %q; want %d and nothing", rc, out.String(), tc.rc)
			}
		})
	}
}
