package config

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
)

// MaxIPVSTimeout is the largest IPVS connection timeout accepted. The kernel
// refuses (EINVAL) a timeout above INT_MAX/HZ seconds; this is that bound for
// HZ=1000, the largest common tick rate, so it is safe on every kernel.
const MaxIPVSTimeout = 2147483 * time.Second

// Validate checks every field and returns all problems at once, joined with
// errors.Join; each is a *FieldError that names the field and quotes the bad
// value, like `ipvs.scheduler: unsupported value "fifo": must be one of "rr",
// …`. An empty NodeName is valid here (Flags.Resolve fills it in); a set one
// must be a valid Node name once trimmed and lower-cased (NormalizeNodeName).
func (c *Configuration) Validate() error {
	return errors.Join(c.validate()...)
}

func (c *Configuration) validate() []error {
	var errs []error
	add := func(e *FieldError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	add(checkExact("apiVersion", c.APIVersion, APIVersion))
	add(checkExact("kind", c.Kind, Kind))
	add(checkOneOf("mode", c.Mode, Modes))
	if c.NodeName != "" {
		if msgs := content.IsDNS1123Subdomain(NormalizeNodeName(c.NodeName)); len(msgs) > 0 {
			add(fieldErrorf("nodeName", "invalid value %q: %s", c.NodeName, strings.Join(msgs, "; ")))
		}
	}
	add(checkAPIServer("apiServer", c.APIServer))
	if c.ServiceProxyName != "" {
		add(checkK8s("serviceProxyName", c.ServiceProxyName, content.IsLabelValue))
	}
	errs = append(errs, parseClusterCIDR(c.ClusterCIDR).errs...)
	switch {
	case c.MasqueradeBit < 0 || c.MasqueradeBit > 31:
		add(fieldErrorf("masqueradeBit", "invalid value %d: must be between 0 and 31", c.MasqueradeBit))
	case c.MasqueradeBit == 13:
		// Bit 13 flags the firewall marks of short-circuit virtual servers
		// (0x2000-0x3fff); the bits below it are skipped when handing them out.
		add(fieldErrorf("masqueradeBit", "invalid value 13: kube-ipvs' firewall marks 0x2000-0x3fff all have bit 13"))
	}
	errs = append(errs, parseNodePortAddresses(c.NodePortAddresses).errs...)
	add(checkBindAddress("healthzBindAddress", c.HealthzBind, "0.0.0.0:10256"))
	add(checkBindAddress("metricsBindAddress", c.MetricsBind, "127.0.0.1:10249"))
	errs = append(errs, c.IPVS.validate("ipvs")...)
	errs = append(errs, parseCIDRs(pathExternalIPs, c.ExternalIPs.AllowedCIDRs).errs...)
	errs = append(errs, parseCIDRs(pathLoadBalancerIPs, c.LoadBalancerIPs.AllowedCIDRs).errs...)
	add(checkOneOf("iptablesBackend", c.IPTablesBackend, IPTablesBackends))
	errs = append(errs, c.validateEgress()...)
	add(checkOneOf("logging.level", c.Logging.Level, LogLevels))
	add(checkOneOf("logging.format", c.Logging.Format, LogFormats))
	return errs
}

func (c *IPVSConfiguration) validate(path string) []error {
	var errs []error
	add := func(e *FieldError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	add(checkOneOf(path+".scheduler", c.Scheduler, ipvs.Schedulers))
	sync, minSync := c.SyncPeriod.Duration, c.MinSyncPeriod.Duration
	if sync <= 0 {
		add(fieldErrorf(path+".syncPeriod", "invalid value %q: must be greater than 0", sync))
	}
	switch {
	case minSync < 0:
		add(fieldErrorf(path+".minSyncPeriod", "invalid value %q: must be 0 or greater", minSync))
	case sync > 0 && minSync > sync:
		add(fieldErrorf(path+".minSyncPeriod", "invalid value %q: must not exceed %s.syncPeriod (%q)", minSync, path, sync))
	}
	add(checkTimeout(path+".tcpTimeout", c.TCPTimeout.Duration))
	add(checkTimeout(path+".tcpFinTimeout", c.TCPFinTimeout.Duration))
	add(checkTimeout(path+".udpTimeout", c.UDPTimeout.Duration))
	if d := c.DrainTimeout.Duration; d < 0 {
		add(fieldErrorf(path+".drainTimeout", "invalid value %q: must be 0 or greater", d))
	}
	return append(errs, parseCIDRs(path+".excludeCIDRs", c.ExcludeCIDRs).errs...)
}

// checkAPIServer accepts what kube-proxy's --master accepts: empty, or an
// http or https URL that names a host ("https://192.0.2.10:6443").
func checkAPIServer(path, s string) *FieldError {
	if s == "" {
		return nil
	}
	const like = `like "https://192.0.2.10:6443"`
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "https" && u.Scheme != "http"):
		return fieldErrorf(path, "invalid value %q: must be a URL starting with https:// (or http://), %s", s, like)
	case u.Host == "" || u.Hostname() == "":
		return fieldErrorf(path, "invalid value %q: must name the apiserver's host, %s", s, like)
	case u.User != nil:
		return fieldErrorf(path, "invalid value %q: must not hold credentials: they come from kubeconfig or the ServiceAccount", s)
	case u.RawQuery != "" || u.Fragment != "":
		return fieldErrorf(path, "invalid value %q: must have no query or fragment, %s", s, like)
	}
	return nil
}

// checkBindAddress accepts "" (nothing served) or IP:PORT, like
// "0.0.0.0:10256" or "[::]:10256"; like is the example the error shows.
func checkBindAddress(path, s, like string) *FieldError {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fieldErrorf(path, "invalid value %q: must be IP:PORT, like %q, or empty", s, like)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fieldErrorf(path, "invalid value %q: %q is not an IP address", s, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fieldErrorf(path, "invalid value %q: port %q must be a number from 0 to 65535", s, port)
	}
	return nil
}

// checkTimeout accepts what `ipvsadm --set TCP TCPFIN UDP` accepts: whole
// seconds from 0 (keep the kernel's value) to MaxIPVSTimeout.
func checkTimeout(path string, d time.Duration) *FieldError {
	switch {
	case d < 0:
		return fieldErrorf(path, "invalid value %q: must be 0 or greater", d)
	case d%time.Second != 0:
		return fieldErrorf(path, "invalid value %q: must be a whole number of seconds", d)
	case d > MaxIPVSTimeout:
		return fieldErrorf(path, "invalid value %q: must be at most %q", d, MaxIPVSTimeout)
	}
	return nil
}

func checkExact(path, got, want string) *FieldError {
	if got == want {
		return nil
	}
	return fieldErrorf(path, "unsupported value %q: must be %q", got, want)
}

func checkOneOf(path, got string, allowed []string) *FieldError {
	if slices.Contains(allowed, got) {
		return nil
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	return fieldErrorf(path, "unsupported value %q: must be one of %s", got, strings.Join(quoted, ", "))
}

// checkK8s runs one of Kubernetes' own validators (label value, DNS subdomain).
func checkK8s(path, value string, validator func(string) []string) *FieldError {
	if msgs := validator(value); len(msgs) > 0 {
		return fieldErrorf(path, "invalid value %q: %s", value, strings.Join(msgs, "; "))
	}
	return nil
}
