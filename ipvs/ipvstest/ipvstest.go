// Package ipvstest is the contract of ipvs.Interface: the behaviour kube-ipvs
// relies on, stated once as named subtests. It runs against ipvs.Fake in
// `go test` (ipvs/contract_test.go) and against ipvs.Kernel in the VM
// (test/vm/guest/contract_test.go), so the fake cannot drift from the kernel
// unnoticed.
//
// The suite only makes virtual servers on 10.96.240.0/24 and
// fd00:96:240::/64, and firewall-mark virtual servers of marks 0x1f00 to
// 0x1fff (clear of kube-ipvs' own 0x2000 to 0x3fff), with real servers in
// 10.244.240.0/24 and fd00:244:240::/64; it deletes each at the end of the
// case that made it, and fails a case that leaves one behind.
package ipvstest

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/internal/contract"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// Harness is one table under test.
type Harness struct {
	// IPVS is the table. It may hold virtual servers of others outside
	// the suite's addresses; they are left alone.
	IPVS ipvs.Interface
	// Connect makes the table count one open connection on the real
	// server dest of the virtual server key (the suite has made dest its
	// only real server, Masquerade, weight 1) until t ends. On a kernel
	// it opens a TCP connection through the virtual server, so dest must
	// answer; for a firewall-mark key (IPv4 only) the connection goes to
	// an address of the harness' choosing in 10.96.240.0/24 that no case
	// uses, its packets marked with key.Mark. On a fake it sets the
	// counts.
	Connect func(t *testing.T, key ipvs.ServiceKey, dest netip.AddrPort)
}

// The suite's address ranges (see the package comment).
var (
	vipRange  = []netip.Prefix{netip.MustParsePrefix("10.96.240.0/24"), netip.MustParsePrefix("fd00:96:240::/64")}
	destRange = []netip.Prefix{netip.MustParsePrefix("10.244.240.0/24"), netip.MustParsePrefix("fd00:244:240::/64")}
)

// The suite's firewall marks (see the package comment).
const (
	markFirst uint32 = 0x1f00
	markLast  uint32 = 0x1fff
)

// Run runs the contract against the tables newHarness returns, a fresh
// harness for each case.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, c *suiteCase)
	}{
		{"ListServices is sorted and reads back what was added", testListServices},
		{"AddService of a taken key is ErrExists", testAddServiceExists},
		{"unknown scheduler is ErrNoScheduler", testNoScheduler},
		{"missing virtual server is ErrNotFound", testServiceNotFound},
		{"UpdateService changes scheduler, persistence and flags", testUpdateService},
		{"persistence reads back, timeout only when persistent", testPersistence},
		{"scheduler flags read back without kernel-internal bits", testSchedFlags},
		{"real servers read back sorted, weight 0 included", testDestinations},
		{"real server errors are typed", testDestinationErrors},
		{"UpdateDestination changes weight and forwarding", testUpdateDestination},
		{"DeleteService removes its real servers", testDeleteServiceRemovesDests},
		{"connection counts start at 0 and survive UpdateDestination", testConns},
		{"invalid input is refused before any change", testInvalid},
		{"firewall-mark virtual servers list apart from address ones and by family", testMarkList},
		{"firewall-mark errors are typed", testMarkErrors},
		{"firewall-mark UpdateService changes scheduler, persistence and flags", testMarkUpdate},
		{"firewall-mark real servers are added, updated and deleted", testMarkDestinations},
		{"firewall-mark DeleteService leaves the other family's mark", testMarkDelete},
		{"a marked connection reaches the firewall-mark virtual server", testMarkConnect},
		{"a batch writes what the single calls write, each answered alone", testBatch},
		{"a long batch's answers each reach their own write", testLongBatch},
		{"ListServices runs beside writes from another goroutine", testListBesideWrites},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &suiteCase{t: t, h: newHarness(t)}
			t.Cleanup(c.checkClean)
			tc.run(t, c)
		})
	}
}

