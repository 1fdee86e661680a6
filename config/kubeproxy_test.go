package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// kpIdentity is the smallest KubeProxyConfiguration header; kpHeader adds
// the one mode kube-ipvs accepts.
const (
	kpIdentity = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
	kpHeader   = kpIdentity + "mode: ipvs\n"
)

const (
	kubeadmConfigConf = "testdata/kubeadm-v1.37-config.conf"
	kubeadmConfigMap  = "testdata/kubeadm-v1.37-kube-proxy-configmap.yaml"
)

// kubeProxyBase is what a KubeProxyConfiguration that sets nothing but
// mode: ipvs becomes: kube-ipvs' defaults, except where kube-proxy's IPVS
// mode defaults differently (minSyncPeriod 0, NodePorts on every address).
func kubeProxyBase() *Configuration {
	c := Default()
	c.IPVS.MinSyncPeriod = Duration{}
	c.NodePortAddresses = []string{}
	return c
}

// nodePortsEmptyWarning is the note kube-ipvs gives for an empty
// nodePortAddresses, as kube-proxy does.
func nodePortsEmptyWarning(t *testing.T) string {
	t.Helper()
	c := Default()
	c.ClusterCIDR, c.NodePortAddresses = "10.244.0.0/16", []string{}
	w := c.Warnings(ipv4Only)
	if len(w) != 1 || !strings.HasPrefix(w[0], "nodePortAddresses is empty") {
		t.Fatalf("Warnings() of an empty nodePortAddresses = %q", w)
	}
	return w[0]
}

func unhonouredWarning(fields ...string) string {
	return "KubeProxyConfiguration fields kube-ipvs does not honour: " + strings.Join(fields, ", ") +
		"; they have no effect (see \"kube-proxy's configuration\" in the configuration reference)"
}

// loadKubeProxy loads doc and splits off what it remembers of kube-proxy,
// so that the rest compares with a plain Configuration.
func loadKubeProxy(t *testing.T, doc string) (*Configuration, []string) {
	t.Helper()
	c, err := Load([]byte(doc))
	if err != nil {
		t.Fatalf("Load():\n%v", err)
	}
	if c.kubeProxy == nil {
		t.Fatalf("Load() did not read a KubeProxyConfiguration")
	}
	unhonoured := c.kubeProxy.unhonoured
	c.kubeProxy = nil
	return c, unhonoured
}

// The ConfigMap kubeadm v1.37 writes (see testdata/README.md) decodes;
// every field kube-ipvs maps lands where it should; and its defaults
// give no "does not honour" warning, only kube-proxy's own note about an
// empty nodePortAddresses.
func TestKubeadmConfigConf(t *testing.T) {
	data, err := os.ReadFile(kubeadmConfigConf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(data)
	if err != nil {
		t.Fatalf("Load(%s):\n%v", kubeadmConfigConf, err)
	}
	if got, want := c.Warnings(ipv4Only), []string{nodePortsEmptyWarning(t)}; !reflect.DeepEqual(got, want) {
		t.Errorf("Warnings():\ngot  %q\nwant %q", got, want)
	}
	c.kubeProxy = nil
	want := kubeProxyBase()
	want.Kubeconfig = "/var/lib/kube-proxy/kubeconfig.conf"
	want.ClusterCIDR = "10.244.0.0/16"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(%s):\ngot  %+v\nwant %+v", kubeadmConfigConf, c, want)
	}
	// The fields, one by one, for the reader.
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"mode", c.Mode, ModeIPVS},
		{"nodeName (hostnameOverride)", c.NodeName, ""},
		{"kubeconfig (clientConnection.kubeconfig)", c.Kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf"},
		{"clusterCIDR", c.ClusterCIDR, "10.244.0.0/16"},
		{"masqueradeAll (iptables.masqueradeAll)", c.MasqueradeAll, false},
		{"masqueradeBit (iptables.masqueradeBit null)", c.MasqueradeBit, 14},
		{"healthzBindAddress (empty)", c.HealthzBind, "0.0.0.0:10256"},
		{"metricsBindAddress (empty)", c.MetricsBind, "127.0.0.1:10249"},
		{"nodePortAddresses (null)", c.NodePortAddresses, []string{}},
		{"ipvs.scheduler (empty)", c.IPVS.Scheduler, "rr"},
		{"ipvs.syncPeriod (0s)", c.IPVS.SyncPeriod, Duration{30 * time.Second}},
		{"ipvs.minSyncPeriod (0s)", c.IPVS.MinSyncPeriod, Duration{}},
		{"ipvs.strictARP", c.IPVS.StrictARP, false},
		{"ipvs.excludeCIDRs (null)", c.IPVS.ExcludeCIDRs, []string{}},
		{"ipvs timeouts (0s)", []Duration{c.IPVS.TCPTimeout, c.IPVS.TCPFinTimeout, c.IPVS.UDPTimeout}, []Duration{{}, {}, {}}},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
}

