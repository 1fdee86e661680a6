package ipvs

import (
	"errors"
	"net/netip"
	"testing"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name     string
		services []Service
		dests    map[ServiceKey][]Destination
		want     string
	}{
		{name: "empty", want: ""},
		{
			name: "sorted services and real servers",
			services: []Service{
				rr(web6),
				{Key: dns, Scheduler: "rr", Persistent: true, Timeout: 10800},
				rr(web),
			},
			dests: map[ServiceKey][]Destination{
				web:  {masq("10.244.9.1:80"), masq("10.244.1.1:80")},
				web6: {{Addr: netip.MustParseAddrPort("[fd00::2]:80"), Weight: 4, Forward: Route}},
			},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-a -t 10.96.0.10:80 -r 10.244.1.1:80 -m -w 1",
				"-a -t 10.96.0.10:80 -r 10.244.9.1:80 -m -w 1",
				"-A -u 10.96.0.10:53 -s rr -p 10800",
				"-A -t [fd00::10]:80 -s rr",
				"-a -t [fd00::10]:80 -r [fd00::2]:80 -g -w 4",
			),
		},
		{
			name: "firewall-mark virtual servers after address ones, IPv4 before IPv6",
			services: []Service{
				{Key: fwm6, Scheduler: "mh", Flags: SchedFlag2},
				{Key: MarkKey(1, false), Scheduler: "rr"},
				rr(web6),
				{Key: fwm, Scheduler: "wlc", Persistent: true, Timeout: 10800},
				rr(web),
			},
			dests: map[ServiceKey][]Destination{
				fwm:  {masq("10.244.9.1:8080"), masq("10.244.1.5:8080")},
				fwm6: {{Addr: netip.MustParseAddrPort("[fd00::5]:8080"), Weight: 0, Forward: Masquerade}},
			},
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-A -t [fd00::10]:80 -s rr",
				"-A -f 1 -s rr",
				"-A -f 8193 -s wlc -p 10800",
				"-a -f 8193 -r 10.244.1.5:8080 -m -w 1",
				"-a -f 8193 -r 10.244.9.1:8080 -m -w 1",
				"-A -f 8193 -6 -s mh -b mh-port",
				"-a -f 8193 -6 -r [fd00::5]:8080 -m -w 0",
			),
		},
		{
			name:     "timeout without persistence is not rendered",
			services: []Service{{Key: web, Scheduler: "wrr", Timeout: 300}},
			want:     lines("-A -t 10.96.0.10:80 -s wrr"),
		},
		{
			name:     "real servers of an absent service are not rendered",
			services: []Service{rr(web)},
			dests:    map[ServiceKey][]Destination{dns: {masq("10.244.1.1:53")}},
			want:     lines("-A -t 10.96.0.10:80 -s rr"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diff(t, "Format", Format(tc.services, tc.dests), tc.want)
		})
	}
}

