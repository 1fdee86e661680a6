package proxier

import (
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
			if err := Setup(log, n.kernel(), n.sysctl); err != nil {
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
			if err := Setup(log, n.kernel(), n.sysctl); err != nil {
				t.Fatal(err)
			}
			warned := logs.FilterMessageSnippet("bridge-nf-call-iptables").FilterLevelExact(zap.WarnLevel).Len() == 1
			if warned != tc.warns {
				t.Errorf("warned = %v, want %v: %v", warned, tc.warns, logs.All())
			}
		})
	}
}

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
