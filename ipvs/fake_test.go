package ipvs

import (
	"errors"
	"net/netip"
	"testing"
)

var (
	web  = key(TCP, "10.96.0.10:80")
	dns  = key(UDP, "10.96.0.10:53")
	web6 = key(TCP, "[fd00::10]:80")
)

// base is the table most error cases start from.
var base = lines(
	"-A -t 10.96.0.10:80 -s rr",
	"-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
)

func TestFakeOperations(t *testing.T) {
	ep := netip.MustParseAddrPort("10.244.1.5:8080")
	tests := []struct {
		name     string
		op       func(f *Fake) error
		wantErr  error  // nil: success
		wantMsg  string // whole error text, when wantErr is set
		wantDump string
	}{
		{
			name: "add service",
			op: func(f *Fake) error {
				return f.AddService(Service{Key: dns, Scheduler: "wlc", Persistent: true, Timeout: 10800})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "-A -u 10.96.0.10:53 -s wlc -p 10800"),
		},
		{
			name:     "add service drops timeout when not persistent",
			op:       func(f *Fake) error { return f.AddService(Service{Key: dns, Scheduler: "rr", Timeout: 99}) },
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "-A -u 10.96.0.10:53 -s rr"),
		},
		{
			name:    "add existing service",
			op:      func(f *Fake) error { return f.AddService(Service{Key: web, Scheduler: "wrr"}) },
			wantErr: ErrExists,
			wantMsg: "adding virtual server -t 10.96.0.10:80: already exists",
		},
		{
			name:    "add service without scheduler",
			op:      func(f *Fake) error { return f.AddService(Service{Key: dns}) },
			wantErr: ErrNoScheduler,
			wantMsg: "adding virtual server -u 10.96.0.10:53: empty scheduler name: scheduler not available",
		},
		{
			name: "add service with zero address",
			op: func(f *Fake) error {
				return f.AddService(Service{Key: ServiceKey{Proto: TCP, Port: 80}, Scheduler: "rr"})
			},
			wantMsg: "adding virtual server -t invalid AddrPort: invalid address",
		},
		{
			name:    "add service with IPv4-mapped address",
			op:      func(f *Fake) error { return f.AddService(rr(key(TCP, "[::ffff:10.0.0.1]:80"))) },
			wantMsg: "adding virtual server -t [::ffff:10.0.0.1]:80: address ::ffff:10.0.0.1 is IPv4-mapped IPv6; use the IPv4 form",
		},
		{
			name:    "add service with unknown protocol",
			op:      func(f *Fake) error { return f.AddService(rr(key(Protocol(50), "10.0.0.1:0"))) },
			wantMsg: "adding virtual server --proto-50 10.0.0.1:0: unsupported protocol proto-50",
		},
		{
			name: "add firewall-mark service",
			op: func(f *Fake) error {
				return f.AddService(Service{Key: fwm, Scheduler: "wlc", Persistent: true, Timeout: 60})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "-A -f 8193 -s wlc -p 60"),
		},
		{
			name: "add firewall-mark service with an address",
			op: func(f *Fake) error {
				return f.AddService(rr(ServiceKey{Addr: web.Addr, Mark: 8193}))
			},
			wantMsg: "adding virtual server -f 8193: firewall-mark key has address 10.96.0.10, want 0.0.0.0 or ::",
		},
		{
			name: "add firewall-mark service with a port",
			op: func(f *Fake) error {
				return f.AddService(rr(ServiceKey{Addr: fwm6.Addr, Proto: TCP, Port: 80, Mark: 8193}))
			},
			wantMsg: "adding virtual server -f 8193 -6: firewall-mark key has protocol 6 and port 80, want neither",
		},
		{
			name:    "update missing firewall-mark service",
			op:      func(f *Fake) error { return f.UpdateService(rr(fwm)) },
			wantErr: ErrNotFound,
			wantMsg: "updating virtual server -f 8193: not found",
		},
		{
			name:    "add real server to missing firewall-mark service",
			op:      func(f *Fake) error { return f.AddDestination(fwm6, masq("[fd00::5]:8080")) },
			wantErr: ErrNotFound,
			wantMsg: "adding real server [fd00::5]:8080 to -f 8193 -6: not found",
		},
		{
			name: "update service",
			op: func(f *Fake) error {
				return f.UpdateService(Service{Key: web, Scheduler: "sh", Persistent: true, Timeout: 60})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s sh -p 60", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1"),
		},
		{
			name:    "update missing service",
			op:      func(f *Fake) error { return f.UpdateService(rr(dns)) },
			wantErr: ErrNotFound,
			wantMsg: "updating virtual server -u 10.96.0.10:53: not found",
		},
		{
			name:    "update service to empty scheduler",
			op:      func(f *Fake) error { return f.UpdateService(Service{Key: web}) },
			wantErr: ErrNoScheduler,
			wantMsg: "updating virtual server -t 10.96.0.10:80: empty scheduler name: scheduler not available",
		},
		{
			name:     "delete service takes its real servers",
			op:       func(f *Fake) error { return f.DeleteService(web) },
			wantDump: "",
		},
		{
			name:    "delete missing service",
			op:      func(f *Fake) error { return f.DeleteService(web6) },
			wantErr: ErrNotFound,
			wantMsg: "deleting virtual server -t [fd00::10]:80: not found",
		},
		{
			name: "list real servers of missing service",
			op: func(f *Fake) error {
				_, err := f.ListDestinations(dns)
				return err
			},
			wantErr: ErrNotFound,
			wantMsg: "listing real servers of -u 10.96.0.10:53: not found",
		},
		{
			name: "add real server",
			op: func(f *Fake) error {
				return f.AddDestination(web, Destination{Addr: netip.MustParseAddrPort("10.244.2.7:8080"), Weight: 3})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "-a -t 10.96.0.10:80 -r 10.244.2.7:8080 -m -w 3"),
		},
		{
			name:    "add existing real server",
			op:      func(f *Fake) error { return f.AddDestination(web, Destination{Addr: ep, Weight: 5}) },
			wantErr: ErrExists,
			wantMsg: "adding real server 10.244.1.5:8080 to -t 10.96.0.10:80: already exists",
		},
		{
			name:    "add real server to missing service",
			op:      func(f *Fake) error { return f.AddDestination(dns, masq("10.244.1.5:53")) },
			wantErr: ErrNotFound,
			wantMsg: "adding real server 10.244.1.5:53 to -u 10.96.0.10:53: not found",
		},
		{
			name:    "add real server of other family",
			op:      func(f *Fake) error { return f.AddDestination(web, masq("[fd00::5]:8080")) },
			wantMsg: "adding real server [fd00::5]:8080 to -t 10.96.0.10:80: real server [fd00::5]:8080 is not of the virtual server's address family",
		},
		{
			name: "add real server with negative weight",
			op: func(f *Fake) error {
				return f.AddDestination(web, Destination{Addr: netip.MustParseAddrPort("10.244.2.7:80"), Weight: -1})
			},
			wantMsg: "adding real server 10.244.2.7:80 to -t 10.96.0.10:80: weight -1 out of range 0..65535",
		},
		{
			name: "add real server with too large weight",
			op: func(f *Fake) error {
				return f.AddDestination(web, Destination{Addr: netip.MustParseAddrPort("10.244.2.7:80"), Weight: 65536})
			},
			wantMsg: "adding real server 10.244.2.7:80 to -t 10.96.0.10:80: weight 65536 out of range 0..65535",
		},
		{
			name: "add real server with unknown forwarding",
			op: func(f *Fake) error {
				return f.AddDestination(web, Destination{Addr: netip.MustParseAddrPort("10.244.2.7:80"), Forward: 7})
			},
			wantMsg: "adding real server 10.244.2.7:80 to -t 10.96.0.10:80: unknown forwarding method 7",
		},
		{
			name:     "update real server",
			op:       func(f *Fake) error { return f.UpdateDestination(web, Destination{Addr: ep, Weight: 0, Forward: Route}) },
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -g -w 0"),
		},
		{
			name:    "update missing real server",
			op:      func(f *Fake) error { return f.UpdateDestination(web, masq("10.244.1.5:9090")) },
			wantErr: ErrNotFound,
			wantMsg: "updating real server 10.244.1.5:9090 of -t 10.96.0.10:80: not found",
		},
		{
			name:    "update real server of missing service",
			op:      func(f *Fake) error { return f.UpdateDestination(dns, masq("10.244.1.5:8080")) },
			wantErr: ErrNotFound,
			wantMsg: "updating real server 10.244.1.5:8080 of -u 10.96.0.10:53: not found",
		},
		{
			name:     "delete real server",
			op:       func(f *Fake) error { return f.DeleteDestination(web, ep) },
			wantDump: lines("-A -t 10.96.0.10:80 -s rr"),
		},
		{
			name:    "delete missing real server",
			op:      func(f *Fake) error { return f.DeleteDestination(web, netip.MustParseAddrPort("10.244.9.9:8080")) },
			wantErr: ErrNotFound,
			wantMsg: "deleting real server 10.244.9.9:8080 from -t 10.96.0.10:80: not found",
		},
		{
			name:    "delete real server of missing service",
			op:      func(f *Fake) error { return f.DeleteDestination(dns, ep) },
			wantErr: ErrNotFound,
			wantMsg: "deleting real server 10.244.1.5:8080 from -u 10.96.0.10:53: not found",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := seeded(t, base)
			checkResult(t, f, tc.op(f), tc.wantMsg, tc.wantErr, tc.wantDump, base)
		})
	}
}

