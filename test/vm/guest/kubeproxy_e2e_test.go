//go:build vmguest

package guest

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestE2EKubeProxyRunsInTheVM runs upstream kube-proxy v1.37 in IPVS mode
// against the real apiserver and checks the kernel state it programs for a
// ClusterIP Service, and that the state stays, still serving, once
// kube-proxy is stopped without cleanup: where a takeover by kube-ipvs
// starts from. StartKubeProxy's cleanup then removes it all
// (`kube-proxy --cleanup`) and checks nothing is left.
func TestE2EKubeProxyRunsInTheVM(t *testing.T) {
	api := NeedAPI(t)
	NeedKubeProxy(t)
	AddPod(t, "client", outsider)
	pods := []*APIPod{api.StartPod(t, "kp-web", 1), api.StartPod(t, "kp-web", 2)}
	svc := api.CreateService(t, "kp-web", e2eHTTP)
	vip := ClusterIP(svc)
	vs := netip.AddrPortFrom(vip, 80)
	api.Slices(t, svc).Sync(t)
	t.Logf("Service kp-web got ClusterIP %s", vip)

	kp := StartKubeProxy(t)
	out := WaitIPVSFor(t, 60*time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	t.Logf("ipvsadm -Ln -t %s:\n%s", vs, out)
	if !kubeProxyBound(t, vip) {
		t.Errorf("%s is not bound on %s:\n%s", vip, KubeProxyDummy, Run(t, Node, "ip", "addr", "show", "dev", KubeProxyDummy))
	}
	wantEven(t, CountTCP("client", vs, 10), podsOf(pods...), 5)
	checkKubeProxy(t, kp)

	StopKubeProxy(t, kp)
	t.Log("kube-proxy stopped without cleanup; its state in the kernel:")
	dump := map[string]string{}
	for _, c := range [][]string{
		{"ipvsadm", "-Sn"},
		{"iptables-save"},
		{"ip6tables-save"},
		{"ipset", "list", "-n"},
		{"ipset", "save"},
		{"ip", "-d", "link", "show", KubeProxyDummy},
		{"ip", "addr", "show", "dev", KubeProxyDummy},
	} {
		name := strings.Join(c, " ")
		dump[name] = Run(t, Node, c...)
		t.Logf("%s:\n%s", name, dump[name])
	}

	WaitIPVSFor(t, time.Second, &vs, append(servedBy(pods), VSLine("TCP", vs, "rr"))...)
	if !kubeProxyBound(t, vip) {
		t.Errorf("%s went off %s when kube-proxy stopped", vip, KubeProxyDummy)
	}
	if !regexp.MustCompile(`(?m)^:KUBE-SERVICES `).MatchString(Run(t, Node, "iptables-save", "-t", "nat")) {
		t.Errorf("no KUBE-SERVICES chain in nat after kube-proxy stopped")
	}
	if !regexp.MustCompile(`(?m)^KUBE-CLUSTER-IP$`).MatchString(dump["ipset list -n"]) {
		t.Errorf("no KUBE-CLUSTER-IP ipset after kube-proxy stopped")
	}
	if member := "add KUBE-CLUSTER-IP " + vip.String() + ",tcp:80\n"; !strings.Contains(dump["ipset save"], member) {
		t.Errorf("no %q in ipset save after kube-proxy stopped", strings.TrimSpace(member))
	}
	// What a takeover starts from also still serves.
	wantEven(t, CountTCP("client", vs, 10), podsOf(pods...), 5)
}

// kubeProxyBound reports whether addr is on kube-proxy's dummy interface.
func kubeProxyBound(t *testing.T, addr netip.Addr) bool {
	out, _ := Exec(Node, "ip", "-o", "addr", "show", "dev", KubeProxyDummy)
	return strings.Contains(out, " "+addr.String()+"/")
}

// checkKubeProxy fails the test if kube-proxy has exited or was refused by
// the apiserver.
func checkKubeProxy(t *testing.T, p *Proc) {
	t.Helper()
	if done, err := p.Exited(); done {
		t.Fatalf("kube-proxy exited (%v):\n%s", err, tail(p.Output(), 40))
	}
	for _, bad := range []string{"forbidden", "Unauthorized"} {
		if strings.Contains(p.Output(), bad) {
			t.Errorf("kube-proxy was refused by the apiserver (%q in its log):\n%s", bad, tail(p.Output(), 40))
		}
	}
}
