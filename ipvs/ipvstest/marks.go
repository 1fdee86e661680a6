package ipvstest

import (
	"net/netip"
	"testing"

	"github.com/kube-ipvs/kube-ipvs/internal/contract"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// The firewall-mark cases: virtual servers like `ipvsadm -A -f 7937 -s rr`
// and `-A -f 7937 -6 -s rr`, with real servers like
// `ipvsadm -a -f 7937 -r 10.244.240.2:8080 -m -w 1`.

// configs lists the real servers of k without their connection counts:
// the kernel keeps a connection of an earlier case (testConns,
// testMarkConnect) and counts it on a real server of the same address
// added again soon after, so only the configuration is compared here.
func (c *suiteCase) configs(k ipvs.ServiceKey) []ipvs.Destination {
	c.t.Helper()
	ds := c.dests(k)
	for i := range ds {
		ds[i].ActiveConns, ds[i].InactiveConns = 0, 0
	}
	return ds
}

var (
	mark  = ipvs.MarkKey(0x1f01, false)
	mark6 = ipvs.MarkKey(0x1f01, true)
	mark2 = ipvs.MarkKey(0x1f02, false)
)

func testMarkList(t *testing.T, c *suiteCase) {
	want := []ipvs.Service{
		rr(web),
		rr(web6),
		{Key: mark, Scheduler: "wlc"},
		{Key: mark6, Scheduler: "rr", Persistent: true, Timeout: 300},
		{Key: mark2, Scheduler: "sh", Flags: ipvs.SchedFlag1},
	}
	for _, i := range []int{3, 0, 4, 2, 1} {
		c.add(want[i])
	}
	contract.WantEqual(t, "ListServices", c.services(), want)

	// One real server behind an address and a mark virtual server: each
	// lists its own.
	c.addDest(web, masq("10.244.240.2:8080", 1))
	c.addDest(mark, masq("10.244.240.2:8080", 3))
	contract.WantEqual(t, "real servers of the address virtual server", c.configs(web), []ipvs.Destination{masq("10.244.240.2:8080", 1)})
	contract.WantEqual(t, "real servers of the mark", c.configs(mark), []ipvs.Destination{masq("10.244.240.2:8080", 3)})
	contract.WantEqual(t, "real servers of the same mark in IPv6", len(c.configs(mark6)), 0)
	contract.WantEqual(t, "real servers of the other mark", len(c.configs(mark2)), 0)
}

func testMarkErrors(t *testing.T, c *suiteCase) {
	c.add(rr(mark))
	d := masq("10.244.240.2:8080", 1)
	c.addDest(mark, d)
	tab := c.h.IPVS
	contract.WantErr(t, "AddService of a taken mark", tab.AddService(ipvs.Service{Key: mark, Scheduler: "wlc"}), ipvs.ErrExists)
	contract.WantErr(t, "UpdateService of the mark's other family", tab.UpdateService(rr(mark6)), ipvs.ErrNotFound)
	contract.WantErr(t, "UpdateService of a missing mark", tab.UpdateService(rr(mark2)), ipvs.ErrNotFound)
	bad := ipvs.Service{Key: mark2, Scheduler: "kipvs-nosuch"}
	contract.WantErr(t, "UpdateService of a missing mark with an unknown scheduler", tab.UpdateService(bad), ipvs.ErrNotFound)
	contract.WantErr(t, "AddService with an unknown scheduler", tab.AddService(bad), ipvs.ErrNoScheduler)
	contract.WantErr(t, "UpdateService to an unknown scheduler", tab.UpdateService(ipvs.Service{Key: mark, Scheduler: "kipvs-nosuch"}), ipvs.ErrNoScheduler)
	contract.WantErr(t, "DeleteService of the mark's other family", tab.DeleteService(mark6), ipvs.ErrNotFound)
	_, err := tab.ListDestinations(mark6)
	contract.WantErr(t, "ListDestinations of the mark's other family", err, ipvs.ErrNotFound)

	contract.WantErr(t, "AddDestination twice", tab.AddDestination(mark, masq("10.244.240.2:8080", 2)), ipvs.ErrExists)
	contract.WantErr(t, "AddDestination to a missing mark", tab.AddDestination(mark2, d), ipvs.ErrNotFound)
	other := masq("10.244.240.3:8080", 1)
	contract.WantErr(t, "UpdateDestination of a missing real server", tab.UpdateDestination(mark, other), ipvs.ErrNotFound)
	contract.WantErr(t, "UpdateDestination on a missing mark", tab.UpdateDestination(mark2, d), ipvs.ErrNotFound)
	contract.WantErr(t, "DeleteDestination of a missing real server", tab.DeleteDestination(mark, other.Addr), ipvs.ErrNotFound)
	contract.WantErr(t, "DeleteDestination on a missing mark", tab.DeleteDestination(mark2, d.Addr), ipvs.ErrNotFound)

	invalid := []struct {
		what string
		err  error
	}{
		{"mark key with an address", tab.AddService(rr(ipvs.ServiceKey{Addr: netip.MustParseAddr("10.96.240.10"), Mark: mark2.Mark}))},
		{"mark key with a protocol and port", tab.AddService(rr(ipvs.ServiceKey{Addr: netip.IPv4Unspecified(), Proto: ipvs.TCP, Port: 80, Mark: mark2.Mark}))},
		{"mark key without an address", tab.AddService(rr(ipvs.ServiceKey{Mark: mark2.Mark}))},
		{"real server of the other family", tab.AddDestination(mark, masq("[fd00:244:240::2]:8080", 1))},
	}
	for _, b := range invalid {
		if b.err == nil {
			t.Errorf("%s: accepted", b.what)
		}
		contract.WantPlainMessage(t, b.what, b.err)
	}
	contract.WantEqual(t, "virtual servers after", c.services(), []ipvs.Service{rr(mark)})
	contract.WantEqual(t, "real servers after", c.configs(mark), []ipvs.Destination{d})
}

func testMarkUpdate(t *testing.T, c *suiteCase) {
	for _, k := range []ipvs.ServiceKey{mark, mark6} {
		c.add(rr(k))
	}
	c.addDest(mark, masq("10.244.240.2:8080", 1))
	steps := []ipvs.Service{
		{Key: mark, Scheduler: "wlc"},
		{Key: mark, Scheduler: "mh", Persistent: true, Timeout: 10800, Flags: ipvs.SchedFlag2},
		{Key: mark, Scheduler: "sh", Flags: ipvs.SchedFlag1 | ipvs.SchedFlag2},
		{Key: mark, Scheduler: "rr", Timeout: 60}, // not persistent: timeout dropped
	}
	for _, s := range steps {
		if err := c.h.IPVS.UpdateService(s); err != nil {
			t.Fatalf("UpdateService(%+v): %v", s, err)
		}
		want := s
		if !want.Persistent {
			want.Timeout = 0
		}
		contract.WantEqual(t, "after UpdateService", c.service(mark), want)
	}
	sticky6 := ipvs.Service{Key: mark6, Scheduler: "rr", Persistent: true, Timeout: 10800}
	if err := c.h.IPVS.UpdateService(sticky6); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "IPv6 mark made persistent", c.service(mark6), sticky6)
	contract.WantEqual(t, "IPv4 mark untouched", c.service(mark), rr(mark))
	contract.WantEqual(t, "real servers kept", c.configs(mark), []ipvs.Destination{masq("10.244.240.2:8080", 1)})
}

