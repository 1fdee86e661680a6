package netif

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var (
	vip  = netip.MustParseAddr("10.96.0.10")
	vip2 = netip.MustParseAddr("10.96.0.2")
	vip6 = netip.MustParseAddr("fd00::10")
)

func lines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

func diff(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n--- got ---\n%s--- want ---\n%s", what, got, want)
	}
}

func TestFakeAddrs(t *testing.T) {
	tests := []struct {
		name     string
		seed     func(f *FakeAddrs) // nil: no link
		op       func(f *FakeAddrs) error
		wantErr  error
		wantMsg  string // "" means success
		wantDump string
	}{
		{
			name:     "ensure creates and sets up",
			op:       func(f *FakeAddrs) error { return f.EnsureLink() },
			wantDump: lines("link kipvs0 up"),
		},
		{
			name:     "ensure sets an existing dummy up and keeps its addresses",
			seed:     func(f *FakeAddrs) { f.SeedLink("", false, vip) },
			op:       func(f *FakeAddrs) error { return f.EnsureLink() },
			wantDump: lines("link kipvs0 up", "10.96.0.10/32"),
		},
		{
			name:     "ensure refuses a link that is not a dummy",
			seed:     func(f *FakeAddrs) { f.SeedLink("bridge", true, vip) },
			op:       func(f *FakeAddrs) error { return f.EnsureLink() },
			wantMsg:  `ensuring link: link kipvs0 exists and is a "bridge", not a dummy; kube-ipvs will not use or change it`,
			wantDump: lines("link kipvs0 up type bridge", "10.96.0.10/32"),
		},
		{
			name:     "delete link takes its addresses",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true, vip, vip6) },
			op:       func(f *FakeAddrs) error { return f.DeleteLink() },
			wantDump: "",
		},
		{
			name:    "delete missing link",
			op:      func(f *FakeAddrs) error { return f.DeleteLink() },
			wantErr: ErrNotFound,
			wantMsg: "deleting link: link kipvs0: not found",
		},
		{
			name:     "delete refuses a link that is not a dummy",
			seed:     func(f *FakeAddrs) { f.SeedLink("veth", true) },
			op:       func(f *FakeAddrs) error { return f.DeleteLink() },
			wantMsg:  `deleting link: link kipvs0 exists and is a "veth", not a dummy; kube-ipvs will not use or change it`,
			wantDump: lines("link kipvs0 up type veth"),
		},
		{
			name:     "add addresses",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true, vip) },
			op:       func(f *FakeAddrs) error { return errors.Join(f.AddAddr(vip6), f.AddAddr(vip2)) },
			wantDump: lines("link kipvs0 up", "10.96.0.2/32", "10.96.0.10/32", "fd00::10/128"),
		},
		{
			name:     "add bound address",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true, vip) },
			op:       func(f *FakeAddrs) error { return f.AddAddr(vip) },
			wantErr:  ErrExists,
			wantMsg:  "adding address 10.96.0.10/32 to kipvs0: already exists",
			wantDump: lines("link kipvs0 up", "10.96.0.10/32"),
		},
		{
			name:    "add address without link",
			op:      func(f *FakeAddrs) error { return f.AddAddr(vip6) },
			wantErr: ErrNotFound,
			wantMsg: "adding address fd00::10/128 to kipvs0: link kipvs0: not found",
		},
		{
			name:     "add invalid address",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true) },
			op:       func(f *FakeAddrs) error { return f.AddAddr(netip.Addr{}) },
			wantMsg:  "adding address invalid IP to kipvs0: invalid address",
			wantDump: lines("link kipvs0 up"),
		},
		{
			name:     "add IPv4-mapped address",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true) },
			op:       func(f *FakeAddrs) error { return f.AddAddr(netip.MustParseAddr("::ffff:10.0.0.1")) },
			wantMsg:  "adding address ::ffff:10.0.0.1/128 to kipvs0: address ::ffff:10.0.0.1 is IPv4-mapped IPv6; use the IPv4 form",
			wantDump: lines("link kipvs0 up"),
		},
		{
			name:     "delete address",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true, vip, vip6) },
			op:       func(f *FakeAddrs) error { return f.DelAddr(vip) },
			wantDump: lines("link kipvs0 up", "fd00::10/128"),
		},
		{
			name:     "delete unbound address",
			seed:     func(f *FakeAddrs) { f.SeedLink("", true, vip) },
			op:       func(f *FakeAddrs) error { return f.DelAddr(vip2) },
			wantErr:  ErrNotFound,
			wantMsg:  "deleting address 10.96.0.2/32 from kipvs0: not found",
			wantDump: lines("link kipvs0 up", "10.96.0.10/32"),
		},
		{
			name:    "delete address without link",
			op:      func(f *FakeAddrs) error { return f.DelAddr(vip) },
			wantErr: ErrNotFound,
			wantMsg: "deleting address 10.96.0.10/32 from kipvs0: link kipvs0: not found",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFakeAddrs("")
			if tc.seed != nil {
				tc.seed(f)
			}
			err := tc.op(f)
			if tc.wantMsg == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantMsg != "" && (err == nil || err.Error() != tc.wantMsg) {
				t.Fatalf("error = %v, want %q", err, tc.wantMsg)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
			diff(t, "Dump", f.Dump(), tc.wantDump)
		})
	}
}

