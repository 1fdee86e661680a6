package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// errText returns err's message, or "" for nil, so that cases compare text.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func dur(s string) Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return Duration{d}
}

const (
	subdomainMsg  = `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`
	labelValueMsg = `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`
	schedulers    = `"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "mh", "sed", "nq"`
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Configuration)
		want   string // whole error text; "" for valid
	}{
		{"default", func(c *Configuration) {}, ""},
		{"dry-run mode", func(c *Configuration) { c.Mode = ModeDryRun }, ""},
		{"every scheduler", func(c *Configuration) { c.IPVS.Scheduler = "mh" }, ""},
		{"node name set", func(c *Configuration) { c.NodeName = "worker-1.example.com" }, ""},
		{"node name checked trimmed and lower-cased", func(c *Configuration) { c.NodeName = " Worker-1 " }, ""},
		{"apiServer https with port", func(c *Configuration) { c.APIServer = "https://192.0.2.10:6443" }, ""},
		{"apiServer http, name, no port", func(c *Configuration) { c.APIServer = "http://control-plane.example" }, ""},
		{"apiServer IPv6 with a path prefix", func(c *Configuration) { c.APIServer = "https://[2001:db8::10]:6443/k8s" }, ""},
		{"drain timeout 0", func(c *Configuration) { c.IPVS.DrainTimeout = dur("0s") }, ""},
		{"drain timeout not whole seconds", func(c *Configuration) { c.IPVS.DrainTimeout = dur("1500ms") }, ""},
		{"service proxy name set", func(c *Configuration) { c.ServiceProxyName = "kube-ipvs" }, ""},
		{"dual-stack cluster CIDR with spaces", func(c *Configuration) { c.ClusterCIDR = "10.244.0.0/16, fd00:10:244::/56" }, ""},
		{"cluster CIDR with host bits is accepted", func(c *Configuration) { c.ClusterCIDR = "10.244.1.0/16" }, ""},
		{"masquerade bit 0", func(c *Configuration) { c.MasqueradeBit = 0 }, ""},
		{"masquerade bit 31", func(c *Configuration) { c.MasqueradeBit = 31 }, ""},
		{"min sync period 0", func(c *Configuration) { c.IPVS.MinSyncPeriod = dur("0s") }, ""},
		{"min sync period equals sync period", func(c *Configuration) { c.IPVS.MinSyncPeriod = dur("30s") }, ""},
		{"timeouts set", func(c *Configuration) {
			c.IPVS.TCPTimeout, c.IPVS.TCPFinTimeout, c.IPVS.UDPTimeout = dur("900s"), dur("2m"), dur("300s")
		}, ""},
		{"debug console logging", func(c *Configuration) { c.Logging = LoggingConfiguration{"debug", "console"} }, ""},
		{"node port CIDRs, dual-stack", func(c *Configuration) { c.NodePortAddresses = []string{"192.168.10.0/24", "2001:db8:10::/64"} }, ""},
		{"node port addresses empty", func(c *Configuration) { c.NodePortAddresses = []string{} }, ""},
		{"node port addresses nil", func(c *Configuration) { c.NodePortAddresses = nil }, ""},
		{"node port loopback CIDRs are accepted", func(c *Configuration) { c.NodePortAddresses = []string{"127.0.0.1/32", "::1/128"} }, ""},
		{"node port CIDR with host bits is accepted", func(c *Configuration) { c.NodePortAddresses = []string{"192.168.10.7/24"} }, ""},
		{"strict ARP", func(c *Configuration) { c.IPVS.StrictARP = true }, ""},
		{"allowed CIDRs set", func(c *Configuration) {
			c.ExternalIPs.AllowedCIDRs = []string{"203.0.113.0/24", "2001:db8:203::/48"}
			c.LoadBalancerIPs.AllowedCIDRs = []string{"198.51.100.0/24", "0.0.0.0/0"}
		}, ""},

		{"wrong apiVersion", func(c *Configuration) { c.APIVersion = "v1" },
			`apiVersion: unsupported value "v1": must be "kube-ipvs.io/v1alpha1"`},
		{"wrong kind", func(c *Configuration) { c.Kind = "KubeProxyConfiguration" },
			`kind: unsupported value "KubeProxyConfiguration": must be "KubeIPVSConfiguration"`},
		{"bad mode", func(c *Configuration) { c.Mode = "userspace" },
			`mode: unsupported value "userspace": must be one of "ipvs", "dry-run"`},
		{"empty mode", func(c *Configuration) { c.Mode = "" },
			`mode: unsupported value "": must be one of "ipvs", "dry-run"`},
		{"bad node name", func(c *Configuration) { c.NodeName = "Node_1" },
			`nodeName: invalid value "Node_1": ` + subdomainMsg},
		{"bad service proxy name", func(c *Configuration) { c.ServiceProxyName = "my proxy" },
			`serviceProxyName: invalid value "my proxy": ` + labelValueMsg},
		{"apiServer without scheme", func(c *Configuration) { c.APIServer = "192.0.2.10:6443" },
			`apiServer: invalid value "192.0.2.10:6443": must be a URL starting with https:// (or http://), like "https://192.0.2.10:6443"`},
		{"apiServer host only", func(c *Configuration) { c.APIServer = "control-plane" },
			`apiServer: invalid value "control-plane": must be a URL starting with https:// (or http://), like "https://192.0.2.10:6443"`},
		{"apiServer other scheme", func(c *Configuration) { c.APIServer = "tcp://192.0.2.10:6443" },
			`apiServer: invalid value "tcp://192.0.2.10:6443": must be a URL starting with https:// (or http://), like "https://192.0.2.10:6443"`},
		{"apiServer without host", func(c *Configuration) { c.APIServer = "https:///api" },
			`apiServer: invalid value "https:///api": must name the apiserver's host, like "https://192.0.2.10:6443"`},
		{"apiServer port without host", func(c *Configuration) { c.APIServer = "https://:6443" },
			`apiServer: invalid value "https://:6443": must name the apiserver's host, like "https://192.0.2.10:6443"`},
		{"apiServer with credentials", func(c *Configuration) { c.APIServer = "https://admin:secret@192.0.2.10:6443" },
			`apiServer: invalid value "https://admin:secret@192.0.2.10:6443": must not hold credentials: they come from kubeconfig or the ServiceAccount`},
		{"apiServer with a query", func(c *Configuration) { c.APIServer = "https://192.0.2.10:6443?x=1" },
			`apiServer: invalid value "https://192.0.2.10:6443?x=1": must have no query or fragment, like "https://192.0.2.10:6443"`},
		{"apiServer unparsable", func(c *Configuration) { c.APIServer = "https://192.0.2.10:port" },
			`apiServer: invalid value "https://192.0.2.10:port": must be a URL starting with https:// (or http://), like "https://192.0.2.10:6443"`},
		{"drain timeout negative", func(c *Configuration) { c.IPVS.DrainTimeout = dur("-1s") },
			`ipvs.drainTimeout: invalid value "-1s": must be 0 or greater`},
		{"service proxy name too long", func(c *Configuration) { c.ServiceProxyName = strings.Repeat("a", 64) },
			`serviceProxyName: invalid value "` + strings.Repeat("a", 64) + `": must be no more than 63 bytes`},
		{"cluster CIDR without prefix length", func(c *Configuration) { c.ClusterCIDR = "10.244.0.0" },
			`clusterCIDR: invalid CIDR "10.244.0.0": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"cluster CIDR octet too big", func(c *Configuration) { c.ClusterCIDR = "300.0.0.0/8" },
			`clusterCIDR: invalid CIDR "300.0.0.0/8": IPv4 field has value >255`},
		{"cluster CIDR leading zero", func(c *Configuration) { c.ClusterCIDR = "010.0.0.0/8" },
			`clusterCIDR: invalid CIDR "010.0.0.0/8": IPv4 field has octet with leading zero`},
		{"cluster CIDR prefix too long", func(c *Configuration) { c.ClusterCIDR = "10.0.0.0/33" },
			`clusterCIDR: invalid CIDR "10.0.0.0/33": prefix length "33" must be a number from 0 to 32`},
		{"cluster CIDR prefix leading zero", func(c *Configuration) { c.ClusterCIDR = "10.0.0.0/08" },
			`clusterCIDR: invalid CIDR "10.0.0.0/08": prefix length "08" must be a number from 0 to 32`},
		{"cluster CIDR IPv6 prefix too long", func(c *Configuration) { c.ClusterCIDR = "fd00::/129" },
			`clusterCIDR: invalid CIDR "fd00::/129": prefix length "129" must be a number from 0 to 128`},
		{"cluster CIDR IPv4-mapped", func(c *Configuration) { c.ClusterCIDR = "::ffff:10.0.0.0/104" },
			`clusterCIDR: invalid CIDR "::ffff:10.0.0.0/104": must not have an IPv4-mapped IPv6 address`},
		{"cluster CIDR with zone", func(c *Configuration) { c.ClusterCIDR = "fe80::%eth0/64" },
			`clusterCIDR: invalid CIDR "fe80::%eth0/64": must not have an IPv6 zone`},
		{"cluster CIDR not an address", func(c *Configuration) { c.ClusterCIDR = "pods/16" },
			`clusterCIDR: invalid CIDR "pods/16": unable to parse IP`},
		{"cluster CIDR empty entry", func(c *Configuration) { c.ClusterCIDR = "10.244.0.0/16," },
			`clusterCIDR: invalid value "10.244.0.0/16,": empty entry in the list`},
		{"cluster CIDR second entry bad", func(c *Configuration) { c.ClusterCIDR = "10.244.0.0/16,fd00::/200" },
			`clusterCIDR: invalid CIDR "fd00::/200": prefix length "200" must be a number from 0 to 128`},
		{"masquerade bit negative", func(c *Configuration) { c.MasqueradeBit = -1 },
			`masqueradeBit: invalid value -1: must be between 0 and 31`},
		{"masquerade bit 32", func(c *Configuration) { c.MasqueradeBit = 32 },
			`masqueradeBit: invalid value 32: must be between 0 and 31`},
		{"healthz address without a port", func(c *Configuration) { c.HealthzBind = "0.0.0.0" },
			`healthzBindAddress: invalid value "0.0.0.0": must be IP:PORT, like "0.0.0.0:10256", or empty`},
		{"healthz address with a host name", func(c *Configuration) { c.HealthzBind = "localhost:10256" },
			`healthzBindAddress: invalid value "localhost:10256": "localhost" is not an IP address`},
		{"healthz port out of range", func(c *Configuration) { c.HealthzBind = "[::]:70000" },
			`healthzBindAddress: invalid value "[::]:70000": port "70000" must be a number from 0 to 65535`},
		{"metrics address without a port", func(c *Configuration) { c.MetricsBind = "127.0.0.1" },
			`metricsBindAddress: invalid value "127.0.0.1": must be IP:PORT, like "127.0.0.1:10249", or empty`},
		{"metrics address with a host name", func(c *Configuration) { c.MetricsBind = "localhost:10249" },
			`metricsBindAddress: invalid value "localhost:10249": "localhost" is not an IP address`},
		{"metrics port out of range", func(c *Configuration) { c.MetricsBind = "0.0.0.0:-1" },
			`metricsBindAddress: invalid value "0.0.0.0:-1": port "-1" must be a number from 0 to 65535`},
		{"exclude CIDR is an address", func(c *Configuration) { c.IPVS.ExcludeCIDRs = []string{"10.96.200.0/24", "10.96.201.1"} },
			`ipvs.excludeCIDRs[1]: invalid CIDR "10.96.201.1": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"exclude CIDR empty entry", func(c *Configuration) { c.IPVS.ExcludeCIDRs = []string{""} },
			`ipvs.excludeCIDRs[0]: empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"masquerade bit of the short-circuit marks", func(c *Configuration) { c.MasqueradeBit = 13 },
			`masqueradeBit: invalid value 13: kube-ipvs' firewall marks 0x2000-0x3fff all have bit 13`},
		{"unknown scheduler", func(c *Configuration) { c.IPVS.Scheduler = "fifo" },
			`ipvs.scheduler: unsupported value "fifo": must be one of ` + schedulers},
		{"sync period 0", func(c *Configuration) { c.IPVS.SyncPeriod = dur("0s") },
			`ipvs.syncPeriod: invalid value "0s": must be greater than 0`},
		{"sync period negative", func(c *Configuration) { c.IPVS.SyncPeriod = dur("-1s") },
			`ipvs.syncPeriod: invalid value "-1s": must be greater than 0`},
		{"min sync period negative", func(c *Configuration) { c.IPVS.MinSyncPeriod = dur("-1s") },
			`ipvs.minSyncPeriod: invalid value "-1s": must be 0 or greater`},
		{"min sync period above sync period", func(c *Configuration) { c.IPVS.MinSyncPeriod = dur("1m") },
			`ipvs.minSyncPeriod: invalid value "1m0s": must not exceed ipvs.syncPeriod ("30s")`},
		{"tcp timeout negative", func(c *Configuration) { c.IPVS.TCPTimeout = dur("-5s") },
			`ipvs.tcpTimeout: invalid value "-5s": must be 0 or greater`},
		{"tcp fin timeout fraction of a second", func(c *Configuration) { c.IPVS.TCPFinTimeout = dur("1500ms") },
			`ipvs.tcpFinTimeout: invalid value "1.5s": must be a whole number of seconds`},
		{"udp timeout above the kernel's limit", func(c *Configuration) { c.IPVS.UDPTimeout = dur("1000h") },
			`ipvs.udpTimeout: invalid value "1000h0m0s": must be at most "596h31m23s"`},
		{"primary before a CIDR", func(c *Configuration) { c.NodePortAddresses = []string{"primary", "127.0.0.1/32"} },
			`nodePortAddresses[0]: invalid value "primary": must be the only entry (can't use both "primary" and CIDRs)`},
		{"primary after a CIDR", func(c *Configuration) { c.NodePortAddresses = []string{"127.0.0.1/32", "primary"} },
			`nodePortAddresses[1]: invalid value "primary": must be the only entry (can't use both "primary" and CIDRs)`},
		{"primary twice is reported once", func(c *Configuration) { c.NodePortAddresses = []string{"primary", "primary"} },
			`nodePortAddresses[0]: invalid value "primary": must be the only entry (can't use both "primary" and CIDRs)`},
		{"primary and a bad CIDR: both reported", func(c *Configuration) { c.NodePortAddresses = []string{"primary", "foo"} },
			"nodePortAddresses[0]: invalid value \"primary\": must be the only entry (can't use both \"primary\" and CIDRs)\n" +
				`nodePortAddresses[1]: invalid CIDR "foo": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"primary in the wrong case", func(c *Configuration) { c.NodePortAddresses = []string{"Primary"} },
			`nodePortAddresses[0]: invalid value "Primary": must be "primary", in lower case, or a CIDR`},
		{"node port address without prefix length", func(c *Configuration) { c.NodePortAddresses = []string{"127.0.0.1/32", "10.20.30.40", "1.2.3.0/24"} },
			`nodePortAddresses[1]: invalid CIDR "10.20.30.40": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"node port addresses, IPv6 without prefix lengths", func(c *Configuration) { c.NodePortAddresses = []string{"::0", "::1", "2001:db8::/32"} },
			"nodePortAddresses[0]: invalid CIDR \"::0\": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)\n" +
				`nodePortAddresses[1]: invalid CIDR "::1": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"node port address bad IPv6", func(c *Configuration) { c.NodePortAddresses = []string{"::1/128", "2001:db8::/32", "2001:db8:xyz/64"} },
			`nodePortAddresses[2]: invalid CIDR "2001:db8:xyz/64": each colon-separated field must have at least one digit (at "xyz")`},
		{"node port address leading zero", func(c *Configuration) { c.NodePortAddresses = []string{"192.168.010.0/24"} },
			`nodePortAddresses[0]: invalid CIDR "192.168.010.0/24": IPv4 field has octet with leading zero`},
		{"node port address empty entry", func(c *Configuration) { c.NodePortAddresses = []string{"10.0.0.0/8", ""} },
			`nodePortAddresses[1]: empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"node port address IPv4-mapped", func(c *Configuration) { c.NodePortAddresses = []string{"::ffff:10.0.0.0/104"} },
			`nodePortAddresses[0]: invalid CIDR "::ffff:10.0.0.0/104": must not have an IPv4-mapped IPv6 address`},
		{"external IP allowed CIDR is an address", func(c *Configuration) { c.ExternalIPs.AllowedCIDRs = []string{"203.0.113.0/24", "203.0.114.7"} },
			`externalIPs.allowedCIDRs[1]: invalid CIDR "203.0.114.7": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"load balancer allowed CIDR with a zone", func(c *Configuration) { c.LoadBalancerIPs.AllowedCIDRs = []string{"fe80::%eth0/64"} },
			`loadBalancerIPs.allowedCIDRs[0]: invalid CIDR "fe80::%eth0/64": must not have an IPv6 zone`},
		{"primary is no allowed CIDR", func(c *Configuration) { c.LoadBalancerIPs.AllowedCIDRs = []string{"primary"} },
			`loadBalancerIPs.allowedCIDRs[0]: invalid CIDR "primary": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"bad log level", func(c *Configuration) { c.Logging.Level = "verbose" },
			`logging.level: unsupported value "verbose": must be one of "debug", "info", "warn", "error"`},
		{"bad log format", func(c *Configuration) { c.Logging.Format = "text" },
			`logging.format: unsupported value "text": must be one of "json", "console"`},

		{"every bad field at once", func(c *Configuration) {
			c.Mode = "nft"
			c.ClusterCIDR = "010.0.0.0/8,fd00::/56,10.0.0.0"
			c.MasqueradeBit = 40
			c.NodePortAddresses = []string{"10.0.0.0/8", "primary"}
			c.ExternalIPs.AllowedCIDRs = []string{"203.0.113.0/33"}
			c.LoadBalancerIPs.AllowedCIDRs = []string{"", "198.51.100.0/24"}
			c.IPVS.Scheduler = "fifo"
			c.IPVS.SyncPeriod = dur("0s")
			c.IPVS.MinSyncPeriod = dur("-1s")
			c.IPVS.UDPTimeout = dur("-1s")
			c.Logging.Level = "trace"
			c.Logging.Format = "xml"
		}, `mode: unsupported value "nft": must be one of "ipvs", "dry-run"
clusterCIDR: invalid CIDR "010.0.0.0/8": IPv4 field has octet with leading zero
clusterCIDR: invalid CIDR "10.0.0.0": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)
masqueradeBit: invalid value 40: must be between 0 and 31
nodePortAddresses[1]: invalid value "primary": must be the only entry (can't use both "primary" and CIDRs)
ipvs.scheduler: unsupported value "fifo": must be one of ` + schedulers + `
ipvs.syncPeriod: invalid value "0s": must be greater than 0
ipvs.minSyncPeriod: invalid value "-1s": must be 0 or greater
ipvs.udpTimeout: invalid value "-1s": must be 0 or greater
externalIPs.allowedCIDRs[0]: invalid CIDR "203.0.113.0/33": prefix length "33" must be a number from 0 to 32
loadBalancerIPs.allowedCIDRs[0]: empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)
logging.level: unsupported value "trace": must be one of "debug", "info", "warn", "error"
logging.format: unsupported value "xml": must be one of "json", "console"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			if got := errText(c.Validate()); got != tt.want {
				t.Errorf("Validate():\ngot:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestValidateErrorsAreFieldErrors(t *testing.T) {
	c := Default()
	c.Mode, c.MasqueradeBit = "x", 99
	err := c.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate() = %T, want an errors.Join result", err)
	}
	var fields []string
	for _, e := range joined.Unwrap() {
		fe, ok := e.(*FieldError)
		if !ok {
			t.Fatalf("error %q is %T, want *FieldError", e, e)
		}
		fields = append(fields, fe.Field)
	}
	if want := []string{"mode", "masqueradeBit"}; !reflect.DeepEqual(fields, want) {
		t.Errorf("fields = %q, want %q", fields, want)
	}
}

func TestClusterCIDRs(t *testing.T) {
	emptyWarning := Default().Warnings(ipv4Only)[0]
	tests := []struct {
		name     string
		cidr     string
		want     []netip.Prefix
		warnings []string
	}{
		{"empty", "", nil, []string{emptyWarning}},
		{"blank", "  ", nil, []string{emptyWarning}},
		{"one IPv4", "10.244.0.0/16", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, nil},
		{"dual-stack, order kept", " fd00:10:244::/56 ,10.244.0.0/16", []netip.Prefix{
			netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("10.244.0.0/16"),
		}, nil},
		{"host bits are cleared", "10.244.1.7/16", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			[]string{`clusterCIDR: CIDR "10.244.1.7/16" has bits set beyond the prefix length; using "10.244.0.0/16"`}},
		{"duplicates removed", "10.244.0.0/16,10.244.3.0/16", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			[]string{
				`clusterCIDR: CIDR "10.244.3.0/16" has bits set beyond the prefix length; using "10.244.0.0/16"`,
				`clusterCIDR: "10.244.0.0/16" is listed more than once`,
			}},
		{"invalid entries skipped", "10.244.0.0/16,bogus", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ClusterCIDR = tt.cidr
			if got := c.ClusterCIDRs(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ClusterCIDRs() = %v, want %v", got, tt.want)
			}
			if got := c.Warnings(ipv4Only); !reflect.DeepEqual(got, tt.warnings) {
				t.Errorf("Warnings() = %q, want %q", got, tt.warnings)
			}
		})
	}
}

var ipv4Only = []v1.IPFamily{v1.IPv4Protocol}

func TestWarnings(t *testing.T) {
	const empty = "clusterCIDR is empty: only traffic the node sends from a ClusterIP is masqueraded; " +
		"set clusterCIDR (or masqueradeAll) so clients outside the pod network get answers"
	noFamily := func(cidr, family string) string {
		return `clusterCIDR "` + cidr + `" has no ` + family + ` prefix, and kube-ipvs serves ` + family +
			`: for ` + family + ` Services it is as if clusterCIDR were empty (only traffic the node sends from a ClusterIP is masqueraded); ` +
			`add the ` + family + ` pod CIDR`
	}
	tests := []struct {
		name          string
		cidr          string
		masqueradeAll bool
		served        []v1.IPFamily
		want          []string
	}{
		{"IPv4 CIDR, IPv4 served", "10.244.0.0/16", false, ipv4Only, nil},
		{"dual-stack CIDR, IPv4 served", "fd00:10:244::/56,10.244.0.0/16", false, ipv4Only, nil},
		{"no CIDR", "", false, ipv4Only, []string{empty}},
		{"no CIDR, masqueradeAll", "", true, ipv4Only, nil},
		{"IPv6 only, IPv4 served", "fd00:10:244::/56", false, ipv4Only, []string{noFamily("fd00:10:244::/56", "IPv4")}},
		{"IPv6 only, masqueradeAll reads no CIDR", "fd00:10:244::/56", true, ipv4Only, nil},
		{"IPv4 only, both served", "10.244.0.0/16", false, []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol},
			[]string{noFamily("10.244.0.0/16", "IPv6")}},
		{"host bits and no served family", "fd00:10:244::1/56", false, ipv4Only, []string{
			`clusterCIDR: CIDR "fd00:10:244::1/56" has bits set beyond the prefix length; using "fd00:10:244::/56"`,
			noFamily("fd00:10:244::1/56", "IPv4"),
		}},
		{"host bits under masqueradeAll still reported", "10.244.1.0/16", true, ipv4Only, []string{
			`clusterCIDR: CIDR "10.244.1.0/16" has bits set beyond the prefix length; using "10.244.0.0/16"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ClusterCIDR, c.MasqueradeAll = tt.cidr, tt.masqueradeAll
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := c.Warnings(tt.served); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Warnings(%v):\ngot  %q\nwant %q", tt.served, got, tt.want)
			}
		})
	}
}