// suiteCase is one case's harness plus what it made.
type suiteCase struct {
	t *testing.T
	h Harness
}

// ours reports whether a virtual server is in the suite's ranges.
func ours(k ipvs.ServiceKey) bool {
	if k.IsMark() {
		return k.Mark >= markFirst && k.Mark <= markLast
	}
	for _, p := range vipRange {
		if p.Contains(k.Addr) {
			return true
		}
	}
	return false
}

// checkClean fails the case if a virtual server of the suite's range is
// still there after its cleanups.
func (c *suiteCase) checkClean() {
	svcs, err := c.h.IPVS.ListServices()
	if err != nil {
		c.t.Errorf("after the case: %v", err)
		return
	}
	for _, s := range svcs {
		if ours(s.Key) {
			c.t.Errorf("after the case: virtual server %s left behind", s.Key)
		}
	}
}

// add creates a virtual server, deleted when the case ends.
func (c *suiteCase) add(s ipvs.Service) {
	c.t.Helper()
	if !ours(s.Key) {
		c.t.Fatalf("suite bug: %s is outside the suite's range", s.Key)
	}
	if err := c.h.IPVS.AddService(s); err != nil {
		c.t.Fatalf("AddService(%+v): %v", s, err)
	}
	c.t.Cleanup(func() {
		if err := c.h.IPVS.DeleteService(s.Key); err != nil && !errors.Is(err, ipvs.ErrNotFound) {
			c.t.Errorf("cleanup: %v", err)
		}
	})
}

// addDest adds a real server.
func (c *suiteCase) addDest(k ipvs.ServiceKey, d ipvs.Destination) {
	c.t.Helper()
	if err := c.h.IPVS.AddDestination(k, d); err != nil {
		c.t.Fatalf("AddDestination(%s, %+v): %v", k, d, err)
	}
}

// services lists the suite's virtual servers.
func (c *suiteCase) services() []ipvs.Service {
	c.t.Helper()
	all, err := c.h.IPVS.ListServices()
	if err != nil {
		c.t.Fatalf("ListServices: %v", err)
	}
	var out []ipvs.Service
	for _, s := range all {
		if ours(s.Key) {
			out = append(out, s)
		}
	}
	return out
}

// service returns the suite's virtual server of key as listed.
func (c *suiteCase) service(k ipvs.ServiceKey) ipvs.Service {
	c.t.Helper()
	for _, s := range c.services() {
		if s.Key == k {
			return s
		}
	}
	c.t.Fatalf("ListServices lacks %s", k)
	return ipvs.Service{}
}

// dests lists the real servers of key.
func (c *suiteCase) dests(k ipvs.ServiceKey) []ipvs.Destination {
	c.t.Helper()
	ds, err := c.h.IPVS.ListDestinations(k)
	if err != nil {
		c.t.Fatalf("ListDestinations(%s): %v", k, err)
	}
	return ds
}

func key(addr string, proto ipvs.Protocol, port uint16) ipvs.ServiceKey {
	return ipvs.ServiceKey{Addr: netip.MustParseAddr(addr), Proto: proto, Port: port}
}

func rr(k ipvs.ServiceKey) ipvs.Service { return ipvs.Service{Key: k, Scheduler: "rr"} }

func masq(addr string, weight int) ipvs.Destination {
	return ipvs.Destination{Addr: netip.MustParseAddrPort(addr), Weight: weight, Forward: ipvs.Masquerade}
}

var (
	web  = key("10.96.240.10", ipvs.TCP, 80)
	dns  = key("10.96.240.10", ipvs.UDP, 53)
	web6 = key("fd00:96:240::10", ipvs.TCP, 80)
)

func testListServices(t *testing.T, c *suiteCase) {
	want := []ipvs.Service{
		{Key: key("10.96.240.2", ipvs.TCP, 443), Scheduler: "wlc"},
		{Key: key("10.96.240.10", ipvs.TCP, 53), Scheduler: "rr"},
		{Key: web, Scheduler: "rr"},
		{Key: dns, Scheduler: "sh"},
		{Key: key("10.96.240.10", ipvs.SCTP, 9999), Scheduler: "rr"},
		{Key: web6, Scheduler: "mh", Flags: ipvs.SchedFlag2},
	}
	for _, i := range []int{5, 2, 4, 0, 3, 1} {
		c.add(want[i])
	}
	contract.WantEqual(t, "ListServices", c.services(), want)
}

