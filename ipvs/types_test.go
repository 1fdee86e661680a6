package ipvs

import (
	"net/netip"
	"slices"
	"testing"
)

var (
	fwm  = MarkKey(8193, false)
	fwm6 = MarkKey(8193, true)
)

func TestMarkKey(t *testing.T) {
	tests := []struct {
		name string
		key  ServiceKey
		want ServiceKey
	}{
		{"IPv4", MarkKey(8193, false), ServiceKey{Addr: netip.MustParseAddr("0.0.0.0"), Mark: 8193}},
		{"IPv6", MarkKey(1, true), ServiceKey{Addr: netip.MustParseAddr("::"), Mark: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key != tc.want {
				t.Errorf("MarkKey = %+v, want %+v", tc.key, tc.want)
			}
			if !tc.key.IsMark() {
				t.Error("IsMark = false")
			}
			if err := validateKey(tc.key); err != nil {
				t.Errorf("validateKey: %v", err)
			}
		})
	}
	if web.IsMark() || MarkKey(0, false).IsMark() {
		t.Error("IsMark of a key with mark 0 = true")
	}
}

func TestServiceKeyString(t *testing.T) {
	tests := []struct {
		key  ServiceKey
		want string
	}{
		{web, "-t 10.96.0.10:80"},
		{dns, "-u 10.96.0.10:53"},
		{key(SCTP, "10.96.0.10:9"), "--sctp-service 10.96.0.10:9"},
		{web6, "-t [fd00::10]:80"},
		{fwm, "-f 8193"},
		{fwm6, "-f 8193 -6"},
		{MarkKey(4294967295, false), "-f 4294967295"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.key.String(); got != tc.want {
				t.Errorf("String = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServiceKeyCompare(t *testing.T) {
	// sorted is in Compare's order: address keys by address (IPv4 before
	// IPv6), protocol and port, then firewall-mark keys by mark, IPv4
	// before IPv6.
	sorted := []ServiceKey{
		key(TCP, "10.96.0.2:443"),
		key(TCP, "10.96.0.10:53"),
		key(TCP, "10.96.0.10:80"),
		key(UDP, "10.96.0.10:53"),
		key(SCTP, "10.96.0.10:9"),
		key(TCP, "[fd00::10]:80"),
		MarkKey(1, false),
		MarkKey(1, true),
		MarkKey(8193, false),
		MarkKey(8193, true),
		MarkKey(4294967295, false),
	}
	for i, a := range sorted {
		for j, b := range sorted {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("(%s).Compare(%s) = %d, want %d", a, b, got, want)
			}
		}
	}
	shuffled := slices.Clone(sorted)
	slices.Reverse(shuffled)
	shuffled[0], shuffled[5] = shuffled[5], shuffled[0]
	slices.SortFunc(shuffled, ServiceKey.Compare)
	if !slices.Equal(shuffled, sorted) {
		t.Errorf("sorted = %v, want %v", shuffled, sorted)
	}
}

func TestValidateMarkKey(t *testing.T) {
	tests := []struct {
		name    string
		key     ServiceKey
		wantMsg string
	}{
		{"no address", ServiceKey{Mark: 7}, "firewall-mark key has address invalid IP, want 0.0.0.0 or ::"},
		{"specified address", ServiceKey{Addr: netip.MustParseAddr("10.96.0.10"), Mark: 7}, "firewall-mark key has address 10.96.0.10, want 0.0.0.0 or ::"},
		{"IPv4-mapped unspecified", ServiceKey{Addr: netip.MustParseAddr("::ffff:0.0.0.0"), Mark: 7}, "firewall-mark key has address ::ffff:0.0.0.0, want 0.0.0.0 or ::"},
		{"protocol", ServiceKey{Addr: netip.IPv4Unspecified(), Proto: TCP, Mark: 7}, "firewall-mark key has protocol 6 and port 0, want neither"},
		{"port", ServiceKey{Addr: netip.IPv6Unspecified(), Port: 80, Mark: 7}, "firewall-mark key has protocol 0 and port 80, want neither"},
		{"mark 0 is an address key without protocol", MarkKey(0, false), "unsupported protocol proto-0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateKey(tc.key)
			if err == nil || err.Error() != tc.wantMsg {
				t.Errorf("validateKey(%+v) = %v, want %q", tc.key, err, tc.wantMsg)
			}
		})
	}
}
