package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// header is the smallest valid document.
const header = "apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n"

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want changes Default() into the expected result; ignored when
		// wantErr is set.
		want    func(c *Configuration)
		wantErr string
	}{
		{name: "header only gives the defaults", doc: header, want: func(c *Configuration) {}},
		{name: "top-level fields", doc: header + `
mode: dry-run
nodeName: worker-1
kubeconfig: /etc/kubernetes/kube-ipvs.conf
apiServer: https://192.0.2.10:6443
serviceProxyName: kube-ipvs
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
masqueradeAll: true
masqueradeBit: 0
`, want: func(c *Configuration) {
			c.Mode, c.NodeName, c.Kubeconfig = ModeDryRun, "worker-1", "/etc/kubernetes/kube-ipvs.conf"
			c.APIServer = "https://192.0.2.10:6443"
			c.ServiceProxyName, c.ClusterCIDR = "kube-ipvs", "10.244.0.0/16,fd00:10:244::/56"
			c.MasqueradeAll, c.MasqueradeBit = true, 0
		}},
		{name: "partial section keeps the other defaults", doc: header + "ipvs:\n  scheduler: wlc\n",
			want: func(c *Configuration) { c.IPVS.Scheduler = "wlc" }},
		{name: "durations", doc: header + `
ipvs:
  syncPeriod: 1m30s
  minSyncPeriod: 500ms
  tcpTimeout: 15m
  tcpFinTimeout: 2m
  udpTimeout: 300s
  drainTimeout: 1m30.5s
`, want: func(c *Configuration) {
			c.IPVS.SyncPeriod, c.IPVS.MinSyncPeriod = Duration{90 * time.Second}, Duration{500 * time.Millisecond}
			c.IPVS.TCPTimeout, c.IPVS.TCPFinTimeout = Duration{15 * time.Minute}, Duration{2 * time.Minute}
			c.IPVS.UDPTimeout = Duration{300 * time.Second}
			c.IPVS.DrainTimeout = Duration{90*time.Second + 500*time.Millisecond}
		}},
		{name: "drain timeout 0 means no drain", doc: header + "ipvs:\n  drainTimeout: 0s\n",
			want: func(c *Configuration) { c.IPVS.DrainTimeout = Duration{} }},
		{name: "lists and strictARP", doc: header + `
nodePortAddresses: [192.168.10.0/24, "2001:db8:10::/64"]
ipvs:
  strictARP: true
externalIPs:
  allowedCIDRs:
  - 203.0.113.0/24
  - 2001:db8:203::/48
loadBalancerIPs:
  allowedCIDRs: [198.51.100.0/24]
`, want: func(c *Configuration) {
			c.NodePortAddresses = []string{"192.168.10.0/24", "2001:db8:10::/64"}
			c.IPVS.StrictARP = true
			c.ExternalIPs.AllowedCIDRs = []string{"203.0.113.0/24", "2001:db8:203::/48"}
			c.LoadBalancerIPs.AllowedCIDRs = []string{"198.51.100.0/24"}
		}},
		{name: "metrics address and excluded CIDRs", doc: header + `
metricsBindAddress: "[::1]:10249"
ipvs:
  excludeCIDRs: [10.96.200.0/24, "fd00:96:200::/64"]
`, want: func(c *Configuration) {
			c.MetricsBind = "[::1]:10249"
			c.IPVS.ExcludeCIDRs = []string{"10.96.200.0/24", "fd00:96:200::/64"}
		}},
		{name: "empty metrics address: not served", doc: header + "metricsBindAddress: \"\"\n",
			want: func(c *Configuration) { c.MetricsBind = "" }},
		{name: "an empty list is not the default", doc: header + "nodePortAddresses: []\n",
			want: func(c *Configuration) { c.NodePortAddresses = []string{} }},
		{name: "a null list keeps the default", doc: header + "nodePortAddresses: null\nexternalIPs:\n  allowedCIDRs: ~\n",
			want: func(c *Configuration) {}},
		{name: "logging", doc: header + "logging:\n  level: debug\n  format: console\n",
			want: func(c *Configuration) { c.Logging = LoggingConfiguration{Level: "debug", Format: "console"} }},
		{name: "null keeps the default", doc: header + "mode: null\nipvs: null\nlogging:\n  level: ~\n",
			want: func(c *Configuration) {}},
		{name: "JSON is YAML too", doc: `{"apiVersion": "kube-ipvs.io/v1alpha1", "kind": "KubeIPVSConfiguration", "ipvs": {"scheduler": "sh"}}`,
			want: func(c *Configuration) { c.IPVS.Scheduler = "sh" }},

		{name: "unknown top-level field", doc: header + "proxyMode: ipvs\n",
			wantErr: `proxyMode: unknown field`},
		{name: "unknown nested field", doc: header + "ipvs:\n  schedular: lc\n",
			wantErr: `ipvs.schedular: unknown field`},
		{name: "field in the wrong section", doc: header + "scheduler: lc\nlogging:\n  scheduler: lc\n",
			wantErr: "logging.scheduler: unknown field\nscheduler: unknown field"},
		{name: "wrong case gets a hint", doc: header + "ipvs:\n  Scheduler: lc\nNodeName: a\n",
			wantErr: "NodeName: unknown field (did you mean \"nodeName\"?)\nipvs.Scheduler: unknown field (did you mean \"scheduler\"?)"},
		{name: "every unknown field at every depth", doc: header + `
zeta: 1
alpha: 2
ipvs:
  schedular: lc
  excludeCidrs: [10.0.0.0/8]
logging:
  colour: true
`, wantErr: `alpha: unknown field
ipvs.excludeCidrs: unknown field (did you mean "excludeCIDRs"?)
ipvs.schedular: unknown field
logging.colour: unknown field
zeta: unknown field`},

		{name: "bad duration", doc: header + "ipvs:\n  syncPeriod: 3x\n",
			wantErr: `ipvs.syncPeriod: invalid duration "3x"`},
		{name: "duration without unit", doc: header + "ipvs:\n  minSyncPeriod: 30\n",
			wantErr: `ipvs.minSyncPeriod: invalid duration 30: must be a string with a unit, like "30s"`},
		{name: "duration of the wrong type", doc: header + "ipvs:\n  udpTimeout: [1s]\n",
			wantErr: `ipvs.udpTimeout: invalid duration ["1s"]: must be a string with a unit, like "30s"`},
		{name: "empty duration", doc: header + "ipvs:\n  tcpTimeout: \"\"\n",
			wantErr: `ipvs.tcpTimeout: invalid duration ""`},

		{name: "integer field given a string", doc: header + "masqueradeBit: fourteen\n",
			wantErr: `masqueradeBit: invalid value "fourteen": must be an integer`},
		{name: "integer field given a fraction", doc: header + "masqueradeBit: 14.5\n",
			wantErr: `masqueradeBit: invalid value 14.5: must be an integer`},
		{name: "bool field given a string", doc: header + "masqueradeAll: maybe\n",
			wantErr: `masqueradeAll: invalid value "maybe": must be true or false`},
		{name: "string field given a number", doc: header + "nodeName: 1234\n",
			wantErr: `nodeName: invalid value 1234: must be a string (quote it in YAML)`},
		{name: "string field given a mapping", doc: header + "mode:\n  ipvs: true\n",
			wantErr: `mode: invalid value {"ipvs":true}: must be a string`},
		{name: "list given a string", doc: header + "nodePortAddresses: primary\n",
			wantErr: `nodePortAddresses: invalid value "primary": must be a list of strings (write a YAML list: [primary])`},
		{name: "list of numbers", doc: header + "loadBalancerIPs:\n  allowedCIDRs: [1, 2]\n",
			wantErr: `loadBalancerIPs.allowedCIDRs: invalid value [1,2]: must be a list of strings`},
		{name: "list given a mapping", doc: header + "externalIPs:\n  allowedCIDRs: {a: b}\n",
			wantErr: `externalIPs.allowedCIDRs: invalid value {"a":"b"}: must be a list of strings`},
		{name: "strictARP given a string", doc: header + "ipvs:\n  strictARP: maybe\n",
			wantErr: `ipvs.strictARP: invalid value "maybe": must be true or false`},
		{name: "new sections check their keys", doc: header + "externalIPs:\n  allowedCidrs: []\nloadBalancerIPs:\n  trustedControllers: [metallb]\n",
			wantErr: "externalIPs.allowedCidrs: unknown field (did you mean \"allowedCIDRs\"?)\nloadBalancerIPs.trustedControllers: unknown field"},
		{name: "list entries validated after decoding", doc: header + "nodePortAddresses: [10.0.0.0/8, primary]\nexternalIPs:\n  allowedCIDRs: [203.0.113.7]\n",
			wantErr: "nodePortAddresses[1]: invalid value \"primary\": must be the only entry (can't use both \"primary\" and CIDRs)\n" +
				`externalIPs.allowedCIDRs[0]: invalid CIDR "203.0.113.7": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{name: "section given a scalar", doc: header + "ipvs: rr\n",
			wantErr: `ipvs: invalid value "rr": must be a mapping`},
		{name: "section given a list", doc: header + "logging: [info]\n",
			wantErr: `logging: invalid value ["info"]: must be a mapping`},
		{name: "long bad value is cut", doc: header + "nodeName: [" + strings.Repeat("1,", 40) + "1]\n",
			wantErr: `nodeName: invalid value [` + strings.Repeat("1,", 29) + `1…: must be a string`},

		{name: "empty document", doc: "",
			wantErr: "apiVersion: missing: must be \"kube-ipvs.io/v1alpha1\"\nkind: missing: must be \"KubeIPVSConfiguration\""},
		{name: "missing kind", doc: "apiVersion: kube-ipvs.io/v1alpha1\n",
			wantErr: `kind: missing: must be "KubeIPVSConfiguration"`},
		{name: "null apiVersion", doc: "apiVersion: null\nkind: KubeIPVSConfiguration\n",
			wantErr: `apiVersion: missing: must be "kube-ipvs.io/v1alpha1"`},
		{name: "wrong apiVersion and kind", doc: "apiVersion: kube-ipvs.io/v1beta1\nkind: KubeIPVS\n",
			wantErr: "apiVersion: unsupported value \"kube-ipvs.io/v1beta1\": must be \"kube-ipvs.io/v1alpha1\"\n" +
				"kind: unsupported value \"KubeIPVS\": must be \"KubeIPVSConfiguration\""},
		{name: "document is a list", doc: "- mode: ipvs\n",
			wantErr: `document: invalid value [{"mode":"ipvs"}]: must be a mapping`},
		{name: "document is a scalar", doc: "ipvs\n",
			wantErr: `document: invalid value "ipvs": must be a mapping`},
		{name: "validation runs after decoding", doc: header + "mode: userspace\nipvs:\n  scheduler: fifo\n",
			wantErr: "mode: unsupported value \"userspace\": must be one of \"ipvs\", \"dry-run\"\n" +
				"ipvs.scheduler: unsupported value \"fifo\": must be one of " + schedulers},

		{name: "every kind of problem at once", doc: `
kind: KubeIPVSConfiguration
mode: userspace
masqueradeAll: sometimes
masqueradeBit: 99
clusterCIDR: 010.0.0.0/8
nodePortAddresses: [192.168.10.0/33]
loadBalancerIPs:
  allowedCIDRs: 198.51.100.0/24
ipvs:
  schedular: lc
  scheduler: fifo
  syncPeriod: 3x
  minSyncPeriod: 2m
logging:
  level: trace
  colour: true
`, wantErr: strings.Join([]string{
			`ipvs.schedular: unknown field`,
			`ipvs.syncPeriod: invalid duration "3x"`,
			`loadBalancerIPs.allowedCIDRs: invalid value "198.51.100.0/24": must be a list of strings (write a YAML list: [198.51.100.0/24])`,
			`logging.colour: unknown field`,
			`masqueradeAll: invalid value "sometimes": must be true or false`,
			`apiVersion: missing: must be "kube-ipvs.io/v1alpha1"`,
			`mode: unsupported value "userspace": must be one of "ipvs", "dry-run"`,
			`clusterCIDR: invalid CIDR "010.0.0.0/8": IPv4 field has octet with leading zero`,
			`masqueradeBit: invalid value 99: must be between 0 and 31`,
			`nodePortAddresses[0]: invalid CIDR "192.168.10.0/33": prefix length "33" must be a number from 0 to 32`,
			`ipvs.scheduler: unsupported value "fifo": must be one of ` + schedulers,
			`ipvs.minSyncPeriod: invalid value "2m0s": must not exceed ipvs.syncPeriod ("30s")`,
			`logging.level: unsupported value "trace": must be one of "debug", "info", "warn", "error"`,
		}, "\n")},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load([]byte(tt.doc))
			if tt.wantErr != "" {
				if errText(err) != tt.wantErr {
					t.Fatalf("Load() error:\ngot:\n%s\nwant:\n%s", errText(err), tt.wantErr)
				}
				if got != nil {
					t.Errorf("Load() returned a configuration with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error: %v", err)
			}
			want := Default()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load():\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}

// A document that is not YAML stops at once, with the parser's message.
func TestLoadSyntaxErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unclosed flow sequence", header + "mode: [ipvs\n", "parsing YAML: "},
		{"tab indentation", header + "ipvs:\n\tscheduler: rr\n", "parsing YAML: "},
		{"duplicate key", header + "mode: ipvs\nmode: dry-run\n", `parsing YAML: yaml: unmarshal errors:
  line 4: key "mode" already set in map`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load([]byte(tt.doc))
			if !strings.HasPrefix(errText(err), tt.want) {
				t.Errorf("Load() error = %q, want prefix %q", errText(err), tt.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		d    Duration
		json string
	}{
		{Duration{30 * time.Second}, `"30s"`},
		{Duration{90 * time.Second}, `"1m30s"`},
		{Duration{500 * time.Millisecond}, `"500ms"`},
		{Duration{0}, `"0s"`},
	} {
		b, err := tt.d.MarshalJSON()
		if err != nil || string(b) != tt.json {
			t.Errorf("MarshalJSON(%v) = %s, %v; want %s", tt.d, b, err, tt.json)
		}
		var back Duration
		if err := back.UnmarshalJSON(b); err != nil || back != tt.d {
			t.Errorf("UnmarshalJSON(%s) = %v, %v; want %v", b, back, err, tt.d)
		}
	}
}

// FuzzLoad checks that no document makes Load panic, and that whatever Load
// accepts is valid and survives a Marshal/Load round trip (a
// KubeProxyConfiguration comes back as the KubeIPVSConfiguration it
// became).
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"example.yaml", "testdata/kubeadm-v1.37-config.conf"} {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data)
		}
	}
	kp := "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
	for _, s := range []string{
		kp, kp + "nodePortAddresses: [all, localhost, primary]\n", kp + "featureGates: {KubeProxyIPVS: false, X: true}\n",
		kp + "iptables: {masqueradeBit: 13}\nipvs: {minSyncPeriod: 40s}\n", kp + "bindAddress: \"::\"\nhealthzBindAddress: \"::1\"\n",
		kp + "logging: {vmodule: [{filePattern: a, verbosity: 1}], options: {json: {infoBufferSize: 1Mi}}}\n",
	} {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"", header, header + "ipvs: rr\n", header + "masqueradeBit: 1e100\n", header + "ipvs:\n  syncPeriod: 30\n",
		header + "clusterCIDR: 10.0.0.0/8,fd00::/56\n", header + "nodePortAddresses: [10.0.0.0/8, primary, \"\"]\n",
		header + "nodePortAddresses: []\nexternalIPs: {allowedCIDRs: [null]}\n", "- 1\n", "a: &x [*x]\n", header + "logging: {level: [1]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Load(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a configuration that Validate refuses: %v", err)
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Load(out)
		if err == nil {
			back.kubeProxy = cfg.kubeProxy
		}
		if err != nil || !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip: %v\n%s", err, out)
		}
	})
}
