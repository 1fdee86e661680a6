//go:build linux

package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	libipvs "github.com/moby/ipvs"
)

// Nothing here opens a netlink socket: only the pure conversions and the
// error mapping are tested. The Kernel against a real IPVS table is tested
// in a VM (tier 2).

func TestNewKernelHasNoSideEffects(t *testing.T) {
	k := NewKernel()
	if k.handle != nil || k.newHandle != nil {
		t.Error("NewKernel opened a handle")
	}
	if k.Root != "/" || k.Modprobe != nil || k.Netns != "" {
		t.Errorf("NewKernel = %+v", k)
	}
	if err := k.Close(); err != nil {
		t.Errorf("Close of an unopened Kernel: %v", err)
	}
}

func TestToLibService(t *testing.T) {
	tests := []struct {
		name string
		in   Service
		want libipvs.Service
	}{
		{
			name: "ipv4 tcp",
			in:   rr(web),
			want: libipvs.Service{Address: net.IPv4(10, 96, 0, 10).To4(), Protocol: 6, Port: 80, SchedName: "rr", AddressFamily: syscall.AF_INET, Netmask: 0xffffffff},
		},
		{
			name: "ipv6 udp persistent",
			in:   Service{Key: key(UDP, "[fd00::a]:53"), Scheduler: "sh", Persistent: true, Timeout: 10800},
			want: libipvs.Service{Address: net.ParseIP("fd00::a"), Protocol: 17, Port: 53, SchedName: "sh", Flags: 1, Timeout: 10800, AddressFamily: syscall.AF_INET6, Netmask: 128},
		},
		{
			name: "ipv4 firewall mark, no address, protocol or port",
			in:   rr(MarkKey(8193, false)),
			want: libipvs.Service{FWMark: 8193, SchedName: "rr", AddressFamily: syscall.AF_INET, Netmask: 0xffffffff},
		},
		{
			name: "ipv6 firewall mark persistent with flags",
			in:   Service{Key: MarkKey(8193, true), Scheduler: "mh", Persistent: true, Timeout: 60, Flags: SchedFlag2},
			want: libipvs.Service{FWMark: 8193, SchedName: "mh", Flags: 1 | 0x10, Timeout: 60, AddressFamily: syscall.AF_INET6, Netmask: 128},
		},
		{
			name: "timeout not sent without persistence",
			in:   Service{Key: key(SCTP, "10.0.0.1:9"), Scheduler: "rr", Timeout: 60},
			want: libipvs.Service{Address: net.IPv4(10, 0, 0, 1).To4(), Protocol: 132, Port: 9, SchedName: "rr", AddressFamily: syscall.AF_INET, Netmask: 0xffffffff},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := toLibService(tc.in)
			if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", tc.want) || len(got.Address) != len(tc.want.Address) {
				t.Errorf("toLibService = %+v, want %+v", *got, tc.want)
			}
			back, ok := fromLibService(got)
			if !ok || back != normalize(tc.in) {
				t.Errorf("fromLibService(toLibService(x)) = %+v, %v; want %+v", back, ok, normalize(tc.in))
			}
		})
	}
}

// servicesFromLib converts a dump as ListServices does: fromLibService on
// each, what it rejects left out, sorted by key.
func servicesFromLib(raw []*libipvs.Service) []Service {
	out := make([]Service, 0, len(raw))
	for _, ls := range raw {
		if s, ok := fromLibService(ls); ok {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Service) int { return a.Key.Compare(b.Key) })
	return out
}

func TestServicesFromLib(t *testing.T) {
	raw := []*libipvs.Service{
		{Address: net.ParseIP("fd00::a"), Protocol: 6, Port: 80, SchedName: "rr", AddressFamily: syscall.AF_INET6},
		// Firewall marks as github.com/moby/ipvs lists them: FWMark and
		// family, no Address, Protocol 0, Port 0.
		{FWMark: 8193, SchedName: "rr", Flags: 2, AddressFamily: syscall.AF_INET6, Netmask: 128},
		{FWMark: 8193, SchedName: "wlc", Flags: 1 | 2, Timeout: 60, AddressFamily: syscall.AF_INET, Netmask: 0xffffffff},
		{FWMark: 7, SchedName: "rr", AddressFamily: syscall.AF_INET},
		{FWMark: 9, SchedName: "rr", AddressFamily: 99}, // unknown family
		{Address: net.IP{10, 96, 0, 10}, Protocol: 17, Port: 53, SchedName: "wlc", Flags: 1 | 2, Timeout: 300, AddressFamily: syscall.AF_INET},
		{Address: net.IP{10, 96, 0, 11}, Protocol: 6, Port: 80, SchedName: "rr", Timeout: 300, AddressFamily: syscall.AF_INET},
		{Address: net.IP{10, 96, 0, 12}, Protocol: 6, Port: 80, SchedName: "rr", AddressFamily: 99},               // unknown family
		{Address: net.ParseIP("fd00::b"), Protocol: 6, Port: 80, SchedName: "rr", AddressFamily: syscall.AF_INET}, // family mismatch
		{Address: net.IP{1, 2, 3}, Protocol: 6, Port: 80, SchedName: "rr", AddressFamily: syscall.AF_INET},        // short address
		nil,
	}
	got := Format(servicesFromLib(raw), nil)
	want := lines(
		"-A -u 10.96.0.10:53 -s wlc -p 300",
		"-A -t 10.96.0.11:80 -s rr",
		"-A -t [fd00::a]:80 -s rr",
		"-A -f 7 -s rr",
		"-A -f 8193 -s wlc -p 60",
		"-A -f 8193 -6 -s rr",
	)
	diff(t, "servicesFromLib", got, want)
}