// The whole ConfigMap fixture holds config.conf, byte for byte.
func TestKubeadmConfigMapHoldsConfigConf(t *testing.T) {
	conf, err := os.ReadFile(kubeadmConfigConf)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(kubeadmConfigMap)
	if err != nil {
		t.Fatal(err)
	}
	var cm v1.ConfigMap
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Namespace != "kube-system" || cm.Name != "kube-proxy" {
		t.Errorf("fixture is %s %s/%s, want ConfigMap kube-system/kube-proxy", cm.Kind, cm.Namespace, cm.Name)
	}
	if cm.Data["config.conf"] != string(conf) {
		t.Errorf("the ConfigMap's config.conf differs from %s:\n%s", kubeadmConfigConf, cm.Data["config.conf"])
	}
}

// kubeadm's DaemonSet runs `kube-proxy --config=/var/lib/kube-proxy/config.conf
// --hostname-override=$(NODE_NAME)`; kube-ipvs takes the same command line.
func TestKubeadmCommandLine(t *testing.T) {
	conf, err := os.ReadFile(kubeadmConfigConf)
	if err != nil {
		t.Fatal(err)
	}
	const path = "/var/lib/kube-proxy/config.conf"
	e := env{files: map[string]string{path: string(conf)}, hostname: "host-a"}
	c, _, err := resolve(t, []string{"--config=" + path, "--hostname-override=Node-1"}, e)
	if err != nil {
		t.Fatalf("Resolve():\n%v", err)
	}
	c.kubeProxy = nil
	want := kubeProxyBase()
	want.NodeName, want.Kubeconfig, want.ClusterCIDR = "node-1", "/var/lib/kube-proxy/kubeconfig.conf", "10.244.0.0/16"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Resolve():\ngot  %+v\nwant %+v", c, want)
	}
}