func testMarkDestinations(t *testing.T, c *suiteCase) {
	want, want6 := addDestinations(t, c, mark, mark6)

	update := ipvs.Destination{Addr: want[1].Addr, Weight: 7, Forward: ipvs.Route}
	if err := c.h.IPVS.UpdateDestination(mark, update); err != nil {
		t.Fatal(err)
	}
	if err := c.h.IPVS.DeleteDestination(mark, want[0].Addr); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "after UpdateDestination and DeleteDestination", c.configs(mark), []ipvs.Destination{update, want[2], want[3]})
	if err := c.h.IPVS.DeleteDestination(mark6, want6[0].Addr); err != nil {
		t.Fatal(err)
	}
	contract.WantEqual(t, "IPv6 mark after DeleteDestination", c.configs(mark6), want6[1:])
}

func testMarkDelete(t *testing.T, c *suiteCase) {
	c.add(rr(mark))
	c.add(rr(mark6))
	c.add(rr(web))
	c.addDest(mark, masq("10.244.240.2:8080", 1))
	c.addDest(mark6, masq("[fd00:244:240::2]:8080", 1))
	if err := c.h.IPVS.DeleteService(mark); err != nil {
		t.Fatal(err)
	}
	_, err := c.h.IPVS.ListDestinations(mark)
	contract.WantErr(t, "ListDestinations after DeleteService", err, ipvs.ErrNotFound)
	contract.WantEqual(t, "virtual servers after", c.services(), []ipvs.Service{rr(web), rr(mark6)})
	contract.WantEqual(t, "real servers of the IPv6 mark", c.configs(mark6), []ipvs.Destination{masq("[fd00:244:240::2]:8080", 1)})
	c.add(rr(mark))
	contract.WantEqual(t, "real servers of the new mark", len(c.configs(mark)), 0)
}

func testMarkConnect(t *testing.T, c *suiteCase) {
	c.add(rr(mark))
	d := masq("10.244.240.2:8080", 1)
	c.addDest(mark, d)
	c.h.Connect(t, mark, d.Addr)
	got := c.dests(mark)
	if len(got) != 1 || got[0].ActiveConns < 1 {
		t.Fatalf("after Connect: %+v, want one real server with an active connection", got)
	}
}
