package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeproxy "k8s.io/kube-proxy/config/v1alpha1"
	kjson "sigs.k8s.io/json"
)

// kube-proxy v1.37's defaults, which its v1alpha1 defaulting
// (pkg/proxy/apis/config/v1alpha1, SetDefaults_KubeProxyConfiguration)
// gives a field left empty or zero. A field at one of them is not warned
// about.
const (
	kubeProxyHealthzPort       = 10256
	kubeProxyMetricsPort       = 10249
	kubeProxyMasqueradeBit     = 14
	kubeProxySyncPeriod        = 30 * time.Second
	kubeProxyMinSyncPeriod     = time.Second // iptables and nftables; ipvs.minSyncPeriod has none
	kubeProxyConfigSyncPeriod  = 15 * time.Minute
	kubeProxyOOMScoreAdj       = -999
	kubeProxyConntrackPerCore  = 32 * 1024
	kubeProxyConntrackMin      = 128 * 1024
	kubeProxyTCPEstablished    = 24 * time.Hour
	kubeProxyTCPCloseWait      = time.Hour
	kubeProxyContentType       = "application/vnd.kubernetes.protobuf"
	kubeProxyQPS               = 5
	kubeProxyBurst             = 10
	kubeProxyLogFlushFrequency = 5 * time.Second
)

// Values of KubeProxyConfiguration fields that kube-ipvs reads.
const (
	kubeProxyModeIPVS          = "ipvs"
	kubeProxyLocalClusterCIDR  = "ClusterCIDR"
	kubeProxyNodePortLocalhost = "localhost"
	kubeProxyNodePortAll       = "all"
)

// kubeProxyOrigin is what a Configuration read from a
// KubeProxyConfiguration remembers of it.
type kubeProxyOrigin struct {
	// unhonoured lists, sorted, the paths of the fields set to a value
	// kube-ipvs does not honour: one warning names them all.
	unhonoured []string
}

// warning is the one note about the unhonoured fields; "" when there are
// none or the file was not a KubeProxyConfiguration.
func (o *kubeProxyOrigin) warning() string {
	if o == nil || len(o.unhonoured) == 0 {
		return ""
	}
	return KubeProxyKind + " fields kube-ipvs does not honour: " + strings.Join(o.unhonoured, ", ") +
		"; they have no effect (see \"kube-proxy's configuration\" in the configuration reference)"
}

// kubeProxyPaths maps the Configuration fields that a KubeProxyConfiguration
// sets under another path to that path, so that an error names the field
// as the file spells it.
var kubeProxyPaths = map[string]string{
	"nodeName":      "hostnameOverride",
	"kubeconfig":    "clientConnection.kubeconfig",
	"masqueradeAll": "iptables.masqueradeAll",
	"masqueradeBit": "iptables.masqueradeBit",
}

// inFile renames the field of err to its path in the file the
// Configuration was read from; only a KubeProxyConfiguration has other
// paths than the Configuration's own.
func (c *Configuration) inFile(err error) error {
	fe, ok := err.(*FieldError)
	if !ok || c.kubeProxy == nil {
		return err
	}
	field, rest := fe.Field, ""
	if i := strings.IndexByte(field, '['); i >= 0 {
		field, rest = field[:i], field[i:]
	}
	if p, ok := kubeProxyPaths[field]; ok {
		return &FieldError{Field: p + rest, Detail: fe.Detail}
	}
	return err
}

// isKubeProxy reports whether the document claims to be kube-proxy's
// configuration: its kind is KubeProxyConfiguration or its apiVersion is
// in kube-proxy's group. decodeKubeProxy then checks the exact version.
func isKubeProxy(top map[string]json.RawMessage) bool {
	group, _, _ := strings.Cut(KubeProxyAPIVersion, "/")
	return stringMember(top, "kind") == KubeProxyKind ||
		strings.HasPrefix(stringMember(top, "apiVersion"), group+"/")
}