var dualStack = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}

func prefixes(ss ...string) []netip.Prefix {
	if len(ss) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestNodePortAddresses(t *testing.T) {
	const empty = "nodePortAddresses is empty: NodePorts are served on every local address; " +
		`consider "primary" (the Node's InternalIP addresses) or the CIDRs of the node's networks`
	noFamily := func(family string) string {
		return "nodePortAddresses has no " + family + " CIDR, and kube-ipvs serves " + family + ": " +
			family + " NodePorts are served on every local " + family + " address, as kube-proxy does; add the " + family + " CIDRs to serve"
	}
	loopback := func(path, cidr string) string {
		return path + `: "` + cidr + `" holds only loopback addresses, and NodePorts are never served on loopback: this entry selects no address`
	}
	tests := []struct {
		name     string
		entries  []string
		served   []v1.IPFamily
		primary  bool
		want     []netip.Prefix
		warnings []string
	}{
		{name: "default", entries: Default().NodePortAddresses, served: dualStack, primary: true},
		{name: "IPv4 CIDRs, IPv4 served", entries: []string{"192.168.10.0/24", "10.0.0.0/8"}, served: ipv4Only,
			want: prefixes("192.168.10.0/24", "10.0.0.0/8", "::/0")},
		{name: "IPv4 CIDR, dual-stack served: IPv6 everywhere", entries: []string{"192.168.10.0/24"}, served: dualStack,
			want: prefixes("192.168.10.0/24", "::/0"), warnings: []string{noFamily("IPv6")}},
		{name: "IPv6 CIDR only, IPv4 served", entries: []string{"2001:db8::/64"}, served: ipv4Only,
			want: prefixes("2001:db8::/64", "0.0.0.0/0"), warnings: []string{noFamily("IPv4")}},
		{name: "both families", entries: []string{"2001:db8::/64", "192.168.10.0/24"}, served: dualStack,
			want: prefixes("2001:db8::/64", "192.168.10.0/24")},
		{name: "empty list: everywhere", entries: []string{}, served: dualStack,
			want: prefixes("0.0.0.0/0", "::/0"), warnings: []string{empty}},
		{name: "nil list: everywhere", served: ipv4Only, want: prefixes("0.0.0.0/0", "::/0"), warnings: []string{empty}},
		{name: "every address, said explicitly", entries: []string{"0.0.0.0/0", "::/0"}, served: dualStack,
			want: prefixes("0.0.0.0/0", "::/0")},
		{name: "loopback entries warned about", entries: []string{"127.0.0.0/8", "127.0.0.1/32", "::1/128", "0.0.0.0/0"}, served: dualStack,
			want: prefixes("127.0.0.0/8", "127.0.0.1/32", "::1/128", "0.0.0.0/0"), warnings: []string{
				loopback("nodePortAddresses[0]", "127.0.0.0/8"), loopback("nodePortAddresses[1]", "127.0.0.1/32"),
				loopback("nodePortAddresses[2]", "::1/128"),
			}},
		{name: "prefixes holding loopback and more are not", entries: []string{"0.0.0.0/0", "126.0.0.0/7", "::/127"}, served: dualStack,
			want: prefixes("0.0.0.0/0", "126.0.0.0/7", "::/127")},
		{name: "host bits cleared, duplicates dropped", entries: []string{"192.168.10.7/24", "192.168.10.0/24", "127.0.0.1/8"},
			served: ipv4Only, want: prefixes("192.168.10.0/24", "127.0.0.0/8", "::/0"), warnings: []string{
				`nodePortAddresses[0]: CIDR "192.168.10.7/24" has bits set beyond the prefix length; using "192.168.10.0/24"`,
				`nodePortAddresses[1]: "192.168.10.0/24" is listed more than once`,
				`nodePortAddresses[2]: CIDR "127.0.0.1/8" has bits set beyond the prefix length; using "127.0.0.0/8"`,
				loopback("nodePortAddresses[2]", "127.0.0.0/8"),
			}},
		{name: "invalid entries skipped", entries: []string{"192.168.10.0/24", "bogus"}, served: ipv4Only,
			want: prefixes("192.168.10.0/24", "::/0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ClusterCIDR = "10.244.0.0/16,fd00:10:244::/56"
			c.NodePortAddresses = tt.entries
			if got := c.NodePortPrimary(); got != tt.primary {
				t.Errorf("NodePortPrimary() = %v, want %v", got, tt.primary)
			}
			if got := c.NodePortCIDRs(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NodePortCIDRs() = %v, want %v", got, tt.want)
			}
			if got := c.Warnings(tt.served); !reflect.DeepEqual(got, tt.warnings) {
				t.Errorf("Warnings(%v):\ngot  %q\nwant %q", tt.served, got, tt.warnings)
			}
		})
	}
}

func TestAllowedCIDRs(t *testing.T) {
	tests := []struct {
		name     string
		entries  []string
		want     []netip.Prefix
		warnings []string // for externalIPs; loadBalancerIPs' are the same with its path
	}{
		{name: "empty allows everything", entries: []string{}},
		{name: "nil allows everything", entries: nil},
		{name: "order kept", entries: []string{"2001:db8:203::/48", "203.0.113.0/24"}, want: prefixes("2001:db8:203::/48", "203.0.113.0/24")},
		{name: "host bits cleared, duplicates dropped", entries: []string{"203.0.113.9/24", "203.0.113.0/24"},
			want: prefixes("203.0.113.0/24"), warnings: []string{
				`@[0]: CIDR "203.0.113.9/24" has bits set beyond the prefix length; using "203.0.113.0/24"`,
				`@[1]: "203.0.113.0/24" is listed more than once`,
			}},
		{name: "loopback is not special here", entries: []string{"127.0.0.0/8"}, want: prefixes("127.0.0.0/8")},
		{name: "invalid entries skipped", entries: []string{"bogus", "203.0.113.0/24"}, want: prefixes("203.0.113.0/24")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, section := range []struct {
				path string
				set  func(c *Configuration)
				get  func(c *Configuration) []netip.Prefix
			}{
				{"externalIPs.allowedCIDRs", func(c *Configuration) { c.ExternalIPs.AllowedCIDRs = tt.entries },
					(*Configuration).AllowedExternalIPCIDRs},
				{"loadBalancerIPs.allowedCIDRs", func(c *Configuration) { c.LoadBalancerIPs.AllowedCIDRs = tt.entries },
					(*Configuration).AllowedLoadBalancerIPCIDRs},
				{"ipvs.excludeCIDRs", func(c *Configuration) { c.IPVS.ExcludeCIDRs = tt.entries },
					(*Configuration).ExcludedCIDRs},
			} {
				c := Default()
				c.ClusterCIDR = "10.244.0.0/16"
				section.set(c)
				if got := section.get(c); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("%s: prefixes = %v, want %v", section.path, got, tt.want)
				}
				var want []string
				for _, w := range tt.warnings {
					want = append(want, strings.Replace(w, "@", section.path, 1))
				}
				if got := c.Warnings(ipv4Only); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: Warnings() = %q, want %q", section.path, got, want)
				}
			}
		})
	}
}