// testListBesideWrites lists the virtual servers over and over while
// another goroutine adds and deletes one with a real server: a full sync
// dumps them in the background while incremental syncs write. Every
// listing must succeed, hold the virtual server that stays, sorted, and
// hold the other or not, but whole; both goroutines yield after each
// write and listing, so that some listings see the other and some do not
// even on one CPU.
func testListBesideWrites(t *testing.T, c *suiteCase) {
	stays, comes := rr(web), ipvs.Service{Key: dns, Scheduler: "sh"}
	c.add(stays)
	c.t.Cleanup(func() { _ = c.h.IPVS.DeleteService(comes.Key) })
	writes := make(chan error, 1)
	go func() {
		for range 50 {
			if err := c.h.IPVS.AddService(comes); err != nil {
				writes <- err
				return
			}
			if err := c.h.IPVS.AddDestination(comes.Key, masq("10.244.240.1:8080", 1)); err != nil {
				writes <- err
				return
			}
			runtime.Gosched()
			if err := c.h.IPVS.DeleteService(comes.Key); err != nil {
				writes <- err
				return
			}
			runtime.Gosched()
		}
		writes <- nil
	}()
	var saw, listed int
	var werr error
	for done := false; !done; {
		select {
		case werr = <-writes:
			done = true
		default:
		}
		all, err := c.h.IPVS.ListServices()
		if err != nil {
			t.Fatalf("ListServices beside writes: %v", err)
		}
		listed++
		var mine []ipvs.Service
		for _, s := range all {
			if ours(s.Key) {
				mine = append(mine, s)
			}
		}
		switch {
		case len(mine) == 1 && mine[0] == stays:
		case len(mine) == 2 && mine[0] == stays && mine[1] == comes:
			saw++
		default:
			t.Errorf("ListServices beside writes: %+v, want %+v with or without %+v", mine, stays, comes)
		}
		runtime.Gosched()
	}
	if werr != nil {
		t.Fatalf("writes beside ListServices: %v", werr)
	}
	if saw == 0 || saw == listed {
		t.Errorf("%d of %d listings saw the virtual server that came and went: the listings did not run beside the writes", saw, listed)
	}
}

func testAddServiceExists(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	other := ipvs.Service{Key: web, Scheduler: "wlc", Persistent: true, Timeout: 60}
	contract.WantErr(t, "AddService of a taken key", c.h.IPVS.AddService(other), ipvs.ErrExists)
	contract.WantEqual(t, "the virtual server after", c.service(web), rr(web))
}

func testNoScheduler(t *testing.T, c *suiteCase) {
	bad := ipvs.Service{Key: web, Scheduler: "kipvs-nosuch"}
	contract.WantErr(t, "AddService", c.h.IPVS.AddService(bad), ipvs.ErrNoScheduler)
	contract.WantEqual(t, "virtual servers after", c.services(), []ipvs.Service(nil))
	c.add(rr(web))
	contract.WantErr(t, "UpdateService", c.h.IPVS.UpdateService(bad), ipvs.ErrNoScheduler)
	contract.WantEqual(t, "the virtual server after", c.service(web), rr(web))
}

func testServiceNotFound(t *testing.T, c *suiteCase) {
	c.add(rr(dns)) // same address and port, other protocol
	contract.WantErr(t, "UpdateService", c.h.IPVS.UpdateService(rr(web)), ipvs.ErrNotFound)
	bad := ipvs.Service{Key: web, Scheduler: "kipvs-nosuch"}
	contract.WantErr(t, "UpdateService with an unknown scheduler", c.h.IPVS.UpdateService(bad), ipvs.ErrNotFound)
	contract.WantErr(t, "DeleteService", c.h.IPVS.DeleteService(web), ipvs.ErrNotFound)
	_, err := c.h.IPVS.ListDestinations(web)
	contract.WantErr(t, "ListDestinations", err, ipvs.ErrNotFound)
	contract.WantEqual(t, "virtual servers after", c.services(), []ipvs.Service{rr(dns)})
}

