package ipvs

import (
	"errors"
	"net/netip"
	"testing"
)

func TestFakeStats(t *testing.T) {
	f := seeded(t, lines(
		"-A -t 10.96.0.10:80 -s rr",
		"-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
		"-a -t 10.96.0.10:80 -r 10.244.2.5:8080 -m -w 1",
	))
	ep := netip.MustParseAddrPort("10.244.2.5:8080")
	s := Stats{Conns: 3, PacketsIn: 30, PacketsOut: 20, BytesIn: 3000, BytesOut: 2000}
	if err := f.SetStats(web, ep, s); err != nil {
		t.Fatal(err)
	}
	if err := f.SetConns(web, ep, 1, 2); err != nil {
		t.Fatal(err)
	}
	got, err := f.ListDestinationStats(web)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Stats != (Stats{}) || got[1].Stats != s || got[1].ActiveConns != 1 || got[1].InactiveConns != 2 {
		t.Fatalf("ListDestinationStats = %+v", got)
	}
	if all, err := f.ListServiceStats(); err != nil || len(all) != 1 || all[web] != s {
		t.Errorf("ListServiceStats = %+v, %v; want web with its one real server's counters", all, err)
	}
	if c := f.Calls()[MethodListDestinations]; c != 1 {
		t.Errorf("ListDestinations calls = %d, want 1 (SetStats is not counted)", c)
	}

	// An update keeps the counters; a delete and an add start again at zero.
	if err := f.UpdateDestination(web, Destination{Addr: ep, Weight: 0}); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.ListDestinationStats(web); got[1].Stats != s {
		t.Errorf("after an update: %+v, want the counters kept", got[1])
	}
	if err := f.DeleteDestination(web, ep); err != nil {
		t.Fatal(err)
	}
	if err := f.AddDestination(web, masq(ep.String())); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.ListDestinationStats(web); got[1].Stats != (Stats{}) {
		t.Errorf("added again: %+v, want zero counters", got[1])
	}

	other := key(TCP, "10.96.0.11:80")
	if _, err := f.ListDestinationStats(other); !errors.Is(err, ErrNotFound) {
		t.Errorf("ListDestinationStats of a missing virtual server: %v, want ErrNotFound", err)
	}
	if err := f.SetStats(web, netip.MustParseAddrPort("10.244.9.9:80"), s); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetStats of a missing real server: %v, want ErrNotFound", err)
	}
	f.FailOn(MethodListDestinations, web, errors.New("boom"))
	if _, err := f.ListDestinationStats(web); err == nil || err.Error() != "listing real servers of -t 10.96.0.10:80: boom" {
		t.Errorf("injected failure: %v", err)
	}
}
