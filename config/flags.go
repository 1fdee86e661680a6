package config

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// Flags holds kube-ipvs' command-line flags. Create it with BindFlags before
// the FlagSet is parsed, and call Resolve after.
type Flags struct {
	fs         *flag.FlagSet
	configFile string
	cleanup    bool
	// hostnameOverride is --hostname-override, kube-proxy's name for
	// --node-name, which kubeadm's DaemonSet passes.
	hostnameOverride string
	// values is what the overriding flags write into; it starts as Default()
	// so that -help shows the built-in defaults.
	values    Configuration
	overrides map[string]override
}

// override is one flag that replaces one configuration field when, and only
// when, it was given on the command line.
type override struct {
	field string
	apply func(*Configuration)
}

// BindFlags registers every kube-ipvs flag on fs:
//
//	--config               path of the configuration file, a KubeIPVSConfiguration
//	                       or a KubeProxyConfiguration (default: none, built-in defaults)
//	--kubeconfig           kubeconfig
//	--api-server           apiServer
//	--mode                 mode
//	--node-name            nodeName
//	--hostname-override    nodeName, kube-proxy's name for --node-name
//	--cluster-cidr         clusterCIDR
//	--masquerade-all       masqueradeAll
//	--nodeport-addresses   nodePortAddresses, comma-separated
//	--healthz-bind-address healthzBindAddress
//	--metrics-bind-address metricsBindAddress
//	--virtual-server-metrics virtualServerMetrics
//	--take-over-from-kube-proxy takeOverFromKubeProxy
//	--iptables-backend     iptablesBackend
//	--scheduler            ipvs.scheduler
//	--sync-period          ipvs.syncPeriod
//	--min-sync-period      ipvs.minSyncPeriod
//	--ipvs-strict-arp      ipvs.strictARP
//	--ipvs-exclude-cidrs   ipvs.excludeCIDRs, comma-separated
//	--service-proxy-name   serviceProxyName
//	--log-level            logging.level
//	--log-format           logging.format
//	--cleanup              remove everything kube-ipvs made on the node, then exit
func BindFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs, values: *Default(), overrides: map[string]override{}}
	fs.StringVar(&f.configFile, "config", "",
		"path of the "+Kind+" YAML file, or of kube-proxy's "+KubeProxyKind+" (mode ipvs, as kubeadm's config.conf); "+
			"flags given on the command line override its values")
	fs.BoolVar(&f.cleanup, "cleanup", false,
		"remove every IPVS virtual server, address, interface, iptables chain and ipset kube-ipvs made on this node, then exit")

	bind(f, fs.StringVar, "kubeconfig", "kubeconfig", func(c *Configuration) *string { return &c.Kubeconfig },
		"path of a kubeconfig file; empty means the pod's ServiceAccount")
	bind(f, fs.StringVar, "api-server", "apiServer", func(c *Configuration) *string { return &c.APIServer },
		"the apiserver's URL (https://192.0.2.10:6443), replacing the server of the kubeconfig or of the in-cluster config, like kube-proxy's --master")
	bind(f, fs.StringVar, "mode", "mode", func(c *Configuration) *string { return &c.Mode },
		`"ipvs" programs the kernel; "dry-run" computes and logs the plan and never touches the kernel`)
	bind(f, fs.StringVar, "node-name", "nodeName", func(c *Configuration) *string { return &c.NodeName },
		"name of this node's Node object; empty means $NODE_NAME, then the hostname")
	fs.StringVar(&f.hostnameOverride, "hostname-override", "",
		"kube-proxy's name for --node-name, so that kubeadm's command line works (overrides nodeName)")
	f.overrides["hostname-override"] = override{field: "nodeName", apply: func(c *Configuration) { c.NodeName = f.hostnameOverride }}
	bind(f, fs.StringVar, "cluster-cidr", "clusterCIDR", func(c *Configuration) *string { return &c.ClusterCIDR },
		"comma-separated pod CIDRs, IPv4 and/or IPv6; traffic to a Service from outside them is masqueraded")
	bind(f, fs.BoolVar, "masquerade-all", "masqueradeAll", func(c *Configuration) *bool { return &c.MasqueradeAll },
		"masquerade all traffic to Services")
	bind(f, listVar(fs), "nodeport-addresses", "nodePortAddresses", func(c *Configuration) *[]string { return &c.NodePortAddresses },
		"comma-separated `CIDRs` of the local addresses NodePorts are served on, or \"primary\" for the Node's InternalIP addresses; empty means every local address")
	bind(f, fs.StringVar, "healthz-bind-address", "healthzBindAddress", func(c *Configuration) *string { return &c.HealthzBind },
		"IP:PORT of /healthz and /livez, as kube-proxy's (empty: none)")
	bind(f, fs.StringVar, "metrics-bind-address", "metricsBindAddress", func(c *Configuration) *string { return &c.MetricsBind },
		"IP:PORT of /metrics, as kube-proxy's (empty: none)")
	bind(f, fs.BoolVar, "virtual-server-metrics", "virtualServerMetrics", func(c *Configuration) *bool { return &c.VirtualServerMetrics },
		"export each virtual server's connection, packet and byte counters on /metrics, labelled with its Service (a set of series per virtual server)")
	bind(f, fs.BoolVar, "take-over-from-kube-proxy", "takeOverFromKubeProxy", func(c *Configuration) *bool { return &c.TakeOver },
		"adopt the virtual servers a stopped kube-proxy in IPVS mode left, without a cut, then remove the rest of its state")
	bind(f, fs.StringVar, "scheduler", "ipvs.scheduler", func(c *Configuration) *string { return &c.IPVS.Scheduler },
		"IPVS scheduler for every virtual server (rr wrr lc wlc lblc lblcr sh dh mh sed nq)")
	bind(f, fs.DurationVar, "sync-period", "ipvs.syncPeriod", func(c *Configuration) *time.Duration { return &c.IPVS.SyncPeriod.Duration },
		"interval of the full resync that reads the kernel back and repairs drift")
	bind(f, fs.DurationVar, "min-sync-period", "ipvs.minSyncPeriod", func(c *Configuration) *time.Duration { return &c.IPVS.MinSyncPeriod.Duration },
		"minimum interval between two syncs; changes in between are coalesced")
	bind(f, fs.BoolVar, "ipvs-strict-arp", "ipvs.strictARP", func(c *Configuration) *bool { return &c.IPVS.StrictARP },
		"set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2, so the node does not answer or announce ARP for Service addresses (MetalLB L2 needs it)")
	bind(f, listVar(fs), "ipvs-exclude-cidrs", "ipvs.excludeCIDRs", func(c *Configuration) *[]string { return &c.IPVS.ExcludeCIDRs },
		"comma-separated `CIDRs` of virtual servers kube-ipvs never adopts, changes or deletes")
	bind(f, fs.StringVar, "iptables-backend", "iptablesBackend", func(c *Configuration) *string { return &c.IPTablesBackend },
		"iptables backend for kube-ipvs' rules: legacy, nft, or auto (the one the node's rules already use)")
	bind(f, fs.StringVar, "service-proxy-name", "serviceProxyName", func(c *Configuration) *string { return &c.ServiceProxyName },
		"serve only Services labelled service.kubernetes.io/service-proxy-name=<this>; empty means only unlabelled ones")
	bind(f, fs.StringVar, "log-level", "logging.level", func(c *Configuration) *string { return &c.Logging.Level },
		"log level: debug, info, warn or error")
	bind(f, fs.StringVar, "log-format", "logging.format", func(c *Configuration) *string { return &c.Logging.Format },
		"log format: json or console")
	return f
}