// checkResult checks a call on f: with wantMsg empty it succeeded and f
// dumps wantDump; otherwise it failed with exactly wantMsg, wrapping wantErr
// (if set), and left f as it was (before).
func checkResult(t *testing.T, f *Fake, err error, wantMsg string, wantErr error, wantDump, before string) {
	t.Helper()
	if wantMsg == "" {
		mustDo(t, err)
		diff(t, "Dump", f.Dump(), wantDump)
		return
	}
	if err == nil || err.Error() != wantMsg {
		t.Fatalf("error = %v, want %q", err, wantMsg)
	}
	if wantErr != nil && !errors.Is(err, wantErr) {
		t.Errorf("error %v is not %v", err, wantErr)
	}
	diff(t, "Dump after a failed call", f.Dump(), before)
}

func TestFakeMarkKeys(t *testing.T) {
	seed := lines(
		"-A -t 10.96.0.10:80 -s rr",
		"-A -f 8193 -s rr",
		"-a -f 8193 -r 10.244.1.5:8080 -m -w 1",
		"-A -f 8193 -6 -s rr",
	)
	tests := []struct {
		name     string
		op       func(f *Fake) error
		wantErr  error  // nil: any error, or success
		wantMsg  string // whole error text; "" for success
		wantDump string
	}{
		{
			name: "update scheduler and persistence",
			op: func(f *Fake) error {
				return f.UpdateService(Service{Key: fwm6, Scheduler: "mh", Persistent: true, Timeout: 10800, Flags: SchedFlag2})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-A -f 8193 -s rr", "-a -f 8193 -r 10.244.1.5:8080 -m -w 1", "-A -f 8193 -6 -s mh -p 10800 -b mh-port"),
		},
		{
			name: "add real servers of each family",
			op: func(f *Fake) error {
				return errors.Join(
					f.AddDestination(fwm, masq("10.244.1.6:8080")),
					f.AddDestination(fwm6, masq("[fd00::5]:8080")),
				)
			},
			wantDump: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-A -f 8193 -s rr",
				"-a -f 8193 -r 10.244.1.5:8080 -m -w 1",
				"-a -f 8193 -r 10.244.1.6:8080 -m -w 1",
				"-A -f 8193 -6 -s rr",
				"-a -f 8193 -6 -r [fd00::5]:8080 -m -w 1",
			),
		},
		{
			name: "update real server",
			op: func(f *Fake) error {
				return f.UpdateDestination(fwm, Destination{Addr: netip.MustParseAddrPort("10.244.1.5:8080"), Weight: 0})
			},
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-A -f 8193 -s rr", "-a -f 8193 -r 10.244.1.5:8080 -m -w 0", "-A -f 8193 -6 -s rr"),
		},
		{
			name:     "delete real server",
			op:       func(f *Fake) error { return f.DeleteDestination(fwm, netip.MustParseAddrPort("10.244.1.5:8080")) },
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-A -f 8193 -s rr", "-A -f 8193 -6 -s rr"),
		},
		{
			name:     "delete one family's service",
			op:       func(f *Fake) error { return f.DeleteService(fwm) },
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-A -f 8193 -6 -s rr"),
		},
		{
			name:    "add a taken mark",
			op:      func(f *Fake) error { return f.AddService(Service{Key: fwm6, Scheduler: "wlc"}) },
			wantErr: ErrExists,
			wantMsg: "adding virtual server -f 8193 -6: already exists",
		},
		{
			name:    "real server of the mark's other family",
			op:      func(f *Fake) error { return f.AddDestination(fwm, masq("[fd00::5]:8080")) },
			wantMsg: "adding real server [fd00::5]:8080 to -f 8193: real server [fd00::5]:8080 is not of the virtual server's address family",
		},
		{
			name:    "other mark",
			op:      func(f *Fake) error { return f.DeleteService(MarkKey(8194, false)) },
			wantErr: ErrNotFound,
			wantMsg: "deleting virtual server -f 8194: not found",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := seeded(t, seed)
			checkResult(t, f, tc.op(f), tc.wantMsg, tc.wantErr, tc.wantDump, seed)
		})
	}
}