func testUpdateService(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	c.addDest(web, masq("10.244.240.2:8080", 1))
	steps := []ipvs.Service{
		{Key: web, Scheduler: "wlc"},
		{Key: web, Scheduler: "mh", Persistent: true, Timeout: 10800, Flags: ipvs.SchedFlag2},
		{Key: web, Scheduler: "sh", Flags: ipvs.SchedFlag1},
		rr(web),
	}
	for _, s := range steps {
		if err := c.h.IPVS.UpdateService(s); err != nil {
			t.Fatalf("UpdateService(%+v): %v", s, err)
		}
		contract.WantEqual(t, "after UpdateService", c.service(web), s)
	}
	contract.WantEqual(t, "real servers kept", c.dests(web), []ipvs.Destination{masq("10.244.240.2:8080", 1)})
}

func testPersistence(t *testing.T, c *suiteCase) {
	sticky := ipvs.Service{Key: web, Scheduler: "rr", Persistent: true, Timeout: 10800}
	c.add(sticky)
	contract.WantEqual(t, "persistent", c.service(web), sticky)
	c.add(ipvs.Service{Key: dns, Scheduler: "rr", Timeout: 300})
	contract.WantEqual(t, "not persistent, timeout given", c.service(dns), rr(dns))
	if err := c.h.IPVS.UpdateService(ipvs.Service{Key: web, Scheduler: "rr", Timeout: 10800}); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "persistence turned off", c.service(web), rr(web))
}

func testSchedFlags(t *testing.T, c *suiteCase) {
	all := []ipvs.Service{
		{Key: key("10.96.240.20", ipvs.TCP, 80), Scheduler: "mh", Flags: ipvs.SchedFlag2},
		{Key: key("10.96.240.20", ipvs.TCP, 81), Scheduler: "mh", Flags: ipvs.SchedFlag1 | ipvs.SchedFlag2},
		{Key: key("10.96.240.20", ipvs.TCP, 82), Scheduler: "sh", Flags: ipvs.SchedFlag1},
		{Key: key("10.96.240.20", ipvs.TCP, 83), Scheduler: "mh", Persistent: true, Timeout: 60, Flags: ipvs.SchedFlag2},
		{Key: key("10.96.240.20", ipvs.TCP, 84), Scheduler: "mh"},
	}
	for _, s := range all {
		c.add(s)
	}
	contract.WantEqual(t, "ListServices", c.services(), all)
}

func testDestinations(t *testing.T, c *suiteCase) {
	addDestinations(t, c, web, web6)
	c.add(rr(dns))
	contract.WantEqual(t, "ListDestinations of a virtual server without any", len(c.dests(dns)), 0)
}

// addDestinations makes v4 and v6 with real servers of every weight and
// forwarding, added out of order, and checks they list sorted by address
// (configuration only: the kernel may carry connection counts over to a
// real server added again). It returns them as listed.
func addDestinations(t *testing.T, c *suiteCase, v4, v6 ipvs.ServiceKey) (want, want6 []ipvs.Destination) {
	t.Helper()
	c.add(rr(v4))
	want = []ipvs.Destination{
		masq("10.244.240.2:8080", 0),
		masq("10.244.240.2:8081", 1),
		{Addr: netip.MustParseAddrPort("10.244.240.3:80"), Weight: 1, Forward: ipvs.Route},
		masq("10.244.240.10:8080", ipvs.MaxWeight),
	}
	for _, i := range []int{3, 1, 0, 2} {
		c.addDest(v4, want[i])
	}
	contract.WantEqual(t, "ListDestinations", c.configs(v4), want)

	c.add(rr(v6))
	want6 = []ipvs.Destination{masq("[fd00:244:240::2]:8080", 1), masq("[fd00:244:240::10]:8080", 5)}
	c.addDest(v6, want6[1])
	c.addDest(v6, want6[0])
	contract.WantEqual(t, "ListDestinations of IPv6", c.configs(v6), want6)
	return want, want6
}