func TestFakeAddrsList(t *testing.T) {
	f := NewFakeAddrs("")
	got, err := f.ListAddrs()
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ListAddrs without link = %v, %v; want empty, nil", got, err)
	}
	f.SeedLink("", true, vip6, vip, vip2)
	got, err = f.ListAddrs()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{vip2, vip, vip6}
	if len(got) != len(want) {
		t.Fatalf("ListAddrs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ListAddrs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	got[0] = vip6 // a copy: must not change the fake
	diff(t, "Dump", f.Dump(), lines("link kipvs0 up", "10.96.0.2/32", "10.96.0.10/32", "fd00::10/128"))
}

func TestFakeAddrsCustomName(t *testing.T) {
	f := NewFakeAddrs("kube-ipvs0")
	if f.Name() != "kube-ipvs0" || NewFakeAddrs("").Name() != DefaultLink {
		t.Errorf("names: %q %q", f.Name(), NewFakeAddrs("").Name())
	}
	if err := f.EnsureLink(); err != nil {
		t.Fatal(err)
	}
	err := f.AddAddr(vip)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Dump", f.Dump(), lines("link kube-ipvs0 up", "10.96.0.10/32"))
}

func TestFakeAddrsCalls(t *testing.T) {
	f := NewFakeAddrs("")
	f.SeedLink("", true)
	if len(f.Calls()) != 0 {
		t.Fatalf("SeedLink counted calls: %v", f.Calls())
	}
	_ = f.EnsureLink()
	_, _ = f.ListAddrs()
	_, _ = f.ListAddrs()
	_ = f.AddAddr(vip)
	_ = f.AddAddr(vip) // fails, still counted
	_ = f.DelAddr(vip)
	_ = f.DeleteLink()
	_ = f.Dump()
	want := map[string]int{MethodEnsureLink: 1, MethodListAddrs: 2, MethodAddAddr: 2, MethodDelAddr: 1, MethodDeleteLink: 1}
	got := f.Calls()
	if len(got) != len(want) {
		t.Errorf("Calls() = %v, want %v", got, want)
	}
	for m, n := range want {
		if got[m] != n {
			t.Errorf("Calls()[%s] = %d, want %d", m, got[m], n)
		}
	}
	// EnsureLink found the seeded link up, so it only looked: a read.
	if f.Reads() != 3 || f.Writes() != 4 {
		t.Errorf("Reads, Writes = %d, %d; want 3, 4", f.Reads(), f.Writes())
	}
	f.ResetCalls()
	if len(f.Calls()) != 0 || f.Reads()+f.Writes() != 0 {
		t.Errorf("after ResetCalls: %v", f.Calls())
	}
}

func TestFakeAddrsFailOn(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		method  string
		addr    netip.Addr
		op      func(f *FakeAddrs) error
		wantMsg string
	}{
		{"exact address", MethodAddAddr, vip, func(f *FakeAddrs) error { return f.AddAddr(vip) }, "adding address 10.96.0.10/32 to kipvs0: boom"},
		{"other address unaffected", MethodAddAddr, vip6, func(f *FakeAddrs) error { return f.AddAddr(vip) }, ""},
		{"zero address matches all", MethodDelAddr, netip.Addr{}, func(f *FakeAddrs) error { return f.DelAddr(vip2) }, "deleting address 10.96.0.2/32 from kipvs0: boom"},
		{"ensure link", MethodEnsureLink, netip.Addr{}, func(f *FakeAddrs) error { return f.EnsureLink() }, "ensuring link: boom"},
		{"delete link", MethodDeleteLink, netip.Addr{}, func(f *FakeAddrs) error { return f.DeleteLink() }, "deleting link: boom"},
		{"list", MethodListAddrs, netip.Addr{}, func(f *FakeAddrs) error { _, err := f.ListAddrs(); return err }, "listing addresses of kipvs0: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFakeAddrs("")
			f.SeedLink("", false, vip2)
			before := f.Dump()
			f.FailOn(tc.method, tc.addr, boom)
			err := tc.op(f)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantMsg || !errors.Is(err, boom) {
				t.Fatalf("error = %v, want %q wrapping boom", err, tc.wantMsg)
			}
			diff(t, "Dump after injected failure", f.Dump(), before)
			f.FailOn(tc.method, tc.addr, nil)
			if err := tc.op(f); errors.Is(err, boom) {
				t.Errorf("failure not cleared: %v", err)
			}
		})
	}
}

