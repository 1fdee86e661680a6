//go:build linux

package netif

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The pure parts of LocalAddrs and WatchAddrs are tested here on made-up
// netlink messages; TestLocalAddrsInNetns runs them against the kernel,
// in a network namespace of its own (netns_linux_test.go).

func nlAddr(t *testing.T, cidr string, link int) netlink.Addr {
	t.Helper()
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return netlink.Addr{IPNet: n, LinkIndex: link}
}

func TestLocalAddrsFilter(t *testing.T) {
	names := map[int]string{1: "lo", 2: "eth0", 3: DefaultLink, 4: "cali1"}
	raw := []netlink.Addr{
		nlAddr(t, "127.0.0.1/8", 1),
		nlAddr(t, "::1/128", 1),
		nlAddr(t, "192.168.10.7/24", 2),
		nlAddr(t, "2001:db8::7/64", 2),
		nlAddr(t, "fe80::1/64", 2), // link-local: left out
		nlAddr(t, "10.96.0.10/32", 3),
		nlAddr(t, "fd00::10/128", 3),
		nlAddr(t, "10.96.0.11/32", 3),
		nlAddr(t, "10.96.0.11/32", 4), // also on another link: listed
		nlAddr(t, "169.254.1.1/32", 4),
		nlAddr(t, "172.16.0.1/32", 9), // its link is gone: left out
	}
	a := netip.MustParseAddr
	tests := []struct {
		name   string
		except string
		ipv6   bool
		want   []netip.Addr
	}{
		{"IPv4 except the dummy", DefaultLink, false, []netip.Addr{a("10.96.0.11"), a("127.0.0.1"), a("169.254.1.1"), a("192.168.10.7")}},
		{"IPv6 except the dummy", DefaultLink, true, []netip.Addr{a("::1"), a("2001:db8::7")}},
		{"IPv4, nothing excepted", "", false,
			[]netip.Addr{a("10.96.0.10"), a("10.96.0.11"), a("127.0.0.1"), a("169.254.1.1"), a("192.168.10.7")}},
		{"IPv6, nothing excepted", "", true, []netip.Addr{a("::1"), a("2001:db8::7"), a("fd00::10")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := localAddrs(raw, names, tt.except, tt.ipv6); !slices.Equal(got, tt.want) {
				t.Errorf("localAddrs = %v, want %v", got, tt.want)
			}
		})
	}
	if got := localAddrs(nil, names, DefaultLink, false); got == nil || len(got) != 0 {
		t.Errorf("localAddrs(nil) = %#v, want an empty list", got)
	}
}

// fakeLinks is a lookup for linkFilter: index to name, counting lookups.
type fakeLinks struct {
	names   map[int]string
	lookups int
}

func (f *fakeLinks) lookup(index int) (string, error) {
	f.lookups++
	if name, ok := f.names[index]; ok {
		return name, nil
	}
	return "", netlink.LinkNotFoundError{}
}

func TestLinkFilter(t *testing.T) {
	links := &fakeLinks{names: map[int]string{2: "eth0", 7: DefaultLink}}
	f := linkFilter{name: DefaultLink, lookup: links.lookup}
	steps := []struct {
		what     string
		before   func()
		index    int
		excepted bool
		lookups  int // in total, after the step
	}{
		{"the dummy, looked up once", nil, 7, true, 1},
		{"the dummy again, remembered", nil, 7, true, 1},
		{"another link", nil, 2, false, 2},
		{"another link, looked up every time", nil, 2, false, 3},
		{"the dummy re-created under a new index", func() { delete(links.names, 7); links.names[12] = DefaultLink }, 12, true, 4},
		{"the old dummy's late events: gone, so reported", nil, 7, false, 5},
		{"the new dummy, remembered", nil, 12, true, 5},
		{"an unknown index is reported", nil, 40, false, 6},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		if got := f.excepted(s.index); got != s.excepted || links.lookups != s.lookups {
			t.Errorf("%s: excepted(%d) = %v after %d lookups, want %v after %d", s.what, s.index, got, links.lookups, s.excepted, s.lookups)
		}
	}
	none := linkFilter{lookup: func(int) (string, error) { t.Fatal("looked up with nothing excepted"); return "", nil }}
	if none.excepted(7) {
		t.Errorf("nothing excepted: excepted(7) = true")
	}
}