func TestFakeDumpSorted(t *testing.T) {
	f := NewFake()
	// Added out of order on purpose.
	mustDo(t, f.AddService(rr(web6)))
	mustDo(t, f.AddService(Service{Key: key(SCTP, "10.96.0.10:80"), Scheduler: "rr"}))
	mustDo(t, f.AddService(Service{Key: web, Scheduler: "wlc", Persistent: true, Timeout: 10800}))
	mustDo(t, f.AddService(rr(dns)))
	mustDo(t, f.AddService(rr(key(TCP, "10.96.0.2:443"))))
	mustDo(t, f.AddService(rr(fwm6)))
	mustDo(t, f.AddService(rr(MarkKey(2, false))))
	mustDo(t, f.AddService(rr(fwm)))
	mustDo(t, f.AddDestination(web, masq("10.244.10.1:8080")))
	mustDo(t, f.AddDestination(web, masq("10.244.2.1:8080")))
	mustDo(t, f.AddDestination(web, masq("10.244.2.1:80")))
	mustDo(t, f.AddDestination(web6, Destination{Addr: netip.MustParseAddrPort("[fd00:244::5]:8080"), Weight: 2, Forward: Tunnel}))
	want := lines(
		"-A -t 10.96.0.2:443 -s rr",
		"-A -t 10.96.0.10:80 -s wlc -p 10800",
		"-a -t 10.96.0.10:80 -r 10.244.2.1:80 -m -w 1",
		"-a -t 10.96.0.10:80 -r 10.244.2.1:8080 -m -w 1",
		"-a -t 10.96.0.10:80 -r 10.244.10.1:8080 -m -w 1",
		"-A -u 10.96.0.10:53 -s rr",
		"-A --sctp-service 10.96.0.10:80 -s rr",
		"-A -t [fd00::10]:80 -s rr",
		"-a -t [fd00::10]:80 -r [fd00:244::5]:8080 -i -w 2",
		"-A -f 2 -s rr",
		"-A -f 8193 -s rr",
		"-A -f 8193 -6 -s rr",
	)
	diff(t, "Dump", f.Dump(), want)
	diff(t, "DumpService", f.DumpService(web6), lines("-A -t [fd00::10]:80 -s rr", "-a -t [fd00::10]:80 -r [fd00:244::5]:8080 -i -w 2"))
	diff(t, "DumpService of missing", f.DumpService(key(TCP, "1.2.3.4:5")), "")

	svcs, err := f.ListServices()
	mustDo(t, err)
	var keys []ServiceKey
	for _, s := range svcs {
		keys = append(keys, s.Key)
	}
	wantKeys := []ServiceKey{key(TCP, "10.96.0.2:443"), web, dns, key(SCTP, "10.96.0.10:80"), web6, MarkKey(2, false), fwm, fwm6}
	if len(keys) != len(wantKeys) {
		t.Fatalf("ListServices keys = %v, want %v", keys, wantKeys)
	}
	for i := range keys {
		if keys[i] != wantKeys[i] {
			t.Errorf("ListServices[%d] = %v, want %v", i, keys[i], wantKeys[i])
		}
	}
}

