package config

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"
)

const configPath = "/etc/kube-ipvs/config.yaml"

// env is a fake process environment for Resolve.
type env struct {
	files    map[string]string
	vars     map[string]string
	hostname string
	hostErr  error
}

func (e env) readFile(name string) ([]byte, error) {
	if s, ok := e.files[name]; ok {
		return []byte(s), nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (e env) getenv(k string) string { return e.vars[k] }

func (e env) host() (string, error) { return e.hostname, e.hostErr }

// resolve parses args on a fresh FlagSet and resolves them in e.
func resolve(t *testing.T, args []string, e env) (*Configuration, *Flags, error) {
	t.Helper()
	fset := flag.NewFlagSet("kube-ipvs", flag.ContinueOnError)
	fset.SetOutput(new(bytes.Buffer))
	f := BindFlags(fset)
	if err := fset.Parse(args); err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	cfg, err := f.Resolve(e.readFile, e.getenv, e.host)
	return cfg, f, err
}

func withFile(doc string) env {
	return env{files: map[string]string{configPath: header + doc}, hostname: "host-a"}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  env
		// want changes Default() (with NodeName "host-a") into the expected
		// result; ignored when wantErr is set.
		want    func(c *Configuration)
		wantErr string
	}{
		{name: "no file, no flags", env: env{hostname: "host-a"}, want: func(c *Configuration) {}},
		{name: "file only", args: []string{"--config", configPath}, env: withFile("ipvs:\n  scheduler: wlc\n"),
			want: func(c *Configuration) { c.IPVS.Scheduler = "wlc" }},
		{name: "flag overrides file", args: []string{"--config", configPath, "--scheduler", "lc"},
			env:  withFile("ipvs:\n  scheduler: wlc\n"),
			want: func(c *Configuration) { c.IPVS.Scheduler = "lc" }},
		{name: "flag at its default value still overrides file", args: []string{"--scheduler=rr", "--config", configPath},
			env:  withFile("ipvs:\n  scheduler: wlc\n"),
			want: func(c *Configuration) {}},
		{name: "file value kept when flag not given", args: []string{"--config", configPath, "--log-level", "debug"},
			env: withFile("ipvs:\n  scheduler: wlc\n  syncPeriod: 1m\nlogging:\n  format: console\n"),
			want: func(c *Configuration) {
				c.IPVS.Scheduler, c.IPVS.SyncPeriod = "wlc", Duration{time.Minute}
				c.Logging = LoggingConfiguration{Level: "debug", Format: "console"}
			}},
		{name: "false flag overrides true in file", args: []string{"--config", configPath, "--masquerade-all=false"},
			env:  withFile("masqueradeAll: true\n"),
			want: func(c *Configuration) {}},
		{name: "empty flag overrides file", args: []string{"--config", configPath, "--cluster-cidr="},
			env:  withFile("clusterCIDR: 10.244.0.0/16\n"),
			want: func(c *Configuration) {}},
		{name: "every overriding flag", args: []string{
			"--kubeconfig=/root/.kube/config", "--api-server=https://192.0.2.10:6443", "--mode=dry-run", "--node-name=node-7",
			"--cluster-cidr=10.244.0.0/16,fd00:10:244::/56", "--masquerade-all", "--scheduler=sh",
			"--sync-period=2m", "--min-sync-period=0s", "--service-proxy-name=kube-ipvs",
			"--log-level=warn", "--log-format=console", "--nodeport-addresses=0.0.0.0/0", "--ipvs-strict-arp",
			"--healthz-bind-address=[::]:10256", "--metrics-bind-address=0.0.0.0:10249", "--ipvs-exclude-cidrs=10.96.200.0/24, fd00::/64",
		}, env: env{hostname: "host-a"}, want: func(c *Configuration) {
			c.NodePortAddresses, c.IPVS.StrictARP = []string{"0.0.0.0/0"}, true
			c.HealthzBind, c.MetricsBind = "[::]:10256", "0.0.0.0:10249"
			c.IPVS.ExcludeCIDRs = []string{"10.96.200.0/24", "fd00::/64"}
			c.Kubeconfig, c.Mode, c.NodeName = "/root/.kube/config", ModeDryRun, "node-7"
			c.APIServer = "https://192.0.2.10:6443"
			c.ClusterCIDR, c.MasqueradeAll = "10.244.0.0/16,fd00:10:244::/56", true
			c.IPVS.Scheduler, c.IPVS.SyncPeriod, c.IPVS.MinSyncPeriod = "sh", Duration{2 * time.Minute}, Duration{}
			c.ServiceProxyName = "kube-ipvs"
			c.Logging = LoggingConfiguration{Level: "warn", Format: "console"}
		}},
		{name: "node port addresses from the flag, spaces ignored", args: []string{"--nodeport-addresses", "192.168.10.0/24, 2001:db8:10::/64"},
			env:  env{hostname: "host-a"},
			want: func(c *Configuration) { c.NodePortAddresses = []string{"192.168.10.0/24", "2001:db8:10::/64"} }},
		{name: "node port addresses flag replaces the file's list", args: []string{"--config", configPath, "--nodeport-addresses=primary"},
			env:  withFile("nodePortAddresses: [10.0.0.0/8, 192.168.0.0/16]\n"),
			want: func(c *Configuration) {}},
		{name: "empty node port addresses flag: every address", args: []string{"--nodeport-addresses="},
			env: env{hostname: "host-a"}, want: func(c *Configuration) { c.NodePortAddresses = []string{} }},
		{name: "node port addresses flag given twice: the last wins", args: []string{"--nodeport-addresses=10.0.0.0/8", "--nodeport-addresses=192.168.0.0/16"},
			env: env{hostname: "host-a"}, want: func(c *Configuration) { c.NodePortAddresses = []string{"192.168.0.0/16"} }},
		{name: "strict ARP flag", args: []string{"--ipvs-strict-arp"}, env: env{hostname: "host-a"},
			want: func(c *Configuration) { c.IPVS.StrictARP = true }},
		{name: "strict ARP flag false overrides the file", args: []string{"--config", configPath, "--ipvs-strict-arp=false"},
			env: withFile("ipvs:\n  strictARP: true\n"), want: func(c *Configuration) {}},
		{name: "cleanup needs no file", args: []string{"--cleanup"}, env: env{hostname: "host-a"},
			want: func(c *Configuration) {}},
		{name: "hostname-override is kube-proxy's --node-name", args: []string{"--hostname-override= Worker-9 "},
			env: env{hostname: "host-a"}, want: func(c *Configuration) { c.NodeName = "worker-9" }},
		{name: "hostname-override overrides the file's nodeName", args: []string{"--config", configPath, "--hostname-override=worker-9"},
			env: withFile("nodeName: worker-1\n"), want: func(c *Configuration) { c.NodeName = "worker-9" }},
		{name: "hostname-override and node-name agreeing", args: []string{"--hostname-override=Worker-9", "--node-name=worker-9"},
			env: env{hostname: "host-a"}, want: func(c *Configuration) { c.NodeName = "worker-9" }},
		{name: "empty metrics address flag: not served", args: []string{"--metrics-bind-address="},
			env: env{hostname: "host-a"}, want: func(c *Configuration) { c.MetricsBind = "" }},
		{name: "exclude CIDRs flag replaces the file's list", args: []string{"--config", configPath, "--ipvs-exclude-cidrs="},
			env: withFile("ipvs:\n  excludeCIDRs: [10.96.200.0/24]\n"), want: func(c *Configuration) {}},

		{name: "missing file", args: []string{"--config", "/nope.yaml"}, env: env{hostname: "host-a"},
			wantErr: "reading --config: open /nope.yaml: file does not exist"},
		{name: "file not YAML", args: []string{"--config", configPath}, env: withFile("mode: [\n"),
			wantErr: configPath + ": parsing YAML: yaml: line 3: did not find expected node content"},
		{name: "bad flag value names the flag", args: []string{"--scheduler", "fifo", "--log-format=xml"},
			env: env{hostname: "host-a"},
			wantErr: `ipvs.scheduler (--scheduler): unsupported value "fifo": must be one of ` + schedulers + "\n" +
				`logging.format (--log-format): unsupported value "xml": must be one of "json", "console"`},
		{name: "bad node port addresses from the flag name the flag and the entry",
			args: []string{"--nodeport-addresses", "10.0.0.0/8,primary,,10.1.2.3"}, env: env{hostname: "host-a"},
			wantErr: strings.Join([]string{
				`nodePortAddresses[1] (--nodeport-addresses): invalid value "primary": must be the only entry (can't use both "primary" and CIDRs)`,
				`nodePortAddresses[2] (--nodeport-addresses): empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)`,
				`nodePortAddresses[3] (--nodeport-addresses): invalid CIDR "10.1.2.3": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`,
			}, "\n")},
		{name: "bad node port addresses from the file do not name the flag",
			args: []string{"--config", configPath}, env: withFile("nodePortAddresses: [Primary]\n"),
			wantErr: `nodePortAddresses[0]: invalid value "Primary": must be "primary", in lower case, or a CIDR`},
		{name: "flag corrects a bad file value", args: []string{"--config", configPath, "--mode", "ipvs"},
			env: withFile("mode: userspace\n"), want: func(c *Configuration) {}},
		{name: "min sync period from flag above sync period from file",
			args: []string{"--config", configPath, "--min-sync-period=20s"}, env: withFile("ipvs:\n  syncPeriod: 10s\n"),
			wantErr: `ipvs.minSyncPeriod (--min-sync-period): invalid value "20s": must not exceed ipvs.syncPeriod ("10s")`},
		{name: "file and flag errors together", args: []string{"--config", configPath, "--log-level=loud"},
			env: func() env {
				e := withFile("ipvs:\n  schedular: lc\n  syncPeriod: 3x\n")
				e.hostErr = errors.New("no uts")
				return e
			}(),
			wantErr: strings.Join([]string{
				`ipvs.schedular: unknown field`,
				`ipvs.syncPeriod: invalid duration "3x"`,
				`nodeName: not set, $NODE_NAME is empty and the hostname is unavailable: no uts`,
				`logging.level (--log-level): unsupported value "loud": must be one of "debug", "info", "warn", "error"`,
			}, "\n")},
		{name: "bad node name from flag, as resolved", args: []string{"--node-name", " Node_1 "}, env: env{hostname: "host-a"},
			wantErr: `nodeName (--node-name): invalid value "node_1": ` + subdomainMsg},
		{name: "hostname-override and node-name disagreeing", args: []string{"--node-name=worker-1", "--hostname-override=worker-2"},
			env:     env{hostname: "host-a"},
			wantErr: `nodeName (--node-name, --hostname-override): "worker-1" and "worker-2" differ: give one of them`},
		{name: "bad node name from hostname-override", args: []string{"--hostname-override=$(NODE_NAME)"}, env: env{hostname: "host-a"},
			wantErr: `nodeName (--hostname-override): invalid value "$(node_name)": ` + subdomainMsg},
		{name: "bad metrics address from flag", args: []string{"--metrics-bind-address=:10249"}, env: env{hostname: "host-a"},
			wantErr: `metricsBindAddress (--metrics-bind-address): invalid value ":10249": "" is not an IP address`},
		{name: "bad exclude CIDR from flag", args: []string{"--ipvs-exclude-cidrs=10.96.200.0/24,10.96.201.1"}, env: env{hostname: "host-a"},
			wantErr: `ipvs.excludeCIDRs[1] (--ipvs-exclude-cidrs): invalid CIDR "10.96.201.1": missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{name: "bad apiServer from flag", args: []string{"--api-server", "192.0.2.10:6443"}, env: env{hostname: "host-a"},
			wantErr: `apiServer (--api-server): invalid value "192.0.2.10:6443": must be a URL starting with https:// (or http://), like "https://192.0.2.10:6443"`},
		{name: "empty apiServer flag overrides file", args: []string{"--config", configPath, "--api-server="},
			env: withFile("apiServer: https://192.0.2.10:6443\n"), want: func(c *Configuration) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := resolve(t, tt.args, tt.env)
			if tt.wantErr != "" {
				if errText(err) != tt.wantErr {
					t.Fatalf("Resolve() error:\ngot:\n%s\nwant:\n%s", errText(err), tt.wantErr)
				}
				if got != nil {
					t.Errorf("Resolve() returned a configuration with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error: %v", err)
			}
			want := Default()
			want.NodeName = "host-a"
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve():\ngot  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestResolveNodeNameOrder(t *testing.T) {
	tests := []struct {
		name string
		args []string
		file string // nodeName in the file, if any
		env  env
		want string
	}{
		{"flag beats file, env and hostname", []string{"--node-name=from-flag"}, "from-file",
			env{vars: map[string]string{"NODE_NAME": "from-env"}, hostname: "from-host"}, "from-flag"},
		{"file beats env and hostname", nil, "from-file",
			env{vars: map[string]string{"NODE_NAME": "from-env"}, hostname: "from-host"}, "from-file"},
		{"env beats hostname", nil, "",
			env{vars: map[string]string{"NODE_NAME": "from-env"}, hostname: "from-host"}, "from-env"},
		{"hostname last", nil, "", env{hostname: "from-host"}, "from-host"},
		{"blank env is ignored", nil, "", env{vars: map[string]string{"NODE_NAME": "  "}, hostname: "from-host"}, "from-host"},
		// Every source is trimmed and lower-cased, as kube-proxy's GetHostname does.
		{"flag trimmed and lower-cased", []string{"--node-name= Worker-1.Example.COM "}, "",
			env{hostname: "from-host"}, "worker-1.example.com"},
		{"file trimmed and lower-cased", nil, `" Worker-2\t"`, env{hostname: "from-host"}, "worker-2"},
		{"env trimmed and lower-cased", nil, "",
			env{vars: map[string]string{"NODE_NAME": " Worker-3\n"}, hostname: "from-host"}, "worker-3"},
		{"hostname trimmed and lower-cased", nil, "", env{hostname: " Worker-4.Example.COM\n"}, "worker-4.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.env
			args := tt.args
			if tt.file != "" {
				e.files = map[string]string{configPath: header + "nodeName: " + tt.file + "\n"}
				args = append([]string{"--config", configPath}, args...)
			}
			cfg, _, err := resolve(t, args, e)
			if err != nil {
				t.Fatalf("Resolve() error: %v", err)
			}
			if cfg.NodeName != tt.want {
				t.Errorf("NodeName = %q, want %q", cfg.NodeName, tt.want)
			}
		})
	}
}

func TestResolveNodeName(t *testing.T) {
	noEnv := func(string) string { return "" }
	tests := []struct {
		name       string
		configured string
		getenv     func(string) string
		hostname   func() (string, error)
		want       string
		wantErr    string
	}{
		{"configured, nothing else asked", " Node-A ", nil, nil, "node-a", ""},
		{"env, hostname not asked", "", func(k string) string { return map[string]string{"NODE_NAME": "Node-B "}[k] }, nil, "node-b", ""},
		{"hostname", "", noEnv, func() (string, error) { return "Node-C", nil }, "node-c", ""},
		{"hostname fails", "", noEnv, func() (string, error) { return "", errors.New("boom") },
			"", "nodeName: not set, $NODE_NAME is empty and the hostname is unavailable: boom"},
		{"hostname empty", "", noEnv, func() (string, error) { return "", nil },
			"", "nodeName: not set, and both $NODE_NAME and the hostname are empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveNodeName(tt.configured, tt.getenv, tt.hostname)
			if got != tt.want || errText(err) != tt.wantErr {
				t.Errorf("ResolveNodeName() = %q, %q; want %q, %q", got, errText(err), tt.want, tt.wantErr)
			}
		})
	}
}

func TestFlagsCleanup(t *testing.T) {
	if _, f, err := resolve(t, []string{"--cleanup", "--config", configPath}, withFile("")); err != nil || !f.Cleanup() {
		t.Errorf("with --cleanup: Cleanup() = %v (%v), want true", f.Cleanup(), err)
	}
	if _, f, _ := resolve(t, nil, env{hostname: "h"}); f.Cleanup() {
		t.Errorf("without flags: Cleanup() = true, want false")
	}
}

func TestResolveBeforeParse(t *testing.T) {
	f := BindFlags(flag.NewFlagSet("kube-ipvs", flag.ContinueOnError))
	_, err := f.Resolve(env{}.readFile, env{}.getenv, env{hostname: "h"}.host)
	if want := "config: Resolve called before the flags were parsed"; errText(err) != want {
		t.Errorf("Resolve() error = %q, want %q", errText(err), want)
	}
}

// Every flag is registered, and each overriding one names its field and shows
// the built-in default in -help.
func TestFlagsUsage(t *testing.T) {
	fset := flag.NewFlagSet("kube-ipvs", flag.ContinueOnError)
	BindFlags(fset)
	var out bytes.Buffer
	fset.SetOutput(&out)
	fset.PrintDefaults()
	usage := out.String()
	for _, want := range []string{
		"-config string", "-cleanup\n",
		"(overrides kubeconfig)", "(overrides apiServer)", "(overrides mode) (default \"ipvs\")", "(overrides nodeName)",
		"(overrides clusterCIDR)", "(overrides masqueradeAll)", "(overrides ipvs.scheduler) (default \"rr\")",
		"(overrides ipvs.syncPeriod) (default 30s)", "(overrides ipvs.minSyncPeriod)",
		"(overrides serviceProxyName)", "(overrides logging.level) (default \"info\")",
		"(overrides logging.format) (default \"json\")",
		"-nodeport-addresses CIDRs\n", "(overrides nodePortAddresses) (default primary)", "(overrides ipvs.strictARP)\n",
		"(overrides healthzBindAddress) (default \"0.0.0.0:10256\")", "(overrides metricsBindAddress) (default \"127.0.0.1:10249\")",
		"-ipvs-exclude-cidrs CIDRs\n", "(overrides ipvs.excludeCIDRs)\n", "-hostname-override string\n", "(overrides nodeName)\n",
		"KubeProxyConfiguration",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
	var names []string
	fset.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	want := []string{"api-server", "cleanup", "cluster-cidr", "config", "healthz-bind-address", "hostname-override", "iptables-backend", "ipvs-exclude-cidrs",
		"ipvs-strict-arp", "kubeconfig", "log-format", "log-level", "masquerade-all", "metrics-bind-address", "min-sync-period", "mode",
		"node-name", "nodeport-addresses", "scheduler", "service-proxy-name", "sync-period", "take-over-from-kube-proxy", "virtual-server-metrics"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("flags = %q, want %q", names, want)
	}
}