// fakeWatch is an addrWatch fed by the test instead of netlink: closing
// done ends the feed, as netlink closes its socket.
func fakeWatch(names map[int]string) (*addrWatch, chan netlink.AddrUpdate) {
	updates := make(chan netlink.AddrUpdate)
	links := &fakeLinks{names: names}
	w := &addrWatch{updates: updates, done: make(chan struct{}), except: linkFilter{name: DefaultLink, lookup: links.lookup}}
	return w, updates
}

func update(t *testing.T, cidr string, link int, added bool) netlink.AddrUpdate {
	a := nlAddr(t, cidr, link)
	return netlink.AddrUpdate{LinkAddress: *a.IPNet, LinkIndex: link, NewAddr: added}
}

func TestAddrWatchRun(t *testing.T) {
	names := map[int]string{1: "lo", 2: "eth0", 3: DefaultLink}
	events := []struct {
		u        netlink.AddrUpdate
		relevant bool
	}{
		{update(t, "192.168.10.7/24", 2, true), true},
		{update(t, "192.168.10.7/24", 2, false), true},
		{update(t, "10.96.0.10/32", 3, true), false},
		{update(t, "fd00::10/128", 3, false), false},
		{update(t, "fe80::1/64", 2, true), false},
		{update(t, "2001:db8::7/64", 2, true), true},
		{update(t, "::1/128", 1, true), true},
		{update(t, "172.16.0.1/32", 9, false), true}, // on a link already gone
	}

	t.Run("changes reported, then the subscription breaks", func(t *testing.T) {
		w, updates := fakeWatch(names)
		var calls int
		errc := make(chan error, 1)
		go func() { errc <- w.run(context.Background(), func() { calls++ }) }()
		want := 0
		for _, e := range events {
			updates <- e.u
			if e.relevant {
				want++
			}
		}
		w.report(errors.New("Receive failed: no buffer space available"))
		close(updates)
		err := <-errc
		if calls != want {
			t.Errorf("changed called %d times, want %d", calls, want)
		}
		if err == nil || err.Error() != "watching addresses: the subscription ended: Receive failed: no buffer space available" {
			t.Errorf("run() = %v", err)
		}
		select {
		case <-w.done:
		default:
			t.Errorf("the subscription was not ended")
		}
	})
	t.Run("ended without a reason", func(t *testing.T) {
		w, updates := fakeWatch(names)
		close(updates)
		if err := w.run(context.Background(), func() {}); err == nil || err.Error() != "watching addresses: the subscription ended" {
			t.Errorf("run() = %v", err)
		}
	})
	t.Run("context done: nil, and netlink's sender is not left blocked", func(t *testing.T) {
		w, updates := fakeWatch(names)
		ctx, cancel := context.WithCancel(context.Background())
		sent := make(chan struct{})
		go func() { // netlink's side: one event in flight, then closed when done is
			updates <- update(t, "192.168.10.7/24", 2, true)
			cancel()
			<-w.done
			updates <- update(t, "192.168.10.8/24", 2, true) // drained by stop
			close(updates)
			close(sent)
		}()
		if err := w.run(ctx, func() {}); err != nil {
			t.Errorf("run() = %v, want nil", err)
		}
		<-sent
	})
}

// TestLocalAddrsInNetns runs LocalAddrs and WatchAddrs against the kernel,
// in a network namespace of its own that it fills with links and
// addresses. kipvs0 here is whatever link type the kernel has (dummy, else
// bridge): they are told apart by name.
func TestLocalAddrsInNetns(t *testing.T) {
	if !inNewNetns(t) {
		return
	}
	a := netip.MustParseAddr
	setLinkUp(t, "lo")
	addLink(t, DefaultLink)
	addLink(t, "kipvs-la0")
	ipv6 := hasIPv6()
	vip4, vip6, node4, node6 := a("10.96.0.10"), a("fd00:96::10"), a("192.0.2.7"), a("2001:db8::7")
	addAddr(t, DefaultLink, vip4)
	addAddr(t, "kipvs-la0", node4)

	// First, while the links have no IPv6 address of ours, whose
	// notifications the kernel sends late, from a work queue.
	t.Run("WatchAddrs reports every change but the dummy's", func(t *testing.T) {
		testWatchAddrs(t, ipv6)
	})
	if ipv6 {
		addAddr(t, DefaultLink, vip6)
		addAddr(t, "kipvs-la0", node6)
	}

	t.Run("LocalAddrs leaves out the dummy's addresses", func(t *testing.T) {
		wantLocal(t, false, DefaultLink, a("127.0.0.1"), node4)
		wantLocal(t, false, "", vip4, a("127.0.0.1"), node4)
		if !ipv6 {
			t.Skip("no IPv6 in this kernel")
		}
		wantLocal(t, true, DefaultLink, a("::1"), node6)
		wantLocal(t, true, "", a("::1"), node6, vip6)
	})
	t.Run("an address on the dummy and on another link is listed", func(t *testing.T) {
		addAddr(t, "kipvs-la0", vip4)
		wantLocal(t, false, DefaultLink, vip4, a("127.0.0.1"), node4)
		delAddr(t, "kipvs-la0", vip4)
		wantLocal(t, false, DefaultLink, a("127.0.0.1"), node4)
	})
	t.Run("WatchAddrs with a done context returns nil at once", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := WatchAddrs(ctx, DefaultLink, func() {}); err != nil {
			t.Errorf("WatchAddrs(done ctx) = %v, want nil", err)
		}
	})
}