func TestFakeListReturnsCopies(t *testing.T) {
	f := seeded(t, base)
	ds, err := f.ListDestinations(web)
	mustDo(t, err)
	ds[0].Weight = 100
	svcs, err := f.ListServices()
	mustDo(t, err)
	svcs[0].Scheduler = "changed"
	diff(t, "Dump", f.Dump(), base)

	empty := seeded(t, "-A -t 10.96.0.10:80 -s rr\n")
	ds, err = empty.ListDestinations(web)
	if err != nil || ds == nil || len(ds) != 0 {
		t.Errorf("ListDestinations of a service without real servers = %v, %v; want empty, nil", ds, err)
	}
}

func TestFakeCalls(t *testing.T) {
	f := seeded(t, base)
	if got := f.Calls(); len(got) != 0 {
		t.Fatalf("Load counted calls: %v", got)
	}
	_, _ = f.ListServices()
	_, _ = f.ListServices()
	_, _ = f.ListDestinations(web)
	_ = f.AddService(rr(web)) // fails, still counted
	_ = f.AddService(rr(dns))
	_ = f.UpdateService(rr(dns))
	_ = f.AddDestination(dns, masq("10.244.1.9:53"))
	_ = f.UpdateDestination(dns, masq("10.244.1.9:53"))
	_ = f.DeleteDestination(dns, netip.MustParseAddrPort("10.244.1.9:53"))
	_ = f.DeleteService(dns)
	_ = f.Dump()
	_ = f.DumpService(web)

	want := map[string]int{
		MethodListServices: 2, MethodListDestinations: 1,
		MethodAddService: 2, MethodUpdateService: 1, MethodDeleteService: 1,
		MethodAddDestination: 1, MethodUpdateDestination: 1, MethodDeleteDestination: 1,
	}
	got := f.Calls()
	if len(got) != len(want) {
		t.Errorf("Calls() = %v, want %v", got, want)
	}
	for m, n := range want {
		if got[m] != n {
			t.Errorf("Calls()[%s] = %d, want %d", m, got[m], n)
		}
	}
	if f.Reads() != 3 || f.Writes() != 7 {
		t.Errorf("Reads, Writes = %d, %d; want 3, 7", f.Reads(), f.Writes())
	}
	got[MethodAddService] = 99 // a copy: must not change the Fake
	if f.Calls()[MethodAddService] != 2 {
		t.Error("Calls() returned the Fake's own map")
	}
	f.ResetCalls()
	if len(f.Calls()) != 0 || f.Reads() != 0 || f.Writes() != 0 {
		t.Errorf("after ResetCalls: %v", f.Calls())
	}
	diff(t, "Dump after ResetCalls", f.Dump(), base)
}