func TestKubeProxyMapping(t *testing.T) {
	tests := []struct {
		name string
		doc  string // after kpHeader
		want func(c *Configuration)
	}{
		{name: "mode alone", doc: "", want: func(c *Configuration) {}},
		{name: "every mapped field", doc: `
hostnameOverride: Worker-1
clientConnection:
  kubeconfig: /etc/kubernetes/proxy.conf
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
healthzBindAddress: 192.0.2.10:10256
metricsBindAddress: 0.0.0.0:10249
nodePortAddresses: [192.168.10.0/24, "2001:db8:10::/64"]
detectLocalMode: ClusterCIDR
iptables:
  masqueradeAll: true
  masqueradeBit: 12
ipvs:
  scheduler: wlc
  syncPeriod: 1m
  minSyncPeriod: 2s
  excludeCIDRs: [10.96.200.0/24]
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 2m
  udpTimeout: 5m
`, want: func(c *Configuration) {
			c.NodeName, c.Kubeconfig = "Worker-1", "/etc/kubernetes/proxy.conf"
			c.ClusterCIDR = "10.244.0.0/16,fd00:10:244::/56"
			c.HealthzBind, c.MetricsBind = "192.0.2.10:10256", "0.0.0.0:10249"
			c.NodePortAddresses = []string{"192.168.10.0/24", "2001:db8:10::/64"}
			c.MasqueradeAll, c.MasqueradeBit = true, 12
			c.IPVS = IPVSConfiguration{
				Scheduler: "wlc", SyncPeriod: Duration{time.Minute}, MinSyncPeriod: Duration{2 * time.Second},
				TCPTimeout: Duration{900 * time.Second}, TCPFinTimeout: Duration{2 * time.Minute}, UDPTimeout: Duration{5 * time.Minute},
				DrainTimeout: Duration{15 * time.Minute}, StrictARP: true, ExcludeCIDRs: []string{"10.96.200.0/24"},
			}
		}},
		{name: "zero and empty are kube-proxy's defaults", doc: `
ipvs: {scheduler: "", syncPeriod: 0s, minSyncPeriod: 0s, excludeCIDRs: []}
iptables: {masqueradeBit: null}
healthzBindAddress: ""
metricsBindAddress: ""
detectLocalMode: ""
nodePortAddresses: []
`, want: func(c *Configuration) {}},
		{name: "masqueradeBit 0 is bit 0", doc: "iptables:\n  masqueradeBit: 0\n",
			want: func(c *Configuration) { c.MasqueradeBit = 0 }},
		{name: "an IP alone gets kube-proxy's port", doc: "healthzBindAddress: 192.0.2.10\nmetricsBindAddress: \"::1\"\n",
			want: func(c *Configuration) { c.HealthzBind, c.MetricsBind = "192.0.2.10:10256", "[::1]:10249" }},
		{name: "IPv6 bindAddress: IPv6 default addresses", doc: "bindAddress: \"::\"\n",
			want: func(c *Configuration) { c.HealthzBind, c.MetricsBind = "[::]:10256", "[::1]:10249" }},
		{name: "nodePortAddresses primary", doc: "nodePortAddresses: [primary]\nbindAddress: 0.0.0.0\n",
			want: func(c *Configuration) { c.NodePortAddresses = []string{NodePortAddressesPrimary} }},
		{name: "nodePortAddresses all", doc: "nodePortAddresses: [all]\n",
			want: func(c *Configuration) { c.NodePortAddresses = []string{"0.0.0.0/0", "::/0"} }},
		{name: "all covers everything else", doc: "nodePortAddresses: [10.0.0.0/8, primary, all]\n",
			want: func(c *Configuration) { c.NodePortAddresses = []string{"0.0.0.0/0", "::/0"} }},
		{name: "localhost is both loopback CIDRs", doc: "nodePortAddresses: [10.0.0.0/8, localhost]\n",
			want: func(c *Configuration) { c.NodePortAddresses = []string{"10.0.0.0/8", "127.0.0.0/8", "::1/128"} }},
		{name: "feature gates at their defaults, or without effect", doc: `
featureGates:
  AllowServiceExternalIPs: true
  KubeProxyIPVS: true
  PreferSameTrafficDistribution: true
  NFTablesNetlink: true
  ComponentFlagz: false
  ComponentStatusz: false
  LoggingAlphaOptions: false
`, want: func(c *Configuration) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unhonoured := loadKubeProxy(t, kpHeader+tt.doc)
			if len(unhonoured) > 0 {
				t.Errorf("unhonoured fields %q, want none", unhonoured)
			}
			want := kubeProxyBase()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load():\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}

// Every field kube-ipvs does not honour, set to something else than its
// default, is named in one warning; set to kube-proxy's defaults, none is.
func TestKubeProxyUnhonoured(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // the fields named; none: no warning
	}{
		{name: "explicit kube-proxy defaults", doc: `
bindAddress: 0.0.0.0
clientConnection: {contentType: application/vnd.kubernetes.protobuf, qps: 5, burst: 10}
configSyncPeriod: 15m
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpEstablishedTimeout: 24h
  tcpCloseWaitTimeout: 1h
iptables: {masqueradeBit: 14, localhostNodePorts: true, syncPeriod: 30s, minSyncPeriod: 1s}
nftables: {masqueradeBit: 14, syncPeriod: 30s, minSyncPeriod: 1s}
logging: {format: text, flushFrequency: 5s, verbosity: 0}
oomScoreAdj: -999
featureGates: {NFTablesNetlink: true, LoggingBetaOptions: true}
`},
		{name: "conntrack zero: leave the kernel's value", doc: `
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
`},
		{name: "every field set", doc: `
bindAddress: 192.0.2.10
bindAddressHardFail: false
clientConnection: {acceptContentTypes: application/json, contentType: application/json, qps: 50, burst: 100}
configSyncPeriod: 1m
conntrack:
  maxPerCore: 65536
  min: 1
  tcpBeLiberal: true
  tcpEstablishedTimeout: 1h
  tcpCloseWaitTimeout: 1m
  udpTimeout: 30s
  udpStreamTimeout: 2m
detectLocal: {bridgeInterface: cbr0, interfaceNamePrefix: veth}
enableProfiling: true
featureGates: {NFTablesNetlink: false, SomeFutureGate: true, ContextualLogging: false}
iptables: {localhostNodePorts: false, syncPeriod: 10s, minSyncPeriod: 2s}
logging:
  format: json
  flushFrequency: 1s
  verbosity: 4
  vmodule: [{filePattern: proxier, verbosity: 6}]
  options:
    json: {splitStream: true, infoBufferSize: 16Ki}
    text: {splitStream: true, infoBufferSize: "1"}
nftables: {masqueradeAll: true, masqueradeBit: 0, syncPeriod: 10s, minSyncPeriod: 2s}
oomScoreAdj: 0
portRange: 30000-32767
showHiddenMetricsForVersion: "1.36"
windowsRunAsService: true
winkernel: {networkName: l2bridge, sourceVip: 10.0.0.1, enableDSR: true, rootHnsEndpointName: cbr0, forwardHealthCheckVip: true}
`, want: []string{
			"bindAddress",
			"clientConnection.acceptContentTypes", "clientConnection.burst", "clientConnection.contentType", "clientConnection.qps",
			"configSyncPeriod",
			"conntrack.maxPerCore", "conntrack.min", "conntrack.tcpBeLiberal", "conntrack.tcpCloseWaitTimeout",
			"conntrack.tcpEstablishedTimeout", "conntrack.udpStreamTimeout", "conntrack.udpTimeout",
			"detectLocal.bridgeInterface", "detectLocal.interfaceNamePrefix",
			"enableProfiling",
			"featureGates.ContextualLogging", "featureGates.NFTablesNetlink", "featureGates.SomeFutureGate",
			"iptables.localhostNodePorts", "iptables.minSyncPeriod", "iptables.syncPeriod",
			"logging.flushFrequency", "logging.format", "logging.options.json.infoBufferSize", "logging.options.json.splitStream",
			"logging.options.text.infoBufferSize", "logging.options.text.splitStream", "logging.verbosity", "logging.vmodule",
			"nftables.masqueradeAll", "nftables.masqueradeBit", "nftables.minSyncPeriod", "nftables.syncPeriod",
			"oomScoreAdj", "portRange", "showHiddenMetricsForVersion", "windowsRunAsService",
			"winkernel.enableDSR", "winkernel.forwardHealthCheckVip", "winkernel.networkName", "winkernel.rootHnsEndpointName",
			"winkernel.sourceVip",
		}},
		{name: "a gate kube-ipvs does not know, even at false", doc: "featureGates: {SomeAlphaGate: false}\n",
			want: []string{"featureGates.SomeAlphaGate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load([]byte(kpHeader + "clusterCIDR: 10.244.0.0/16\nnodePortAddresses: [0.0.0.0/0]\n" + tt.doc))
			if err != nil {
				t.Fatalf("Load():\n%v", err)
			}
			var want []string
			if len(tt.want) > 0 {
				want = []string{unhonouredWarning(tt.want...)}
			}
			if got := c.Warnings(ipv4Only); !reflect.DeepEqual(got, want) {
				t.Errorf("Warnings():\ngot  %q\nwant %q", got, want)
			}
		})
	}
}

// kube-ipvs replaces kube-proxy's IPVS mode only; kube-proxy's default
// mode on Linux, when mode is empty, is iptables.
func TestKubeProxyModeRefused(t *testing.T) {
	const other = ": kube-ipvs replaces only kube-proxy's IPVS mode: set mode: ipvs"
	const empty = `mode: unsupported value "": kube-proxy's empty mode is iptables on Linux, and kube-ipvs replaces only its IPVS mode: set mode: ipvs`
	tests := []struct{ name, doc, want string }{
		{"iptables", "mode: iptables\n", `mode: unsupported value "iptables"` + other},
		{"nftables", "mode: nftables\n", `mode: unsupported value "nftables"` + other},
		{"kernelspace", "mode: kernelspace\n", `mode: unsupported value "kernelspace"` + other},
		{"case matters", "mode: IPVS\n", `mode: unsupported value "IPVS"` + other},
		{"empty", "mode: \"\"\n", empty},
		{"left out", "", empty},
		{"null", "mode: null\n", empty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load([]byte(kpIdentity + tt.doc))
			if errText(err) != tt.want || got != nil {
				t.Errorf("Load() = %v, error:\n%s\nwant:\n%s", got != nil, errText(err), tt.want)
			}
		})
	}
}