func wantLocal(t *testing.T, ipv6 bool, except string, want ...netip.Addr) {
	t.Helper()
	got, err := LocalAddrs(ipv6, except)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("LocalAddrs(%v, %q) = %v, %v; want %v", ipv6, except, got, err, want)
	}
}

// counter counts changed calls.
type counter struct{ n atomic.Int64 }

func (c *counter) changed() { c.n.Add(1) }

// waitFor fails unless the count reaches want within 10s, and stays at it
// for settle (so that events which should not be reported had their
// chance: the kernel queues them before the marker the count waits for).
func (c *counter) waitFor(t *testing.T, what string, want int64, settle time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for end := time.Now().Add(settle); time.Now().Before(end) && c.n.Load() == want; {
		time.Sleep(5 * time.Millisecond)
	}
	if got := c.n.Load(); got != want {
		t.Fatalf("%s: changed called %d times in all, want %d", what, got, want)
	}
}

// quiet waits until changed has not been called for a while, then
// zeroes the count: the kernel notifies a new IPv6 address from a work
// queue, so the set-up's notifications may still be on their way.
func (c *counter) quiet() {
	for last := int64(-1); c.n.Load() != last; {
		last = c.n.Load()
		time.Sleep(time.Second)
	}
	c.n.Store(0)
}

func testWatchAddrs(t *testing.T, ipv6 bool) {
	w, err := subscribeAddrs(DefaultLink)
	if err != nil {
		t.Fatal(err)
	}
	var c counter
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.run(ctx, c.changed) }()
	defer func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("WatchAddrs after cancel = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("WatchAddrs did not return after cancel")
		}
	}()

	c.quiet()

	// Each change waits for its call: an IPv6 address removed before the
	// kernel notified its addition is notified once, removed.
	a := netip.MustParseAddr
	const settle = 300 * time.Millisecond
	mark, mark6 := a("192.0.2.50"), a("2001:db8::50")
	addAddr(t, "kipvs-la0", mark)
	c.waitFor(t, "address added", 1, 0)
	delAddr(t, "kipvs-la0", mark)
	c.waitFor(t, "address removed", 2, 0)
	want := int64(2)
	if ipv6 {
		addAddr(t, "kipvs-la0", mark6)
		c.waitFor(t, "IPv6 address added", want+1, 0)
		delAddr(t, "kipvs-la0", mark6)
		want += 2
		c.waitFor(t, "IPv6 address removed", want, 0)
	}

	// The dummy's changes, then a marker: only the marker is reported.
	// (IPv4: the kernel notifies them in order, at once.)
	addAddr(t, DefaultLink, a("10.96.0.11"))
	delAddr(t, DefaultLink, a("10.96.0.11"))
	addAddr(t, "kipvs-la0", mark)
	want++
	c.waitFor(t, "the dummy's changes, then a marker", want, settle)

	// The dummy deleted (its addresses go with it) and created again under
	// a new index, with a VIP: still not reported.
	delLink(t, DefaultLink)
	addLink(t, DefaultLink)
	addAddr(t, DefaultLink, a("10.96.0.10")) // as before
	delAddr(t, "kipvs-la0", mark)
	want++
	c.waitFor(t, "the dummy re-created, then a marker", want, settle)
}