// bind registers one overriding flag of type T (string, bool, duration) with
// define (fs.StringVar, …), shows the field it overrides in its usage, and
// records how to copy its value into a Configuration.
func bind[T any](f *Flags, define func(p *T, name string, value T, usage string),
	name, field string, get func(*Configuration) *T, usage string) {
	p := get(&f.values)
	define(p, name, *p, usage+" (overrides "+field+")")
	f.overrides[name] = override{field: field, apply: func(c *Configuration) { *get(c) = *p }}
}

// listVar returns a define function, for bind, of a flag that holds a
// comma-separated list: "a, b" is ["a" "b"] (spaces around entries are
// ignored), "" the empty list. Given twice, the last one wins.
func listVar(fs *flag.FlagSet) func(p *[]string, name string, value []string, usage string) {
	return func(p *[]string, name string, value []string, usage string) {
		*p = value
		fs.Var((*commaList)(p), name, usage)
	}
}

// commaList is a flag.Value of a comma-separated list.
type commaList []string

func (l *commaList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *commaList) Set(s string) error {
	*l = []string{}
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for entry := range strings.SplitSeq(s, ",") {
		*l = append(*l, strings.TrimSpace(entry))
	}
	return nil
}

// Cleanup reports whether --cleanup was given.
func (f *Flags) Cleanup() bool { return f.cleanup }

