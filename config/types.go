package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The document's type identity. A file must carry both, exactly.
const (
	APIVersion = "kube-ipvs.io/v1alpha1"
	Kind       = "KubeIPVSConfiguration"
)

// The type identity of kube-proxy's configuration file, which --config
// also reads (the key config.conf of kubeadm's ConfigMap
// kube-system/kube-proxy): the package documentation says how its fields
// map onto a Configuration.
const (
	KubeProxyAPIVersion = "kubeproxy.config.k8s.io/v1alpha1"
	KubeProxyKind       = "KubeProxyConfiguration"
)

// Values of Configuration.Mode.
const (
	// ModeIPVS programs the kernel: IPVS, the dummy interface, iptables, ipsets.
	ModeIPVS = "ipvs"
	// ModeDryRun computes every plan and logs it, and never writes to the kernel.
	ModeDryRun = "dry-run"
)

// Values of LoggingConfiguration.Level and .Format.
const (
	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"

	LogFormatJSON    = "json"
	LogFormatConsole = "console"
)

// Values of Configuration.IPTablesBackend.
const (
	// IPTablesBackendAuto uses the backend that already holds the node's
	// rules, as kube-proxy's iptables-wrapper decides.
	IPTablesBackendAuto   = "auto"
	IPTablesBackendLegacy = "legacy"
	IPTablesBackendNFT    = "nft"
)

// Modes, IPTablesBackends, LogLevels and LogFormats list the accepted
// values, in the order error messages show them.
var (
	Modes            = []string{ModeIPVS, ModeDryRun}
	IPTablesBackends = []string{IPTablesBackendAuto, IPTablesBackendLegacy, IPTablesBackendNFT}
	LogLevels        = []string{LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError}
	LogFormats       = []string{LogFormatJSON, LogFormatConsole}
)

// Configuration is the whole of kube-ipvs' configuration, as read from the
// YAML file given with --config and overridden by explicit flags. The package
// documentation describes every field. The zero value is not useful: start
// from Default or Load.
type Configuration struct {
	APIVersion           string                       `json:"apiVersion"`
	Kind                 string                       `json:"kind"`
	Mode                 string                       `json:"mode"`
	NodeName             string                       `json:"nodeName"`
	Kubeconfig           string                       `json:"kubeconfig"`
	APIServer            string                       `json:"apiServer"`
	ServiceProxyName     string                       `json:"serviceProxyName"`
	ClusterCIDR          string                       `json:"clusterCIDR"`
	ServiceCIDRs         []string                     `json:"serviceCIDRs"`
	MasqueradeAll        bool                         `json:"masqueradeAll"`
	MasqueradeBit        int                          `json:"masqueradeBit"`
	NodePortAddresses    []string                     `json:"nodePortAddresses"`
	HealthzBind          string                       `json:"healthzBindAddress"`
	MetricsBind          string                       `json:"metricsBindAddress"`
	VirtualServerMetrics bool                         `json:"virtualServerMetrics"`
	TakeOver             bool                         `json:"takeOverFromKubeProxy"`
	IPTablesBackend      string                       `json:"iptablesBackend"`
	IPVS                 IPVSConfiguration            `json:"ipvs"`
	ExternalIPs          ExternalIPsConfiguration     `json:"externalIPs"`
	LoadBalancerIPs      LoadBalancerIPsConfiguration `json:"loadBalancerIPs"`
	Egress               EgressConfiguration          `json:"egress"`
	Ingress              IngressConfiguration         `json:"ingress"`
	Logging              LoggingConfiguration         `json:"logging"`

	// kubeProxy is set when the file was kube-proxy's
	// KubeProxyConfiguration (see kubeproxy.go), nil otherwise.
	kubeProxy *kubeProxyOrigin
}

// NodePortAddressesPrimary is the value of NodePortAddresses, alone, that
// means the Node's InternalIP addresses, as kube-proxy's
// `--nodeport-addresses primary`.
const NodePortAddressesPrimary = "primary"