func TestFakeFailOnUnknownMethodPanics(t *testing.T) {
	for name, call := range map[string]func(){
		"addrs":  func() { NewFakeAddrs("").FailOn("AddAddress", vip, errors.New("x")) },
		"sysctl": func() { NewFakeSysctl(nil).FailOn(MethodAddAddr, "net/ipv4/ip_forward", errors.New("x")) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("FailOn with a wrong method did not panic")
				}
			}()
			call()
		})
	}
}

func TestFakeSysctl(t *testing.T) {
	seed := map[string]string{"net/ipv4/vs/conntrack": "0\n", "net/ipv4/ip_forward": "1"}
	tests := []struct {
		name     string
		op       func(f *FakeSysctl) (string, error)
		want     string
		wantErr  error
		wantMsg  string
		wantDump string
	}{
		{
			name: "get trims",
			op:   func(f *FakeSysctl) (string, error) { return f.Get("net/ipv4/vs/conntrack") },
			want: "0",
		},
		{
			name:    "get missing",
			op:      func(f *FakeSysctl) (string, error) { return f.Get("net/ipv4/vs/expire_nodest_conn") },
			wantErr: ErrNotFound,
			wantMsg: "reading sysctl net/ipv4/vs/expire_nodest_conn: not found",
		},
		{
			name:    "get dotted key",
			op:      func(f *FakeSysctl) (string, error) { return f.Get("net.ipv4.ip_forward") },
			wantMsg: `reading sysctl net.ipv4.ip_forward: invalid sysctl key "net.ipv4.ip_forward": want a relative slash-separated path like net/ipv4/ip_forward`,
		},
		{
			name:     "set",
			op:       func(f *FakeSysctl) (string, error) { return "", f.Set("net/ipv4/vs/conntrack", " 1\n") },
			wantDump: lines("net/ipv4/ip_forward = 1", "net/ipv4/vs/conntrack = 1"),
		},
		{
			name:    "set missing",
			op:      func(f *FakeSysctl) (string, error) { return "", f.Set("net/ipv4/vs/conn_reuse_mode", "0") },
			wantErr: ErrNotFound,
			wantMsg: "setting sysctl net/ipv4/vs/conn_reuse_mode=0: not found",
		},
		{
			name:    "set path escaping the root",
			op:      func(f *FakeSysctl) (string, error) { return "", f.Set("net/../../etc/passwd", "x") },
			wantMsg: `setting sysctl net/../../etc/passwd=x: invalid sysctl key "net/../../etc/passwd": want a relative slash-separated path like net/ipv4/ip_forward`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFakeSysctl(seed)
			got, err := tc.op(f)
			if tc.wantMsg == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantMsg != "" && (err == nil || err.Error() != tc.wantMsg) {
				t.Fatalf("error = %v, want %q", err, tc.wantMsg)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("value = %q, want %q", got, tc.want)
			}
			wantDump := tc.wantDump
			if wantDump == "" {
				wantDump = lines("net/ipv4/ip_forward = 1", "net/ipv4/vs/conntrack = 0")
			}
			diff(t, "Dump", f.Dump(), wantDump)
		})
	}
}