func TestFormatDoesNotReorderInput(t *testing.T) {
	svcs := []Service{rr(web6), rr(web)}
	ds := map[ServiceKey][]Destination{web: {masq("10.0.0.9:1"), masq("10.0.0.1:1")}}
	Format(svcs, ds)
	if svcs[0].Key != web6 || ds[web][0].Addr.Addr() != netip.MustParseAddr("10.0.0.9") {
		t.Error("Format sorted its caller's slices")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    string // Format of the result
		wantErr error
		wantMsg string
	}{
		{
			name: "options in any order, ipvsadm defaults, comments",
			text: lines(
				"# ipvsadm -Sn",
				"-A -t 10.96.0.10:80 -p 60 -s wlc",
				"",
				"-a -t 10.96.0.10:80 -w 2 -r 10.0.0.1:80",
				"-a -t 10.96.0.10:80 -r 10.0.0.2:80 -m",
				"-A --tcp-service 10.96.0.11:80 -s rr",
				"-A --udp-service [fd00::1]:53 -s rr",
			),
			want: lines(
				"-A -t 10.96.0.10:80 -s wlc -p 60",
				"-a -t 10.96.0.10:80 -r 10.0.0.1:80 -g -w 2",
				"-a -t 10.96.0.10:80 -r 10.0.0.2:80 -m -w 1",
				"-A -t 10.96.0.11:80 -s rr",
				"-A -u [fd00::1]:53 -s rr",
			),
		},
		{
			name: "firewall marks, -6 anywhere, long options",
			text: lines(
				"-A -f 8193 -s rr",
				"-a -f 8193 -r 10.244.1.5:8080 -m -w 1",
				"-A -f 8193 -s wlc -6 -p 60",
				"-a -f 8193 -r [fd00::5]:8080 -6 -m",
				"-A --fwmark-service 7 --ipv6 -s sh -b sh-fallback",
				"-A -f 08 -s rr",
				"-A -t 10.96.0.10:80 -s rr",
			),
			want: lines(
				"-A -t 10.96.0.10:80 -s rr",
				"-A -f 7 -6 -s sh -b sh-fallback",
				"-A -f 8 -s rr",
				"-A -f 8193 -s rr",
				"-a -f 8193 -r 10.244.1.5:8080 -m -w 1",
				"-A -f 8193 -6 -s wlc -p 60",
				"-a -f 8193 -6 -r [fd00::5]:8080 -m -w 1",
			),
		},
		{name: "unknown command", text: "-X -t 1.2.3.4:80\n", wantMsg: `line 1: unknown command "-X", want -A or -a`},
		{name: "missing address", text: "-A -t\n", wantMsg: "line 1: -A needs a protocol option and an address"},
		{name: "unknown protocol", text: "-A -q 1.2.3.4:80 -s rr\n", wantMsg: `line 1: unknown protocol option "-q"`},
		{name: "firewall mark 0", text: "-A -f 0 -s rr\n", wantMsg: `line 1: firewall mark "0" is not a number in 1..4294967295`},
		{name: "firewall mark not a number", text: "-A -f 0x2001 -s rr\n", wantMsg: `line 1: firewall mark "0x2001" is not a number in 1..4294967295`},
		{name: "firewall mark too large", text: "-A -f 4294967296 -s rr\n", wantMsg: `line 1: firewall mark "4294967296" is not a number in 1..4294967295`},
		{name: "-6 on an address virtual server", text: "-A -t 1.2.3.4:80 -6 -s rr\n", wantMsg: `line 1: unknown option "-6"`},
		{name: "firewall mark without scheduler", text: "-A -f 5 -6\n", wantMsg: "line 1: virtual server -f 5 -6 has no -s scheduler"},
		{
			name:    "real server of the IPv4 mark without -6",
			text:    "-A -f 5 -6 -s rr\n-a -f 5 -r 10.0.0.1:80 -m\n",
			wantErr: ErrNotFound,
			wantMsg: "line 2: virtual server -f 5: not found",
		},
		{
			name:    "IPv6 real server of an IPv4 mark",
			text:    "-A -f 5 -s rr\n-a -f 5 -r [fd00::1]:80 -m\n",
			wantMsg: "line 2: real server [fd00::1]:80 is not of the virtual server's address family",
		},
		{
			name:    "duplicate firewall mark",
			text:    "-A -f 5 -s rr\n-A -f 5 -6 -s rr\n-A -f 5 -s wrr\n",
			wantErr: ErrExists,
			wantMsg: "line 3: virtual server -f 5: already exists",
		},
		{name: "bad address", text: "-A -t 1.2.3.4 -s rr\n", wantMsg: `line 1: virtual server address "1.2.3.4": not an ip:port`},
		{name: "no scheduler", text: "-A -t 1.2.3.4:80\n", wantMsg: "line 1: virtual server -t 1.2.3.4:80 has no -s scheduler"},
		{name: "option without value", text: "-A -t 1.2.3.4:80 -s\n", wantMsg: `line 1: option "-s" is unknown here or lacks its value`},
		{name: "real server option on service", text: "-A -t 1.2.3.4:80 -s rr -w 1\n", wantMsg: `line 1: unknown option "-w"`},
		{name: "forwarding flag on service", text: "-A -t 1.2.3.4:80 -s rr -m\n", wantMsg: `line 1: option "-m" is unknown here or lacks its value`},
		{name: "bad timeout", text: "-A -t 1.2.3.4:80 -s rr -p x\n", wantMsg: `line 1: persistence timeout "x": strconv.ParseUint: parsing "x": invalid syntax`},
		{name: "bad weight", text: "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 1.1.1.1:80 -w x\n", wantMsg: `line 2: weight "x": strconv.ParseInt: parsing "x": invalid syntax`},
		{name: "negative weight", text: "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 1.1.1.1:80 -w -1\n", wantMsg: "line 2: weight -1 out of range 0..65535"},
		{name: "real server without -r", text: "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -m\n", wantMsg: "line 2: real server line for -t 1.2.3.4:80 has no -r address"},
		{
			name:    "real server before its service",
			text:    "-a -t 1.2.3.4:80 -r 1.1.1.1:80 -m\n-A -t 1.2.3.4:80 -s rr\n",
			wantErr: ErrNotFound,
			wantMsg: "line 1: virtual server -t 1.2.3.4:80: not found",
		},
		{
			name:    "duplicate service",
			text:    "-A -t 1.2.3.4:80 -s rr\n-A -t 1.2.3.4:80 -s wrr\n",
			wantErr: ErrExists,
			wantMsg: "line 2: virtual server -t 1.2.3.4:80: already exists",
		},
		{
			name:    "duplicate real server",
			text:    "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 1.1.1.1:80 -m\n-a -t 1.2.3.4:80 -r 1.1.1.1:80 -g\n",
			wantErr: ErrExists,
			wantMsg: "line 3: real server 1.1.1.1:80 of -t 1.2.3.4:80: already exists",
		},
		{
			name:    "real server of other family",
			text:    "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r [fd00::1]:80 -m\n",
			wantMsg: "line 2: real server [fd00::1]:80 is not of the virtual server's address family",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svcs, dests, err := Parse(tc.text)
			if tc.wantMsg == "" {
				mustDo(t, err)
				diff(t, "Format(Parse)", Format(svcs, dests), tc.want)
				return
			}
			if err == nil || err.Error() != tc.wantMsg {
				t.Fatalf("error = %v, want %q", err, tc.wantMsg)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzParseFormat checks that whatever Parse accepts, Format renders into
// text that Parse reads back to the same rendering.
func FuzzParseFormat(f *testing.F) {
	f.Add(base)
	f.Add("-A -t [fd00::10]:80 -s rr -p 0\n-a -t [fd00::10]:80 -r [fd00:244::5]:8080 -i -w 2\n")
	f.Add("-A --sctp-service 10.0.0.1:9 -s sh\n-a --sctp-service 10.0.0.1:9 -r 10.0.0.2:9\n")
	f.Add("-A -f 8193 -s rr\n-a -f 8193 -r 10.0.0.2:80 -m -w 1\n-A -f 8193 -6 -s rr -p 60\n-a -f 8193 -6 -r [fd00::2]:80\n")
	f.Fuzz(func(t *testing.T, text string) {
		svcs, dests, err := Parse(text)
		if err != nil {
			return
		}
		once := Format(svcs, dests)
		svcs2, dests2, err := Parse(once)
		if err != nil {
			t.Fatalf("Parse(Format(...)) failed: %v\n%s", err, once)
		}
		if twice := Format(svcs2, dests2); twice != once {
			t.Fatalf("round trip changed the text:\n%s---\n%s", once, twice)
		}
	})
}