func testDestinationErrors(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	d := masq("10.244.240.2:8080", 1)
	c.addDest(web, d)
	contract.WantErr(t, "AddDestination twice", c.h.IPVS.AddDestination(web, masq("10.244.240.2:8080", 3)), ipvs.ErrExists)
	contract.WantErr(t, "AddDestination to a missing virtual server", c.h.IPVS.AddDestination(dns, d), ipvs.ErrNotFound)
	other := masq("10.244.240.3:8080", 1)
	contract.WantErr(t, "UpdateDestination of a missing real server", c.h.IPVS.UpdateDestination(web, other), ipvs.ErrNotFound)
	contract.WantErr(t, "UpdateDestination on a missing virtual server", c.h.IPVS.UpdateDestination(dns, d), ipvs.ErrNotFound)
	contract.WantErr(t, "DeleteDestination of a missing real server", c.h.IPVS.DeleteDestination(web, other.Addr), ipvs.ErrNotFound)
	contract.WantErr(t, "DeleteDestination on a missing virtual server", c.h.IPVS.DeleteDestination(dns, d.Addr), ipvs.ErrNotFound)
	contract.WantEqual(t, "real servers after", c.dests(web), []ipvs.Destination{d})
	if err := c.h.IPVS.DeleteDestination(web, d.Addr); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "real servers after DeleteDestination", len(c.dests(web)), 0)
}

func testUpdateDestination(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	c.addDest(web, masq("10.244.240.2:8080", 1))
	c.addDest(web, masq("10.244.240.3:8080", 1))
	steps := []ipvs.Destination{
		masq("10.244.240.2:8080", 0),
		masq("10.244.240.2:8080", 7),
		{Addr: netip.MustParseAddrPort("10.244.240.2:8080"), Weight: 7, Forward: ipvs.Route},
	}
	for _, d := range steps {
		if err := c.h.IPVS.UpdateDestination(web, d); err != nil {
			t.Fatalf("UpdateDestination(%+v): %v", d, err)
		}
		contract.WantEqual(t, "after UpdateDestination", c.dests(web), []ipvs.Destination{d, masq("10.244.240.3:8080", 1)})
	}
}

func testDeleteServiceRemovesDests(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	c.addDest(web, masq("10.244.240.2:8080", 1))
	if err := c.h.IPVS.DeleteService(web); err != nil {
		t.Fatal(err)
	}
	_, err := c.h.IPVS.ListDestinations(web)
	contract.WantErr(t, "ListDestinations after DeleteService", err, ipvs.ErrNotFound)
	c.add(rr(web))
	contract.WantEqual(t, "real servers of the new virtual server", len(c.dests(web)), 0)
}

func testConns(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	d := masq("10.244.240.2:8080", 1)
	written := d
	written.ActiveConns, written.InactiveConns = 7, 3
	c.addDest(web, written)
	contract.WantEqual(t, "a new real server", c.dests(web), []ipvs.Destination{d})

	c.h.Connect(t, web, d.Addr)
	before := c.dests(web)
	if len(before) != 1 || before[0].ActiveConns < 1 {
		t.Fatalf("after Connect: %+v, want one real server with an active connection", before)
	}
	update := masq("10.244.240.2:8080", 5)
	update.ActiveConns, update.InactiveConns = 0, 0
	if err := c.h.IPVS.UpdateDestination(web, update); err != nil {
		t.Fatal(err)
	}
	after := c.dests(web)
	if len(after) != 1 || after[0].Weight != 5 || after[0].Conns() != before[0].Conns() {
		t.Errorf("after UpdateDestination: %+v, want weight 5 and the counts of %+v", after, before[0])
	}
}