// Resolve builds the effective configuration, in this order of precedence:
// flags given on the command line, then the --config file, then Default().
// A flag left at its default never overrides the file. NodeName, when still
// empty, comes from ResolveNodeName. The result is validated.
//
// Every problem is reported at once (errors.Join of *FieldError): those of the
// file, a node name that cannot be found, and everything Validate finds; an
// error in a value that came from a flag names the flag too
// (`ipvs.scheduler (--scheduler): unsupported value …`). Only a file that
// cannot be read or is not YAML stops at once. A value in the file that a
// flag overrides is not validated (an unsupported scheduler there is not
// reported), but one the file cannot even decode (a bad duration, a wrong
// type, an unknown field) is, flag or not.
//
// main passes os.ReadFile, os.Getenv and os.Hostname; readFile is called only
// if --config is set, hostname only if it is needed.
func (f *Flags) Resolve(readFile func(string) ([]byte, error), getenv func(string) string,
	hostname func() (string, error)) (*Configuration, error) {
	if !f.fs.Parsed() {
		return nil, errors.New("config: Resolve called before the flags were parsed")
	}
	cfg := Default()
	var errs []error
	if f.configFile != "" {
		data, err := readFile(f.configFile)
		if err != nil {
			return nil, fmt.Errorf("reading --config: %w", err)
		}
		if cfg, errs, err = decode(data); err != nil {
			return nil, fmt.Errorf("%s: %w", f.configFile, err)
		}
	}
	fromFlag := map[string]string{}
	f.fs.Visit(func(fl *flag.Flag) {
		if o, ok := f.overrides[fl.Name]; ok {
			o.apply(cfg)
			fromFlag[o.field] = "--" + fl.Name
		}
	})
	if err := f.nodeNameConflict(); err != nil {
		errs = append(errs, err)
	}
	name, err := ResolveNodeName(cfg.NodeName, getenv, hostname)
	if err != nil {
		errs = append(errs, cfg.inFile(err))
	}
	cfg.NodeName = name
	for _, err := range cfg.validate() {
		if fe, ok := err.(*FieldError); ok && fromFlag[fieldOf(fe.Field)] != "" {
			err = &FieldError{Field: fe.Field + " (" + fromFlag[fieldOf(fe.Field)] + ")", Detail: fe.Detail}
		} else {
			err = cfg.inFile(err)
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// nodeNameConflict reports --node-name and --hostname-override given with
// different names; when they agree, or only one is given, it is nil. (When
// both are given, --node-name is the one applied.)
func (f *Flags) nodeNameConflict() error {
	var nodeName, override *flag.Flag
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "node-name":
			nodeName = fl
		case "hostname-override":
			override = fl
		}
	})
	if nodeName == nil || override == nil ||
		NormalizeNodeName(nodeName.Value.String()) == NormalizeNodeName(override.Value.String()) {
		return nil
	}
	return fieldErrorf("nodeName (--node-name, --hostname-override)", "%q and %q differ: give one of them",
		nodeName.Value.String(), override.Value.String())
}

// fieldOf returns the field of a path that may name an entry of a list:
// "nodePortAddresses[1]" is "nodePortAddresses".
func fieldOf(path string) string {
	field, _, _ := strings.Cut(path, "[")
	return field
}

// ResolveNodeName returns the name of this node's Node object: configured if
// set (from --node-name or the file's nodeName), else $NODE_NAME (set from
// the downward API's spec.nodeName in the DaemonSet), else the hostname.
// Whichever it is, it is trimmed and lower-cased (NormalizeNodeName), as
// kube-proxy's GetHostname does. The error is a *FieldError for "nodeName".
func ResolveNodeName(configured string, getenv func(string) string, hostname func() (string, error)) (string, error) {
	if name := NormalizeNodeName(configured); name != "" {
		return name, nil
	}
	if name := NormalizeNodeName(getenv("NODE_NAME")); name != "" {
		return name, nil
	}
	h, err := hostname()
	if err != nil {
		return "", fieldErrorf("nodeName", "not set, $NODE_NAME is empty and the hostname is unavailable: %v", err)
	}
	if name := NormalizeNodeName(h); name != "" {
		return name, nil
	}
	return "", fieldErrorf("nodeName", "not set, and both $NODE_NAME and the hostname are empty")
}

// NormalizeNodeName trims surrounding white space and lower-cases name:
// " Worker-1.Example.COM\n" is "worker-1.example.com", the name the kubelet
// registers.
func NormalizeNodeName(name string) string { return strings.ToLower(strings.TrimSpace(name)) }