// stringMember returns the string at key, or "" when there is none.
func stringMember(top map[string]json.RawMessage, key string) string {
	var s string
	if raw, ok := top[key]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// decodeKubeProxy decodes raw, a JSON object, strictly into kube-proxy's
// published v1alpha1 type, as kube-proxy's own strict decoding does
// (sigs.k8s.io/json: case-sensitive keys, no unknown or duplicate field),
// and translates it (fromKubeProxy). With any problem the Configuration
// is Default() and the errors say what is wrong.
func decodeKubeProxy(raw json.RawMessage, top map[string]json.RawMessage) (*Configuration, []error) {
	var errs []error
	for _, id := range []struct{ key, want string }{{"apiVersion", KubeProxyAPIVersion}, {"kind", KubeProxyKind}} {
		switch got, ok := top[id.key]; {
		case !ok || isNull(got):
			errs = append(errs, fieldErrorf(id.key, "missing: must be %q", id.want))
		case stringMember(top, id.key) != id.want:
			errs = append(errs, fieldErrorf(id.key, "unsupported value %s: must be %q (kube-ipvs reads kube-proxy's %s %s)",
				abbreviate(got), id.want, KubeProxyAPIVersion, KubeProxyKind))
		}
	}
	if len(errs) > 0 {
		return Default(), errs
	}
	var kp kubeproxy.KubeProxyConfiguration
	strict, err := kjson.UnmarshalStrict(raw, &kp, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil || len(strict) > 0 {
		return Default(), kubeProxyDecodeErrors(top, strict, err)
	}
	return fromKubeProxy(&kp)
}

// kubeProxyDecodeErrors explains why the strict decoding failed, one error
// per field, from the same walk over the type as a KubeIPVSConfiguration's
// (unknown fields, with a hint for a case mismatch, and values that do not
// decode). Should that walk find nothing (it reads lists and maps of the
// type with encoding/json, which is laxer), the strict decoder's own
// errors are reported.
func kubeProxyDecodeErrors(top map[string]json.RawMessage, strict []error, err error) []error {
	var scratch kubeproxy.KubeProxyConfiguration
	if errs := decodeStruct("", top, reflect.ValueOf(&scratch).Elem()); len(errs) > 0 {
		return errs
	}
	var errs []error
	for _, e := range strict {
		if fp, ok := e.(interface{ FieldPath() string }); ok {
			kind, _, _ := strings.Cut(e.Error(), " \"")
			errs = append(errs, fieldErrorf(fp.FieldPath(), "%s", kind))
			continue
		}
		errs = append(errs, fieldErrorf("", "%v", e))
	}
	if err != nil {
		errs = append(errs, fieldErrorf("", "%v", err))
	}
	return errs
}

// fromKubeProxy translates kube-proxy's configuration into kube-ipvs',
// over Default(); the package documentation lists what each field
// becomes. The errors are the values kube-ipvs cannot honour safely;
// Validate checks the translated values afterwards.
func fromKubeProxy(kp *kubeproxy.KubeProxyConfiguration) (*Configuration, []error) {
	errs := kubeProxyRefusals(kp)
	c := Default()
	c.NodeName = kp.HostnameOverride
	c.Kubeconfig = kp.ClientConnection.Kubeconfig
	c.ClusterCIDR = kp.ClusterCIDR
	c.MasqueradeAll = kp.IPTables.MasqueradeAll
	c.MasqueradeBit = kubeProxyMasqueradeBit
	if kp.IPTables.MasqueradeBit != nil {
		c.MasqueradeBit = int(*kp.IPTables.MasqueradeBit)
	}
	healthzHost, metricsHost := "0.0.0.0", "127.0.0.1"
	if a, err := netip.ParseAddr(kp.BindAddress); err == nil && !a.Unmap().Is4() {
		healthzHost, metricsHost = "::", "::1"
	}
	c.HealthzBind = kubeProxyBindAddress(kp.HealthzBindAddress, healthzHost, kubeProxyHealthzPort)
	c.MetricsBind = kubeProxyBindAddress(kp.MetricsBindAddress, metricsHost, kubeProxyMetricsPort)
	nodePorts, npErrs := kubeProxyNodePorts(kp.NodePortAddresses, kp.BindAddress)
	errs = append(errs, npErrs...)
	if len(npErrs) == 0 {
		c.NodePortAddresses = nodePorts
	}
	c.IPVS = kubeProxyIPVS(kp.IPVS, c.IPVS)
	c.kubeProxy = &kubeProxyOrigin{unhonoured: kubeProxyUnhonoured(kp)}
	return c, errs
}

// kubeProxyIPVS translates the ipvs: section over def, kube-ipvs' defaults:
// a zero syncPeriod is kube-proxy's 30s, an empty scheduler its rr, and a
// zero minSyncPeriod stays 0 (kube-proxy gives it no default in IPVS mode:
// every change is synced at once).
func kubeProxyIPVS(in kubeproxy.KubeProxyIPVSConfiguration, def IPVSConfiguration) IPVSConfiguration {
	out := def
	if in.Scheduler != "" {
		out.Scheduler = in.Scheduler
	}
	out.SyncPeriod = Duration{kubeProxySyncPeriod}
	if in.SyncPeriod.Duration != 0 {
		out.SyncPeriod = Duration{in.SyncPeriod.Duration}
	}
	out.MinSyncPeriod = Duration{in.MinSyncPeriod.Duration}
	out.TCPTimeout = Duration{in.TCPTimeout.Duration}
	out.TCPFinTimeout = Duration{in.TCPFinTimeout.Duration}
	out.UDPTimeout = Duration{in.UDPTimeout.Duration}
	out.StrictARP = in.StrictARP
	if in.ExcludeCIDRs != nil {
		out.ExcludeCIDRs = slices.Clone(in.ExcludeCIDRs)
	}
	return out
}

// kubeProxyBindAddress is kube-proxy's defaulting of healthzBindAddress and
// metricsBindAddress: empty is host:port, an IP alone gets port, anything
// else is kept (for Validate to judge).
func kubeProxyBindAddress(addr, host string, port int) string {
	if addr == "" {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	if _, err := netip.ParseAddr(addr); err == nil {
		return net.JoinHostPort(addr, strconv.Itoa(port))
	}
	return addr
}

// kubeProxyRefusals returns an error for each field whose value kube-ipvs
// cannot honour safely, or that kube-proxy v1.37 itself refuses.
func kubeProxyRefusals(kp *kubeproxy.KubeProxyConfiguration) []error {
	var errs []error
	add := func(e *FieldError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	switch kp.Mode {
	case kubeProxyModeIPVS:
	case "":
		add(fieldErrorf("mode", `unsupported value "": kube-proxy's empty mode is iptables on Linux, `+
			`and kube-ipvs replaces only its IPVS mode: set mode: ipvs`))
	default:
		add(fieldErrorf("mode", "unsupported value %q: kube-ipvs replaces only kube-proxy's IPVS mode: set mode: ipvs", kp.Mode))
	}
	if m := kp.DetectLocalMode; m != "" && m != kubeProxyLocalClusterCIDR {
		add(fieldErrorf("detectLocalMode", "unsupported value %q: kube-ipvs tells pod traffic apart by clusterCIDR only, "+
			"so this mode would change which traffic is masqueraded and which reaches externalTrafficPolicy Local Services "+
			"as from a pod: use %q (or leave it empty) with clusterCIDR", m, kubeProxyLocalClusterCIDR))
	}
	if kp.BindAddressHardFail {
		add(fieldErrorf("bindAddressHardFail", "unsupported value true: kube-ipvs logs a healthz or metrics port "+
			"it cannot bind and keeps the data plane running; set it to false"))
	}
	if a := kp.BindAddress; a != "" {
		if _, err := netip.ParseAddr(a); err != nil {
			add(fieldErrorf("bindAddress", "invalid value %q: must be an IP address, like \"0.0.0.0\"", a))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(kp.FeatureGates)) {
		add(kubeProxyGates.refusal(name, kp.FeatureGates[name]))
	}
	return errs
}

// kubeProxyNodePorts translates nodePortAddresses, which in kube-proxy v1.37
// mixes CIDRs and the keywords primary, localhost and all, into kube-ipvs'
// list. Empty stays empty: every local address, kube-proxy's IPVS-mode
// default. "all" is 0.0.0.0/0 and ::/0, whatever else is listed (as
// kube-proxy, which then matches every address). "localhost" is
// 127.0.0.0/8 and ::1/128, which select no address in either (neither
// serves NodePorts on loopback in IPVS mode) but still restrict their
// family. "primary" works only alone, and not with a bindAddress that
// would be kube-proxy's primary IP.
func kubeProxyNodePorts(entries []string, bindAddress string) ([]string, []error) {
	const path = "nodePortAddresses"
	var (
		out      = []string{}
		errs     []error
		cidrs    cidrList
		all      bool
		primary  = -1
		keywords = map[string]bool{}
	)
	for i, e := range entries {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch e {
		case NodePortAddressesPrimary, kubeProxyNodePortLocalhost, kubeProxyNodePortAll:
			if keywords[e] {
				errs = append(errs, fieldErrorf(p, "duplicate value %q", e))
				continue
			}
			keywords[e] = true
		}
		switch e {
		case kubeProxyNodePortAll:
			all = true
		case NodePortAddressesPrimary:
			primary = i
		case kubeProxyNodePortLocalhost:
			out = append(out, "127.0.0.0/8", "::1/128")
		default:
			before := len(cidrs.errs)
			cidrs.add(p, e)
			if len(cidrs.errs) > before {
				fe := cidrs.errs[before].(*FieldError)
				errs = append(errs, &FieldError{Field: fe.Field, Detail: fe.Detail + `, or one of "primary", "localhost", "all"`})
				continue
			}
			out = append(out, e)
		}
	}
	switch {
	case len(errs) > 0:
		return nil, errs
	case all:
		return []string{allIPv4.String(), allIPv6.String()}, nil
	case primary >= 0 && len(entries) > 1:
		return nil, []error{fieldErrorf(fmt.Sprintf("%s[%d]", path, primary), `unsupported value "primary" with other entries: `+
			`kube-ipvs serves "primary" only alone; list the CIDRs of the node's addresses instead`)}
	case primary >= 0:
		if a, err := netip.ParseAddr(bindAddress); err == nil && !a.IsUnspecified() {
			return nil, []error{fieldErrorf("bindAddress", "unsupported value %q with nodePortAddresses [primary]: "+
				"kube-proxy then serves NodePorts on this address, kube-ipvs on the Node's InternalIP addresses; "+
				"write nodePortAddresses [%s] or leave bindAddress at 0.0.0.0", bindAddress, netip.PrefixFrom(a, a.BitLen()))}
		}
		return []string{NodePortAddressesPrimary}, nil
	}
	return out, nil
}

// kubeProxyUnhonoured lists, sorted, the paths of the fields set to a value
// other than empty, zero or kube-proxy's default that kube-ipvs does not
// honour. What kube-proxy ignores in IPVS mode (iptables.syncPeriod, the
// nftables and winkernel sections, …) is listed too: it has no effect.
func kubeProxyUnhonoured(kp *kubeproxy.KubeProxyConfiguration) []string {
	cc, ct, lg := kp.ClientConnection, kp.Conntrack, kp.Logging
	bind, _ := netip.ParseAddr(kp.BindAddress)
	checks := []struct {
		path string
		set  bool
	}{
		{"bindAddress", kp.BindAddress != "" && !bind.IsUnspecified()},
		{"clientConnection.acceptContentTypes", cc.AcceptContentTypes != ""},
		{"clientConnection.burst", cc.Burst != 0 && cc.Burst != kubeProxyBurst},
		{"clientConnection.contentType", cc.ContentType != "" && cc.ContentType != kubeProxyContentType},
		{"clientConnection.qps", cc.QPS != 0 && cc.QPS != kubeProxyQPS},
		{"configSyncPeriod", otherDuration(kp.ConfigSyncPeriod, kubeProxyConfigSyncPeriod)},
		{"conntrack.maxPerCore", otherInt32(ct.MaxPerCore, 0, kubeProxyConntrackPerCore)},
		{"conntrack.min", otherInt32(ct.Min, 0, kubeProxyConntrackMin)},
		{"conntrack.tcpBeLiberal", ct.TCPBeLiberal},
		{"conntrack.tcpCloseWaitTimeout", ct.TCPCloseWaitTimeout != nil && otherDuration(*ct.TCPCloseWaitTimeout, kubeProxyTCPCloseWait)},
		{"conntrack.tcpEstablishedTimeout", ct.TCPEstablishedTimeout != nil && otherDuration(*ct.TCPEstablishedTimeout, kubeProxyTCPEstablished)},
		{"conntrack.udpStreamTimeout", ct.UDPStreamTimeout.Duration != 0},
		{"conntrack.udpTimeout", ct.UDPTimeout.Duration != 0},
		{"detectLocal.bridgeInterface", kp.DetectLocal.BridgeInterface != ""},
		{"detectLocal.interfaceNamePrefix", kp.DetectLocal.InterfaceNamePrefix != ""},
		{"enableProfiling", kp.EnableProfiling},
		{"iptables.localhostNodePorts", kp.IPTables.LocalhostNodePorts != nil && !*kp.IPTables.LocalhostNodePorts},
		{"iptables.minSyncPeriod", otherDuration(kp.IPTables.MinSyncPeriod, kubeProxyMinSyncPeriod)},
		{"iptables.syncPeriod", otherDuration(kp.IPTables.SyncPeriod, kubeProxySyncPeriod)},
		{"logging.flushFrequency", otherDuration(lg.FlushFrequency.Duration, kubeProxyLogFlushFrequency)},
		{"logging.format", lg.Format != "" && lg.Format != "text"},
		{"logging.options.json.infoBufferSize", !lg.Options.JSON.InfoBufferSize.IsZero()},
		{"logging.options.json.splitStream", lg.Options.JSON.SplitStream},
		{"logging.options.text.infoBufferSize", !lg.Options.Text.InfoBufferSize.IsZero()},
		{"logging.options.text.splitStream", lg.Options.Text.SplitStream},
		{"logging.verbosity", lg.Verbosity != 0},
		{"logging.vmodule", len(lg.VModule) > 0},
		{"nftables.masqueradeAll", kp.NFTables.MasqueradeAll},
		{"nftables.masqueradeBit", otherInt32(kp.NFTables.MasqueradeBit, kubeProxyMasqueradeBit)},
		{"nftables.minSyncPeriod", otherDuration(kp.NFTables.MinSyncPeriod, kubeProxyMinSyncPeriod)},
		{"nftables.syncPeriod", otherDuration(kp.NFTables.SyncPeriod, kubeProxySyncPeriod)},
		{"oomScoreAdj", otherInt32(kp.OOMScoreAdj, kubeProxyOOMScoreAdj)},
		{"portRange", kp.PortRange != ""},
		{"showHiddenMetricsForVersion", kp.ShowHiddenMetricsForVersion != ""},
		{"windowsRunAsService", kp.WindowsRunAsService},
		{"winkernel.enableDSR", kp.Winkernel.EnableDSR},
		{"winkernel.forwardHealthCheckVip", kp.Winkernel.ForwardHealthCheckVip},
		{"winkernel.networkName", kp.Winkernel.NetworkName != ""},
		{"winkernel.rootHnsEndpointName", kp.Winkernel.RootHnsEndpointName != ""},
		{"winkernel.sourceVip", kp.Winkernel.SourceVip != ""},
	}
	var paths []string
	for _, c := range checks {
		if c.set {
			paths = append(paths, c.path)
		}
	}
	for name, on := range kp.FeatureGates {
		if kubeProxyGates.unhonoured(name, on) {
			paths = append(paths, "featureGates."+name)
		}
	}
	slices.Sort(paths)
	return paths
}

// otherDuration reports whether d is neither 0 (kube-proxy's "use the
// default") nor def.
func otherDuration(d metav1.Duration, def time.Duration) bool {
	return d.Duration != 0 && d.Duration != def
}

// otherInt32 reports whether p is set to none of the values in defaults.
func otherInt32(p *int32, defaults ...int32) bool {
	return p != nil && !slices.Contains(defaults, *p)
}

// gateRule is what kube-ipvs makes of one of kube-proxy v1.37's feature
// gates. A gate at its default is always accepted, silently.
type gateRule struct {
	def bool
	// refuse, when set, is why another value stops start-up.
	refuse string
	// honoured: kube-ipvs behaves as kube-proxy's IPVS mode does with
	// either value, so neither is warned about.
	honoured bool
}

// gateRules are the gates kube-proxy v1.37 reads, or that it registers
// from the component-base libraries it uses. Any other gate has no effect
// on kube-ipvs and is warned about when set.
type gateRules map[string]gateRule

const lockedGate = "it is locked to its default in Kubernetes v1.37, and kube-proxy refuses any other value"

var kubeProxyGates = gateRules{
	"AllowServiceExternalIPs": {def: true, refuse: "kube-ipvs always serves spec.externalIPs; " +
		"restrict them with externalIPs.allowedCIDRs (a KubeIPVSConfiguration) or the apiserver's DenyServiceExternalIPs admission plugin"},
	"KubeProxyIPVS":                       {def: true, refuse: "kube-proxy v1.37 then refuses mode ipvs"},
	"MultiCIDRServiceAllocator":           {def: true, refuse: lockedGate},
	"PreferSameTrafficDistribution":       {def: true, refuse: lockedGate},
	"WinDSR":                              {def: true, refuse: lockedGate},
	"WinOverlay":                          {def: true, refuse: lockedGate},
	"KubeProxyNFTablesLocalhostNodePorts": {def: false},
	"NFTablesNetlink":                     {def: true},
	"NativeHistograms":                    {def: true},
	"ComponentFlagz":                      {def: true, honoured: true}, // kube-ipvs serves no /flagz; false asks for none
	"ComponentStatusz":                    {def: true, honoured: true}, // nor /statusz
	"ContextualLogging":                   {def: true},
	"LoggingAlphaOptions":                 {def: false},
	"LoggingBetaOptions":                  {def: true},
}

// refusal is the error for gate name set to on, or nil.
func (r gateRules) refusal(name string, on bool) *FieldError {
	rule, known := r[name]
	if !known || on == rule.def || rule.refuse == "" {
		return nil
	}
	return fieldErrorf("featureGates."+name, "unsupported value %v: %s", on, rule.refuse)
}

// unhonoured reports whether gate name set to on is to be warned about:
// it is not at its default, not refused, and kube-ipvs does not follow it.
func (r gateRules) unhonoured(name string, on bool) bool {
	rule, known := r[name]
	if !known {
		return true
	}
	return on != rule.def && rule.refuse == "" && !rule.honoured
}