func testInvalid(t *testing.T, c *suiteCase) {
	c.add(rr(web))
	bad := []struct {
		what string
		err  error
	}{
		{"real server of the other family", c.h.IPVS.AddDestination(web, masq("[fd00:244:240::2]:8080", 1))},
		{"negative weight", c.h.IPVS.AddDestination(web, masq("10.244.240.2:8080", -1))},
		{"weight above MaxWeight", c.h.IPVS.AddDestination(web, masq("10.244.240.2:8080", ipvs.MaxWeight+1))},
		{"IPv4-mapped real server", c.h.IPVS.AddDestination(web, masq("[::ffff:10.244.240.2]:8080", 1))},
		{"empty scheduler", c.h.IPVS.AddService(ipvs.Service{Key: dns})},
		{"unknown protocol", c.h.IPVS.AddService(ipvs.Service{Key: key("10.96.240.10", 99, 80), Scheduler: "rr"})},
		{"unknown scheduler flag", c.h.IPVS.AddService(ipvs.Service{Key: dns, Scheduler: "rr", Flags: 0x40})},
	}
	for _, b := range bad {
		if b.err == nil {
			t.Errorf("%s: accepted", b.what)
		}
		contract.WantPlainMessage(t, b.what, b.err)
	}
	contract.WantEqual(t, "virtual servers after", c.services(), []ipvs.Service{rr(web)})
	contract.WantEqual(t, "real servers after", len(c.dests(web)), 0)
}