// A value kube-ipvs cannot honour safely stops start-up, naming the field
// as the file spells it.
func TestKubeProxyRefusals(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"detectLocalMode NodeCIDR", "detectLocalMode: NodeCIDR\n", detectLocalRefusal("NodeCIDR")},
		{"detectLocalMode BridgeInterface", "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n",
			detectLocalRefusal("BridgeInterface")},
		{"detectLocalMode InterfaceNamePrefix", "detectLocalMode: InterfaceNamePrefix\n", detectLocalRefusal("InterfaceNamePrefix")},
		{"detectLocalMode unknown", "detectLocalMode: PodCIDR\n", detectLocalRefusal("PodCIDR")},
		{"scheduler kube-ipvs does not support", "ipvs:\n  scheduler: fo\n",
			`ipvs.scheduler: unsupported value "fo": must be one of ` + schedulers},
		{"masqueradeBit 13", "iptables:\n  masqueradeBit: 13\n",
			`iptables.masqueradeBit: invalid value 13: kube-ipvs' firewall marks 0x2000-0x3fff all have bit 13`},
		{"masqueradeBit out of range", "iptables:\n  masqueradeBit: 32\n",
			`iptables.masqueradeBit: invalid value 32: must be between 0 and 31`},
		{"externalIPs disabled", "featureGates:\n  AllowServiceExternalIPs: false\n",
			`featureGates.AllowServiceExternalIPs: unsupported value false: kube-ipvs always serves spec.externalIPs; ` +
				`restrict them with externalIPs.allowedCIDRs (a KubeIPVSConfiguration) or the apiserver's DenyServiceExternalIPs admission plugin`},
		{"IPVS mode disabled", "featureGates:\n  KubeProxyIPVS: false\n",
			`featureGates.KubeProxyIPVS: unsupported value false: kube-proxy v1.37 then refuses mode ipvs`},
		{"locked gate", "featureGates:\n  PreferSameTrafficDistribution: false\n",
			`featureGates.PreferSameTrafficDistribution: unsupported value false: ` + lockedGate},
		{"bindAddressHardFail", "bindAddressHardFail: true\n",
			`bindAddressHardFail: unsupported value true: kube-ipvs logs a healthz or metrics port it cannot bind and keeps the data plane running; set it to false`},
		{"bindAddress not an IP", "bindAddress: node-1\n",
			`bindAddress: invalid value "node-1": must be an IP address, like "0.0.0.0"`},
		{"primary with a CIDR", "nodePortAddresses: [primary, 10.0.0.0/8]\n",
			`nodePortAddresses[0]: unsupported value "primary" with other entries: kube-ipvs serves "primary" only alone; list the CIDRs of the node's addresses instead`},
		{"primary with localhost", "nodePortAddresses: [localhost, primary]\n",
			`nodePortAddresses[1]: unsupported value "primary" with other entries: kube-ipvs serves "primary" only alone; list the CIDRs of the node's addresses instead`},
		{"primary is the bindAddress", "bindAddress: 192.0.2.10\nnodePortAddresses: [primary]\n",
			`bindAddress: unsupported value "192.0.2.10" with nodePortAddresses [primary]: kube-proxy then serves NodePorts on this address, ` +
				`kube-ipvs on the Node's InternalIP addresses; write nodePortAddresses [192.0.2.10/32] or leave bindAddress at 0.0.0.0`},
		{"keyword twice", "nodePortAddresses: [all, all]\n", `nodePortAddresses[1]: duplicate value "all"`},
		{"bad CIDR", "nodePortAddresses: [10.0.0.0/8, 10.1.2.3, Primary]\n", strings.Join([]string{
			`nodePortAddresses[1]: invalid CIDR "10.1.2.3": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56), or one of "primary", "localhost", "all"`,
			`nodePortAddresses[2]: invalid CIDR "Primary": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56), or one of "primary", "localhost", "all"`,
		}, "\n")},
		{"bad hostnameOverride", "hostnameOverride: node_1\n", `hostnameOverride: invalid value "node_1": ` + subdomainMsg},
		{"timeout not whole seconds", "ipvs:\n  tcpTimeout: 1500ms\n",
			`ipvs.tcpTimeout: invalid value "1.5s": must be a whole number of seconds`},
		{"negative syncPeriod", "ipvs:\n  syncPeriod: -1s\n", `ipvs.syncPeriod: invalid value "-1s": must be greater than 0`},
		{"bad excludeCIDRs", "ipvs:\n  excludeCIDRs: [10.96.200.1]\n",
			`ipvs.excludeCIDRs[0]: invalid CIDR "10.96.200.1": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"bad healthzBindAddress", "healthzBindAddress: localhost:10256\n",
			`healthzBindAddress: invalid value "localhost:10256": "localhost" is not an IP address`},
		{"bad clusterCIDR", "clusterCIDR: 10.244.0.0/33\n",
			`clusterCIDR: invalid CIDR "10.244.0.0/33": prefix length "33" must be a number from 0 to 32`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load([]byte(kpHeader + tt.doc))
			if errText(err) != tt.want || got != nil {
				t.Errorf("Load() = %v, error:\n%s\nwant:\n%s", got != nil, errText(err), tt.want)
			}
		})
	}
}

func detectLocalRefusal(mode string) string {
	return `detectLocalMode: unsupported value "` + mode + `": kube-ipvs tells pod traffic apart by clusterCIDR only, ` +
		`so this mode would change which traffic is masqueraded and which reaches externalTrafficPolicy Local Services as from a pod: ` +
		`use "ClusterCIDR" (or leave it empty) with clusterCIDR`
}

// Every refusal is reported at once.
func TestKubeProxyRefusalsTogether(t *testing.T) {
	doc := kpIdentity + `mode: iptables
detectLocalMode: NodeCIDR
bindAddressHardFail: true
iptables:
  masqueradeBit: 13
ipvs:
  scheduler: fo
`
	want := strings.Join([]string{
		`mode: unsupported value "iptables": kube-ipvs replaces only kube-proxy's IPVS mode: set mode: ipvs`,
		detectLocalRefusal("NodeCIDR"),
		`bindAddressHardFail: unsupported value true: kube-ipvs logs a healthz or metrics port it cannot bind and keeps the data plane running; set it to false`,
		`iptables.masqueradeBit: invalid value 13: kube-ipvs' firewall marks 0x2000-0x3fff all have bit 13`,
		`ipvs.scheduler: unsupported value "fo": must be one of ` + schedulers,
	}, "\n")
	if _, err := Load([]byte(doc)); errText(err) != want {
		t.Errorf("Load() error:\ngot:\n%s\nwant:\n%s", errText(err), want)
	}
}