func TestFakeSysctlCallsAndFailOn(t *testing.T) {
	boom := errors.New("boom")
	f := NewFakeSysctl(map[string]string{"net/ipv4/vs/conntrack": "0"})
	f.FailOn(MethodSet, "net/ipv4/vs/conntrack", boom)
	err := f.Set("net/ipv4/vs/conntrack", "1")
	if err == nil || err.Error() != "setting sysctl net/ipv4/vs/conntrack=1: boom" || !errors.Is(err, boom) {
		t.Errorf("Set = %v", err)
	}
	f.FailOn(MethodGet, "", boom)
	if _, err := f.Get("net/ipv4/vs/conntrack"); !errors.Is(err, boom) {
		t.Errorf("Get with any-key failure = %v", err)
	}
	diff(t, "Dump after failures", f.Dump(), lines("net/ipv4/vs/conntrack = 0"))
	f.FailOn(MethodSet, "net/ipv4/vs/conntrack", nil)
	f.FailOn(MethodGet, "", nil)
	if err := f.Set("net/ipv4/vs/conntrack", "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := f.Get("net/ipv4/vs/conntrack"); v != "1" || err != nil {
		t.Errorf("Get = %q, %v", v, err)
	}
	if c := f.Calls(); c[MethodSet] != 2 || c[MethodGet] != 2 || f.Reads() != 2 || f.Writes() != 2 {
		t.Errorf("Calls = %v, Reads %d, Writes %d", c, f.Reads(), f.Writes())
	}
	f.ResetCalls()
	if len(f.Calls()) != 0 {
		t.Errorf("after ResetCalls: %v", f.Calls())
	}
}

func TestFakeSysctlValues(t *testing.T) {
	f := NewFakeSysctl(map[string]string{
		"net/ipv4/vs/conntrack":           "0",
		"net/ipv4/tcp_rmem":               "4096 131072 6291456",
		"net/ipv4/tcp_congestion_control": "cubic",
		"net/ipv4/conf/all/arp_announce":  "2",
	})
	tests := []struct {
		key, value string
		ok         bool
	}{
		{"net/ipv4/vs/conntrack", "1", true},
		{"net/ipv4/vs/conntrack", "-1", true},
		{"net/ipv4/vs/conntrack", "yes", false},
		{"net/ipv4/vs/conntrack", "", false},
		{"net/ipv4/tcp_rmem", "4096 87380 6291456", true},
		{"net/ipv4/tcp_rmem", "4096 big", false},
		{"net/ipv4/tcp_congestion_control", "bbr", true},
		{"net/ipv4/conf/all/arp_announce", "0x2", false},
	}
	for _, tt := range tests {
		err := f.Set(tt.key, tt.value)
		if tt.ok != (err == nil) || (!tt.ok && !errors.Is(err, syscall.EINVAL)) {
			t.Errorf("Set(%s, %q) = %v, want ok %v (else EINVAL)", tt.key, tt.value, err, tt.ok)
		}
	}
}