func TestToLibDest(t *testing.T) {
	tests := []struct {
		in   Destination
		want libipvs.Destination
	}{
		{masq("10.244.1.5:8080"), libipvs.Destination{Address: net.IP{10, 244, 1, 5}, Port: 8080, Weight: 1, AddressFamily: syscall.AF_INET}},
		{Destination{Addr: netip.MustParseAddrPort("[fd00::5]:80"), Weight: 3, Forward: Tunnel},
			libipvs.Destination{Address: net.ParseIP("fd00::5"), Port: 80, Weight: 3, ConnectionFlags: 2, AddressFamily: syscall.AF_INET6}},
	}
	for _, tc := range tests {
		t.Run(tc.in.Addr.String(), func(t *testing.T) {
			got := toLibDest(tc.in)
			if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("toLibDest = %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestMapErrno(t *testing.T) {
	other := errors.New("socket closed")
	tests := []struct {
		name     string
		err      error
		onENOENT error
		want     error
		wantMsg  string
	}{
		{"nil", nil, ErrNotFound, nil, ""},
		{"EEXIST", syscall.EEXIST, ErrNotFound, ErrExists, "already exists (file exists)"},
		{"ESRCH", syscall.ESRCH, ErrNoScheduler, ErrNotFound, "not found (no such process)"},
		{"ENOENT real server", syscall.ENOENT, ErrNotFound, ErrNotFound, "not found (no such file or directory)"},
		{"ENOENT scheduler", syscall.ENOENT, ErrNoScheduler, ErrNoScheduler, "scheduler not available (no such file or directory)"},
		{"other errno kept", syscall.EINVAL, ErrNotFound, syscall.EINVAL, "invalid argument"},
		{"non-errno kept", other, ErrNotFound, other, "socket closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mapErrno(tc.err, tc.onENOENT)
			if tc.want == nil {
				if got != nil {
					t.Fatalf("mapErrno(nil) = %v", got)
				}
				return
			}
			if !errors.Is(got, tc.want) || got.Error() != tc.wantMsg {
				t.Errorf("mapErrno = %v, want %q wrapping %v", got, tc.wantMsg, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("mapErrno dropped the original error %v", tc.err)
			}
		})
	}
}

func TestKernelRejectsInvalidInputBeforeNetlink(t *testing.T) {
	k := NewKernel()
	opened := 0
	k.newHandle = func(string) (*libipvs.Handle, error) {
		opened++
		return nil, errors.New("test must not open netlink")
	}
	errs := []error{
		k.AddService(Service{Key: web}),
		k.AddService(rr(ServiceKey{Proto: TCP, Port: 80})),
		k.UpdateService(rr(key(Protocol(50), "10.0.0.1:1"))),
		k.DeleteService(ServiceKey{}),
		k.AddDestination(web, masq("[fd00::1]:80")),
		k.UpdateDestination(web, Destination{Addr: netip.MustParseAddrPort("10.0.0.1:1"), Weight: -1}),
		k.DeleteDestination(web, netip.AddrPort{}),
		k.AddService(rr(ServiceKey{Mark: 7})),
		k.UpdateService(rr(ServiceKey{Addr: netip.IPv4Unspecified(), Proto: TCP, Port: 80, Mark: 7})),
		k.DeleteService(ServiceKey{Addr: netip.MustParseAddr("10.0.0.1"), Mark: 7}),
		k.AddDestination(MarkKey(7, false), masq("[fd00::1]:80")),
		k.AddService(rr(MarkKey(0, false))),
	}
	_, err := k.ListDestinations(ServiceKey{})
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("call %d: no error", i)
		}
	}
	if opened != 0 {
		t.Errorf("invalid input tried to open netlink %d times", opened)
	}
}

func TestKernelOpenError(t *testing.T) {
	k := NewKernel()
	k.Netns = "/var/run/netns/test"
	var gotNetns string
	k.newHandle = func(netns string) (*libipvs.Handle, error) {
		gotNetns = netns
		return nil, syscall.EPERM
	}
	err := k.Open()
	if err == nil || err.Error() != "opening IPVS netlink socket: operation not permitted" || !errors.Is(err, syscall.EPERM) {
		t.Errorf("Open = %v", err)
	}
	if gotNetns != k.Netns {
		t.Errorf("opened netns %q, want %q", gotNetns, k.Netns)
	}
	// The dumps open a socket of their own; failing to (here the
	// namespace does not exist, or the host lacks the IPVS family) is
	// not "not found".
	_, err = k.ListServices()
	if err == nil || !strings.HasPrefix(err.Error(), "listing virtual servers: ") || errors.Is(err, ErrNotFound) {
		t.Errorf("ListServices = %v", err)
	}
	_, err = k.ListDestinations(ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Proto: TCP, Port: 80})
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("ListDestinations = %v", err)
	}
}