// A file kube-proxy's strict decoding refuses is refused, each problem
// naming its field; a YAML error names its line.
func TestKubeProxyDecodeErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown field", kpHeader + "ipvs:\n  schedular: rr\n", `ipvs.schedular: unknown field`},
		{"unknown top-level field", kpHeader + "proxyMode: ipvs\n", `proxyMode: unknown field`},
		{"case matters, with a hint", kpHeader + "ipvs:\n  strictArp: true\nHostnameOverride: a\n",
			"HostnameOverride: unknown field (did you mean \"hostnameOverride\"?)\n" +
				"ipvs.strictArp: unknown field (did you mean \"strictARP\"?)"},
		{"unknown field in a list", kpHeader + "logging:\n  vmodule: [{filePattern: x, verbosity: 2, level: 3}]\n",
			`logging.vmodule[0].level: unknown field`},
		{"a field of kube-ipvs' own", kpHeader + "ipvs:\n  drainTimeout: 1m\n", `ipvs.drainTimeout: unknown field`},
		{"bad duration", kpHeader + "ipvs:\n  syncPeriod: 3x\n", `ipvs.syncPeriod: invalid duration "3x"`},
		{"duration without a unit", kpHeader + "conntrack:\n  tcpEstablishedTimeout: 30\n",
			`conntrack.tcpEstablishedTimeout: invalid duration 30: must be a string with a unit, like "30s"`},
		{"integer given a string", kpHeader + "iptables:\n  masqueradeBit: fourteen\n",
			`iptables.masqueradeBit: invalid value "fourteen": must be an integer`},
		{"feature gates given a list", kpHeader + "featureGates: [KubeProxyIPVS]\n",
			`featureGates: invalid value ["KubeProxyIPVS"]: must be a mapping to true or false`},
		{"list given a string", kpHeader + "nodePortAddresses: primary\n",
			`nodePortAddresses: invalid value "primary": must be a list of strings (write a YAML list: [primary])`},
		{"every problem at once", kpHeader + "ipvs:\n  schedular: rr\n  minSyncPeriod: soon\nmasqueradeAll: true\n", strings.Join([]string{
			`ipvs.minSyncPeriod: invalid duration "soon"`,
			`ipvs.schedular: unknown field`,
			`masqueradeAll: unknown field`,
		}, "\n")},
		{"another version", "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
			`apiVersion: unsupported value "kubeproxy.config.k8s.io/v1beta1": must be "kubeproxy.config.k8s.io/v1alpha1" ` +
				`(kube-ipvs reads kube-proxy's kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration)`},
		{"kind without apiVersion", "kind: KubeProxyConfiguration\nmode: ipvs\n",
			`apiVersion: missing: must be "kubeproxy.config.k8s.io/v1alpha1"`},
		{"another kind", "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
			`kind: unsupported value "KubeletConfiguration": must be "KubeProxyConfiguration" ` +
				`(kube-ipvs reads kube-proxy's kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration)`},
		{"malformed YAML", kpHeader + "ipvs:\n  scheduler: [rr\nclusterCIDR: 10.244.0.0/16\n",
			"parsing YAML: yaml: line 5: did not find expected ',' or ']'"},
		{"duplicate key", kpHeader + "clusterCIDR: 10.244.0.0/16\nclusterCIDR: 10.245.0.0/16\n",
			"parsing YAML: yaml: unmarshal errors:\n  line 5: key \"clusterCIDR\" already set in map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load([]byte(tt.doc))
			if errText(err) != tt.want || got != nil {
				t.Errorf("Load() = %v, error:\n%s\nwant:\n%s", got != nil, errText(err), tt.want)
			}
		})
	}
}