// testBatch: a batch leaves the table as the single calls do, every write
// answered as its method answers, a failed write not stopping the next.
func testBatch(t *testing.T, c *suiteCase) {
	b, ok := c.h.IPVS.(ipvs.Batcher)
	if !ok {
		t.Fatalf("%T does not batch: both the Kernel and the Fake must", c.h.IPVS)
	}
	mark := ipvs.MarkKey(markFirst+0x10, false)
	sticky := ipvs.Service{Key: web, Scheduler: "mh", Persistent: true, Timeout: 600, Flags: ipvs.SchedFlag2}
	missing := key("10.96.240.99", ipvs.TCP, 80)
	for _, k := range []ipvs.ServiceKey{web, web6, mark, missing} {
		t.Cleanup(func() {
			if err := c.h.IPVS.DeleteService(k); err != nil && !errors.Is(err, ipvs.ErrNotFound) {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	ws := []ipvs.Write{
		{Method: ipvs.MethodAddService, Service: sticky},
		{Method: ipvs.MethodAddService, Service: rr(web6)},
		{Method: ipvs.MethodAddService, Service: rr(mark)},
		{Method: ipvs.MethodAddService, Service: rr(web)},                                       // taken
		{Method: ipvs.MethodAddService, Service: ipvs.Service{Key: missing, Scheduler: "nope"}}, // no such scheduler
		{Method: ipvs.MethodAddDestination, Key: web, Dest: masq("10.244.240.2:8080", 1)},       //
		{Method: ipvs.MethodAddDestination, Key: missing, Dest: masq("10.244.240.3:8080", 1)},   // no virtual server
		{Method: ipvs.MethodAddDestination, Key: web, Dest: masq("10.244.240.1:8080", 0)},       // weight 0, out of order
		{Method: ipvs.MethodAddDestination, Key: web, Dest: masq("10.244.240.2:8080", 1)},       // there already
		{Method: ipvs.MethodAddDestination, Key: web, Dest: masq("[fd00:244:240::1]:8080", 1)},  // other family: refused unsent
		{Method: ipvs.MethodAddDestination, Key: web6, Dest: masq("[fd00:244:240::1]:8080", 3)}, //
		{Method: ipvs.MethodAddDestination, Key: mark, Dest: masq("10.244.240.4:8080", 1)},      //
		{Method: ipvs.MethodAddDestination, Key: web, Dest: ipvs.Destination{Addr: netip.MustParseAddrPort("10.244.240.5:8080"), Weight: 2, Forward: ipvs.Tunnel}},
	}
	errs := b.Batch(ws)
	if len(errs) != len(ws) {
		t.Fatalf("Batch returned %d errors for %d writes", len(errs), len(ws))
	}
	want := []error{nil, nil, nil, ipvs.ErrExists, ipvs.ErrNoScheduler, nil, ipvs.ErrNotFound, nil, ipvs.ErrExists, errAny, nil, nil, nil}
	for i, err := range errs {
		switch {
		case want[i] == nil && err != nil, want[i] != nil && err == nil:
			t.Errorf("write %d (%s): %v, want %v", i, ws[i].Method, err, want[i])
		case want[i] != nil && want[i] != errAny && !errors.Is(err, want[i]):
			t.Errorf("write %d (%s): %v, want %v", i, ws[i].Method, err, want[i])
		}
	}
	contract.WantEqual(t, "virtual servers", c.services(), []ipvs.Service{sticky, rr(web6), rr(mark)})
	// Configuration only: the kernel may carry connection counts over to
	// a real server an earlier case had at the same address.
	contract.WantEqual(t, "real servers of "+web.String(), configOf(c.dests(web)), []ipvs.Destination{
		masq("10.244.240.1:8080", 0), masq("10.244.240.2:8080", 1),
		{Addr: netip.MustParseAddrPort("10.244.240.5:8080"), Weight: 2, Forward: ipvs.Tunnel}})
	contract.WantEqual(t, "real servers of "+web6.String(), configOf(c.dests(web6)), []ipvs.Destination{masq("[fd00:244:240::1]:8080", 3)})
	contract.WantEqual(t, "real servers of the mark", configOf(c.dests(mark)), []ipvs.Destination{masq("10.244.240.4:8080", 1)})
	if errs := b.Batch(nil); len(errs) != 0 {
		t.Errorf("an empty batch: %v", errs)
	}
}

// testLongBatch: a batch of more writes than the Kernel reads answers of
// at once (its ackSlots), and of more than a socket's default receive
// buffer holds answers for (about 270), gets every answer to its own
// write: here every seventh real server is one added before, so it alone
// fails.
func testLongBatch(t *testing.T, c *suiteCase) {
	b, ok := c.h.IPVS.(ipvs.Batcher)
	if !ok {
		t.Fatalf("%T does not batch: both the Kernel and the Fake must", c.h.IPVS)
	}
	c.add(rr(web))
	var ws []ipvs.Write
	var want []ipvs.Destination
	for i := range 300 { // more acknowledgements than a receive buffer holds
		d := masq(fmt.Sprintf("10.244.%d.%d:8080", 241+i/250, 1+i%250), 1)
		if i%7 == 6 {
			d = want[len(want)-1]
		} else {
			want = append(want, d)
		}
		ws = append(ws, ipvs.Write{Method: ipvs.MethodAddDestination, Key: web, Dest: d})
	}
	errs := b.Batch(ws)
	if len(errs) != len(ws) {
		t.Fatalf("Batch returned %d errors for %d writes", len(errs), len(ws))
	}
	for i, err := range errs {
		if dup := i%7 == 6; dup != errors.Is(err, ipvs.ErrExists) || (!dup && err != nil) {
			t.Errorf("write %d (%s): %v, want ErrExists: %v", i, ws[i].Dest.Addr, err, dup)
		}
	}
	contract.WantEqual(t, "real servers", configOf(c.dests(web)), sortedDests(want))
}

// sortedDests is ds in the order ListDestinations gives.
func sortedDests(ds []ipvs.Destination) []ipvs.Destination {
	return slices.SortedFunc(slices.Values(ds), func(a, b ipvs.Destination) int { return a.Addr.Compare(b.Addr) })
}

// configOf is real servers without their connection counts.
func configOf(ds []ipvs.Destination) []ipvs.Destination {
	for i := range ds {
		ds[i].ActiveConns, ds[i].InactiveConns = 0, 0
	}
	return ds
}

// errAny stands for any error in an expectation.
var errAny = errors.New("any error")
