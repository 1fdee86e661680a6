package proxier

import (
	"errors"
	"testing"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/netif"
)

func TestSetupHandlesConnReuseModeByKernelVersion(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    string // conn_reuse_mode afterwards
		log     string
	}{
		{"6.1.0-57-cloud-amd64", "1", "left as it is: this kernel (5.9 or later)"},
		{"5.9.0", "1", "left as it is: this kernel (5.9 or later)"},
		{"5.8.18-100.fc31.x86_64", "0", "set to 0"},
		{"4.19.0-27-amd64", "0", "set to 0"},
		{"4.1.12", "0", "set to 0"},
		{"3.10.0-1160.el7.x86_64", "1", "needs Linux 4.1 or later"},
		{"garbage", "1", "cannot read the kernel version"},
	} {
		t.Run(tc.release, func(t *testing.T) {
			n := newFakeNode()
			if err := n.sysctl.Set(sysctlOSRelease, tc.release); err != nil {
				t.Fatal(err)
			}
			log, logs := observed()
			if err := Setup(log, n.kernel(), n.sysctl, SetupOptions{}); err != nil {
				t.Fatal(err)
			}
			if v, _ := n.sysctl.Get(sysctlConnReuseMode); v != tc.want {
				t.Errorf("conn_reuse_mode = %s, want %s", v, tc.want)
			}
			if logs.FilterMessageSnippet(tc.log).Len() != 1 {
				t.Errorf("no log line %q in %v", tc.log, logs.All())
			}
		})
	}
}

func TestSetupWarnsWithoutBridgeNetfilter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seed  map[string]string
		warns bool
	}{
		{"br_netfilter loaded and on", map[string]string{sysctlBridgeNF: "1"}, false},
		{"bridge-nf-call-iptables off", map[string]string{sysctlBridgeNF: "0"}, true},
		{"br_netfilter not loaded", map[string]string{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode()
			seed := map[string]string{sysctlOSRelease: "6.1.0", sysctlConnReuseMode: "1"}
			for _, s := range Sysctls {
				seed[s.Key] = "1"
			}
			for k, v := range tc.seed {
				seed[k] = v
			}
			n.sysctl = netif.NewFakeSysctl(seed)
			log, logs := observed()
			if err := Setup(log, n.kernel(), n.sysctl, SetupOptions{}); err != nil {
				t.Fatal(err)
			}
			warned := logs.FilterMessageSnippet("bridge-nf-call-iptables").FilterLevelExact(zap.WarnLevel).Len() == 1
			if warned != tc.warns {
				t.Errorf("warned = %v, want %v: %v", warned, tc.warns, logs.All())
			}
		})
	}
}

func TestSetupStrictARP(t *testing.T) {
	const ignore, announce = "net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/arp_announce"
	errTouched := errors.New("touched")
	for _, tc := range []struct {
		name       string
		opts       SetupOptions
		seed       map[string]string // the ARP keys before; absent: not seeded
		failOn     bool              // every Get and Set of the ARP keys fails
		want       string            // Dump of the ARP keys afterwards
		wantErr    string
		wantWrites int // Sets of the ARP keys
	}{
		{name: "off: not read or written", opts: SetupOptions{}, seed: map[string]string{ignore: "0", announce: "0"}, failOn: true,
			want: announce + " = 0\n" + ignore + " = 0\n"},
		{name: "off: absent keys are fine", opts: SetupOptions{}, want: ""},
		{name: "on: set as kube-proxy sets them", opts: SetupOptions{StrictARP: true}, seed: map[string]string{ignore: "0", announce: "0"},
			want: announce + " = 2\n" + ignore + " = 1\n", wantWrites: 2},
		{name: "on: only what differs is written", opts: SetupOptions{StrictARP: true}, seed: map[string]string{ignore: "1", announce: "1"},
			want: announce + " = 2\n" + ignore + " = 1\n", wantWrites: 1},
		{name: "on: already set, nothing written", opts: SetupOptions{StrictARP: true}, seed: map[string]string{ignore: "1", announce: "2"},
			want: announce + " = 2\n" + ignore + " = 1\n"},
		{name: "on: a failure is returned with the reason", opts: SetupOptions{StrictARP: true},
			seed: map[string]string{ignore: "0", announce: "0"}, failOn: true, want: announce + " = 0\n" + ignore + " = 0\n",
			wantErr: "setting sysctl " + ignore + "=1: touched (kube-ipvs needs it: ARP is answered only for an address of the interface asked on, " +
				"so no node answers for the Service addresses on the dummy interface (ipvs.strictARP))", wantWrites: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode()
			arp := netif.NewFakeSysctl(tc.seed)
			// sc routes the ARP keys to arp, the others to the node's fake.
			sc := routedSysctl{keys: map[string]bool{ignore: true, announce: true}, match: arp, other: n.sysctl}
			if tc.failOn {
				for _, k := range []string{ignore, announce} {
					arp.FailOn(netif.MethodGet, k, errTouched)
					arp.FailOn(netif.MethodSet, k, errTouched)
				}
			}
			got := ""
			if err := Setup(zap.NewNop(), n.kernel(), sc, tc.opts); err != nil {
				got = err.Error()
			}
			if got != tc.wantErr {
				t.Fatalf("Setup() error:\ngot  %s\nwant %s", got, tc.wantErr)
			}
			if got := arp.Dump(); got != tc.want {
				t.Errorf("ARP sysctls:\n%swant:\n%s", got, tc.want)
			}
			if got := arp.Writes(); got != tc.wantWrites {
				t.Errorf("ARP sysctl writes = %d, want %d", got, tc.wantWrites)
			}
			if !tc.opts.StrictARP && arp.Reads()+arp.Writes() != 0 {
				t.Errorf("without StrictARP: %v calls on the ARP sysctls, want none", arp.Calls())
			}
		})
	}
}

// routedSysctl sends the keys in keys to match and the others to other.
type routedSysctl struct {
	keys         map[string]bool
	match, other netif.Sysctl
}

func (r routedSysctl) pick(key string) netif.Sysctl {
	if r.keys[key] {
		return r.match
	}
	return r.other
}

func (r routedSysctl) Get(key string) (string, error) { return r.pick(key).Get(key) }
func (r routedSysctl) Set(key, value string) error    { return r.pick(key).Set(key, value) }

func TestKernelVersion(t *testing.T) {
	for release, want := range map[string][2]int{"6.1.0-57-cloud-amd64": {6, 1}, "5.10": {5, 10}, "4.19+": {4, 19}} {
		if ma, mi, ok := kernelVersion(release); !ok || ma != want[0] || mi != want[1] {
			t.Errorf("kernelVersion(%q) = %d, %d, %v", release, ma, mi, ok)
		}
	}
	for _, bad := range []string{"", "6", "x.y"} {
		if _, _, ok := kernelVersion(bad); ok {
			t.Errorf("kernelVersion(%q) accepted", bad)
		}
	}
}