// Flags override a KubeProxyConfiguration as they do a KubeIPVSConfiguration;
// an error names the flag, or else the field as the file spells it.
func TestResolveKubeProxy(t *testing.T) {
	kp := func(doc string) env {
		return env{files: map[string]string{configPath: kpHeader + doc}, hostname: "host-a"}
	}
	tests := []struct {
		name    string
		args    []string
		env     env
		want    func(c *Configuration) // changes kubeProxyBase() with NodeName "host-a"
		wantErr string
	}{
		{name: "flags override the file", args: []string{"--config", configPath, "--min-sync-period=1s", "--nodeport-addresses=primary", "--scheduler=sh"},
			env: kp("ipvs:\n  scheduler: wlc\n"), want: func(c *Configuration) {
				c.IPVS.MinSyncPeriod, c.NodePortAddresses, c.IPVS.Scheduler = Duration{time.Second}, []string{NodePortAddressesPrimary}, "sh"
			}},
		{name: "hostnameOverride from the file", args: []string{"--config", configPath}, env: kp("hostnameOverride: Worker-1\n"),
			want: func(c *Configuration) { c.NodeName = "worker-1" }},
		{name: "--hostname-override beats hostnameOverride", args: []string{"--config", configPath, "--hostname-override=worker-2"},
			env: kp("hostnameOverride: worker-1\n"), want: func(c *Configuration) { c.NodeName = "worker-2" }},
		{name: "a flag corrects a value Validate refuses", args: []string{"--config", configPath, "--scheduler=rr"},
			env: kp("ipvs:\n  scheduler: fo\n"), want: func(c *Configuration) {}},
		{name: "file errors name the file's field, flag errors the flag", args: []string{"--config", configPath, "--log-level=loud"},
			env: kp("hostnameOverride: node_1\niptables:\n  masqueradeBit: 13\n"), wantErr: strings.Join([]string{
				`hostnameOverride: invalid value "node_1": ` + subdomainMsg,
				`iptables.masqueradeBit: invalid value 13: kube-ipvs' firewall marks 0x2000-0x3fff all have bit 13`,
				`logging.level (--log-level): unsupported value "loud": must be one of "debug", "info", "warn", "error"`,
			}, "\n")},
		{name: "a flag does not lift a refusal", args: []string{"--config", configPath, "--mode=ipvs"},
			env:     env{files: map[string]string{configPath: kpIdentity + "mode: nftables\n"}, hostname: "host-a"},
			wantErr: `mode: unsupported value "nftables": kube-ipvs replaces only kube-proxy's IPVS mode: set mode: ipvs`},
		{name: "decoding errors and flag errors together", args: []string{"--config", configPath, "--scheduler=fifo"},
			env: kp("ipvs:\n  schedular: rr\n"), wantErr: strings.Join([]string{
				`ipvs.schedular: unknown field`,
				`ipvs.scheduler (--scheduler): unsupported value "fifo": must be one of ` + schedulers,
			}, "\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := resolve(t, tt.args, tt.env)
			if tt.wantErr != "" {
				if errText(err) != tt.wantErr || got != nil {
					t.Fatalf("Resolve() = %v, error:\n%s\nwant:\n%s", got != nil, errText(err), tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve():\n%v", err)
			}
			got.kubeProxy = nil
			want := kubeProxyBase()
			want.NodeName = "host-a"
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve():\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}