func TestFakeAddrSource(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name     string
		set      []netip.Addr
		want4    []netip.Addr
		want6    []netip.Addr
		setAgain []netip.Addr // a second Set, when not nil, replaces the first
	}{
		{name: "nothing", want4: []netip.Addr{}, want6: []netip.Addr{}},
		{name: "sorted by family, duplicates once",
			set:   []netip.Addr{a("2001:db8::7"), a("192.168.10.7"), a("127.0.0.1"), a("10.0.0.7"), a("::1"), a("192.168.10.7")},
			want4: []netip.Addr{a("10.0.0.7"), a("127.0.0.1"), a("192.168.10.7")}, want6: []netip.Addr{a("::1"), a("2001:db8::7")}},
		{name: "IPv4-mapped is IPv4, zones dropped, IPv6 link-local left out",
			set:   []netip.Addr{a("::ffff:192.168.10.7"), a("fe80::1%eth0"), a("fe80::2"), a("fd00::7%eth0")},
			want4: []netip.Addr{a("192.168.10.7")}, want6: []netip.Addr{a("fd00::7")}},
		{name: "Set replaces both families", set: []netip.Addr{a("192.168.10.7"), a("2001:db8::7")},
			setAgain: []netip.Addr{a("192.168.10.8")}, want4: []netip.Addr{a("192.168.10.8")}, want6: []netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFakeAddrSource(tt.set...)
			if tt.setAgain != nil {
				f.Set(tt.setAgain...)
			}
			for _, c := range []struct {
				ipv6 bool
				want []netip.Addr
			}{{false, tt.want4}, {true, tt.want6}} {
				got, err := f.LocalAddrs(c.ipv6)
				if err != nil || got == nil || !slices.Equal(got, c.want) {
					t.Errorf("LocalAddrs(%v) = %#v, %v; want %v", c.ipv6, got, err, c.want)
				}
			}
		})
	}
}

func TestFakeAddrSourceCallsAndFailOn(t *testing.T) {
	boom := errors.New("boom")
	f := NewFakeAddrSource(vip)
	f.FailOn(boom)
	if _, err := f.LocalAddrs(true); !errors.Is(err, boom) || err.Error() != "listing local IPv6 addresses: boom" {
		t.Errorf("LocalAddrs with a failure = %v", err)
	}
	f.FailOn(nil)
	if got, err := f.LocalAddrs(false); err != nil || !slices.Equal(got, []netip.Addr{vip}) {
		t.Errorf("LocalAddrs after FailOn(nil) = %v, %v", got, err)
	}
	if c := f.Calls(); c[MethodLocalAddrs] != 2 || f.Reads() != 2 {
		t.Errorf("Calls = %v, Reads %d; want 2 LocalAddrs", c, f.Reads())
	}
	f.Set(vip2) // not a call
	f.ResetCalls()
	if len(f.Calls()) != 0 || f.Reads() != 0 {
		t.Errorf("after ResetCalls: %v", f.Calls())
	}
	defer func() {
		if recover() == nil {
			t.Errorf("Set(netip.Addr{}) did not panic")
		}
	}()
	f.Set(netip.Addr{})
}

func TestKernelAddrSource(t *testing.T) {
	if s := NewAddrSource(""); s.ExceptLink() != DefaultLink {
		t.Errorf("NewAddrSource(\"\").ExceptLink() = %q, want %q", s.ExceptLink(), DefaultLink)
	}
	if s := NewAddrSource("kube-ipvs0"); s.ExceptLink() != "kube-ipvs0" {
		t.Errorf("ExceptLink() = %q", s.ExceptLink())
	}
}