func TestFakeFailOn(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		method  string
		key     ServiceKey
		op      func(f *Fake) error
		wantMsg string // "" means the call succeeds
	}{
		{
			name: "exact key", method: MethodAddDestination, key: web,
			op:      func(f *Fake) error { return f.AddDestination(web, masq("10.244.3.3:80")) },
			wantMsg: "adding real server 10.244.3.3:80 to -t 10.96.0.10:80: boom",
		},
		{
			name: "other key unaffected", method: MethodAddService, key: web6,
			op: func(f *Fake) error { return f.AddService(rr(dns)) },
		},
		{
			name: "other method unaffected", method: MethodDeleteService, key: web,
			op: func(f *Fake) error { return f.UpdateService(rr(web)) },
		},
		{
			name: "zero key matches every key", method: MethodDeleteService,
			op:      func(f *Fake) error { return f.DeleteService(web) },
			wantMsg: "deleting virtual server -t 10.96.0.10:80: boom",
		},
		{
			name: "list services", method: MethodListServices,
			op: func(f *Fake) error {
				_, err := f.ListServices()
				return err
			},
			wantMsg: "listing virtual servers: boom",
		},
		{
			name: "injected before not-found", method: MethodListDestinations, key: dns,
			op: func(f *Fake) error {
				_, err := f.ListDestinations(dns)
				return err
			},
			wantMsg: "listing real servers of -u 10.96.0.10:53: boom",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := seeded(t, base)
			f.FailOn(tc.method, tc.key, boom)
			err := tc.op(f)
			if tc.wantMsg == "" {
				mustDo(t, err)
				return
			}
			if err == nil || err.Error() != tc.wantMsg || !errors.Is(err, boom) {
				t.Fatalf("error = %v, want %q wrapping boom", err, tc.wantMsg)
			}
			diff(t, "Dump after injected failure", f.Dump(), base)
			if calls := f.Calls(); calls[tc.method] != 1 {
				t.Errorf("failed call not counted: %v", calls)
			}
			f.FailOn(tc.method, tc.key, nil)
			if err := tc.op(f); errors.Is(err, boom) {
				t.Errorf("failure not cleared: %v", err)
			}
		})
	}
}

func TestFakeFailOnUnknownMethodPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("FailOn with a misspelt method did not panic")
		}
	}()
	NewFake().FailOn("AddServices", web, errors.New("x"))
}

func TestFakeLoad(t *testing.T) {
	tests := []struct {
		name     string
		seed     string
		load     string
		wantErr  error
		wantMsg  string
		wantDump string
	}{
		{
			name:     "adds to existing table",
			seed:     base,
			load:     lines("# foreign", "-A -u 10.96.0.10:53 -s rr", "-a -u 10.96.0.10:53 -r 10.0.0.1:53 -g -w 1"),
			wantDump: lines("-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1", "-A -u 10.96.0.10:53 -s rr", "-a -u 10.96.0.10:53 -r 10.0.0.1:53 -g -w 1"),
		},
		{
			name:    "existing service is all-or-nothing",
			seed:    base,
			load:    lines("-A -u 10.96.0.10:53 -s rr", "-A -t 10.96.0.10:80 -s rr"),
			wantErr: ErrExists,
			wantMsg: "loading IPVS table: adding virtual server -t 10.96.0.10:80: already exists",
		},
		{
			name:    "parse error names the line",
			seed:    base,
			load:    lines("-A -u 10.96.0.10:53 -s rr", "", "-a -u 10.96.0.10:53 -r 10.0.0.1 -m"),
			wantMsg: `loading IPVS table: line 3: real server address "10.0.0.1": not an ip:port`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := seeded(t, tc.seed)
			checkResult(t, f, f.Load(tc.load), tc.wantMsg, tc.wantErr, tc.wantDump, tc.seed)
		})
	}
}

func TestFakeLoadRoundTrip(t *testing.T) {
	text := lines(
		"-A -t 10.96.0.2:443 -s rr",
		"-A -t 10.96.0.10:80 -s wlc -p 10800",
		"-a -t 10.96.0.10:80 -r 10.244.2.1:80 -m -w 1",
		"-a -t 10.96.0.10:80 -r 10.244.10.1:8080 -g -w 0",
		"-A -u 10.96.0.10:53 -s sh",
		"-a -u 10.96.0.10:53 -r 10.244.2.1:53 -m -w 1",
		"-A --sctp-service 10.96.0.10:80 -s rr",
		"-A -t [fd00::10]:80 -s rr -p 0",
		"-a -t [fd00::10]:80 -r [fd00:244::5]:8080 -i -w 2",
		"-A -f 8193 -s mh -b mh-fallback,mh-port",
		"-a -f 8193 -r 10.244.2.1:8080 -m -w 1",
		"-A -f 8193 -6 -s rr -p 10800",
		"-a -f 8193 -6 -r [fd00:244::5]:8080 -m -w 3",
	)
	f := seeded(t, text)
	diff(t, "Dump of loaded text", f.Dump(), text)
	g := seeded(t, f.Dump())
	diff(t, "Dump of reloaded Dump", g.Dump(), text)
	if len(f.Calls()) != 0 {
		t.Errorf("Load counted calls: %v", f.Calls())
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