// IPVSConfiguration is the `ipvs:` section.
type IPVSConfiguration struct {
	Scheduler     string   `json:"scheduler"`
	SyncPeriod    Duration `json:"syncPeriod"`
	MinSyncPeriod Duration `json:"minSyncPeriod"`
	TCPTimeout    Duration `json:"tcpTimeout"`
	TCPFinTimeout Duration `json:"tcpFinTimeout"`
	UDPTimeout    Duration `json:"udpTimeout"`
	DrainTimeout  Duration `json:"drainTimeout"`
	StrictARP     bool     `json:"strictARP"`
	ExcludeCIDRs  []string `json:"excludeCIDRs"`
}

// ExternalIPsConfiguration is the `externalIPs:` section: which addresses
// a Service's spec.externalIPs may take; see AllowedExternalIPCIDRs.
type ExternalIPsConfiguration struct {
	AllowedCIDRs []string `json:"allowedCIDRs"`
}

// LoadBalancerIPsConfiguration is the `loadBalancerIPs:` section: which
// addresses a Service's status.loadBalancer.ingress[].ip may take; see
// AllowedLoadBalancerIPCIDRs.
type LoadBalancerIPsConfiguration struct {
	AllowedCIDRs []string `json:"allowedCIDRs"`
}

// EgressConfiguration is the `egress:` section: what pods send out of the
// node. See EgressNonMasqueradeCIDRs and EgressDenyCIDRs.
type EgressConfiguration struct {
	Masquerade bool `json:"masquerade"`
	// NonMasqueradeCIDRs nil (left out, or null) means the default list;
	// [] means none.
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs"`
	DenyCIDRs          []string `json:"denyCIDRs"`
}

// IngressConfiguration is the `ingress:` section: what reaches the node's
// NodePorts, load-balancer IPs and external IPs. See IngressDenySourceCIDRs.
type IngressConfiguration struct {
	DenySourceCIDRs []string `json:"denySourceCIDRs"`
}

// LoggingConfiguration is the `logging:` section.
type LoggingConfiguration struct {
	Level  string `json:"level"`
	Format string `json:"format"`
}

// Default returns the configuration used for every field a file or flag does
// not set. It passes Validate; NodeName is left empty for ResolveNodeName.
func Default() *Configuration {
	return &Configuration{
		APIVersion:        APIVersion,
		Kind:              Kind,
		Mode:              ModeIPVS,
		MasqueradeBit:     14,
		NodePortAddresses: []string{NodePortAddressesPrimary},
		HealthzBind:       "0.0.0.0:10256",
		MetricsBind:       "127.0.0.1:10249",
		ServiceCIDRs:      []string{},
		IPTablesBackend:   IPTablesBackendAuto,
		IPVS: IPVSConfiguration{
			Scheduler:     "rr",
			SyncPeriod:    Duration{30 * time.Second},
			MinSyncPeriod: Duration{0},
			DrainTimeout:  Duration{15 * time.Minute},
			ExcludeCIDRs:  []string{},
		},
		ExternalIPs:     ExternalIPsConfiguration{AllowedCIDRs: []string{}},
		LoadBalancerIPs: LoadBalancerIPsConfiguration{AllowedCIDRs: []string{}},
		Egress:          EgressConfiguration{DenyCIDRs: []string{}},
		Ingress:         IngressConfiguration{DenySourceCIDRs: []string{}},
		Logging: LoggingConfiguration{
			Level:  LogLevelInfo,
			Format: LogFormatJSON,
		},
	}
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("30s", "1m30s", "500ms"), never as a number of nanoseconds.
type Duration struct {
	time.Duration
}

var (
	_ json.Marshaler   = Duration{}
	_ json.Unmarshaler = (*Duration)(nil)
)

// MarshalJSON writes the duration as a quoted string ("1m0s").
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(d.Duration.String())), nil
}

// UnmarshalJSON reads a duration string. A bare number is refused, because
// "syncPeriod: 30" would otherwise silently mean 30 nanoseconds. The error
// carries the bad value but no field name: the decoder adds it.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("invalid duration %s: must be a string with a unit, like \"30s\"", abbreviate(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}

// abbreviate renders raw JSON for an error message, cut to a readable length.
func abbreviate(raw []byte) string {
	const limit = 60
	s := string(raw)
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
