package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
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
	_, cidrErrs, _ := parseClusterCIDR(c.ClusterCIDR)
	errs = append(errs, cidrErrs...)
	if c.MasqueradeBit < 0 || c.MasqueradeBit > 31 {
		add(fieldErrorf("masqueradeBit", "invalid value %d: must be between 0 and 31", c.MasqueradeBit))
	}
	errs = append(errs, c.IPVS.validate("ipvs")...)
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
	return errs
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

// ClusterCIDRs returns the prefixes of ClusterCIDR, masked to their network
// address ("10.244.1.0/16" gives 10.244.0.0/16), in the order written and
// without duplicates. Entries that do not parse are skipped: call it after
// Validate has passed. An empty ClusterCIDR gives nil.
func (c *Configuration) ClusterCIDRs() []netip.Prefix {
	prefixes, _, _ := parseClusterCIDR(c.ClusterCIDR)
	return prefixes
}

// Warnings returns notes about values that are accepted but probably not
// what was meant, for an agent serving the IP families in served: a cluster
// CIDR with host bits set or listed twice, no clusterCIDR at all, or none of
// a served family (like kube-proxy's "no cluster CIDR specified for primary
// IP family"). The last two are left out under masqueradeAll, which does not
// read clusterCIDR. They are meant to be logged at start-up; nil when there
// is nothing to say.
func (c *Configuration) Warnings(served []v1.IPFamily) []string {
	prefixes, _, warnings := parseClusterCIDR(c.ClusterCIDR)
	if c.MasqueradeAll {
		return warnings
	}
	if len(prefixes) == 0 {
		return append(warnings, "clusterCIDR is empty: only traffic the node sends from a ClusterIP is masqueraded; "+
			"set clusterCIDR (or masqueradeAll) so clients outside the pod network get answers")
	}
	for _, family := range served {
		if !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return prefixFamily(p) == family }) {
			warnings = append(warnings, fmt.Sprintf("clusterCIDR %q has no %s prefix, and kube-ipvs serves %s: "+
				"for %s Services it is as if clusterCIDR were empty (only traffic the node sends from a ClusterIP is masqueraded); "+
				"add the %s pod CIDR", c.ClusterCIDR, family, family, family, family))
		}
	}
	return warnings
}

func prefixFamily(p netip.Prefix) v1.IPFamily {
	if p.Addr().Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

// parseClusterCIDR splits the comma-separated list (spaces around entries are
// ignored) and parses each entry strictly, as Kubernetes validates new CIDR
// fields: no leading zeros ("010.0.0.0/8"), no IPv4-mapped IPv6, no zone.
// Host bits beyond the prefix length are accepted with a warning.
func parseClusterCIDR(s string) (prefixes []netip.Prefix, errs []error, warnings []string) {
	const path = "clusterCIDR"
	if strings.TrimSpace(s) == "" {
		return nil, nil, nil
	}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			errs = append(errs, fieldErrorf(path, "invalid value %q: empty entry in the list", s))
			continue
		}
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			errs = append(errs, fieldErrorf(path, "invalid CIDR %q: %s", entry, cidrReason(entry, err)))
			continue
		}
		if p.Addr().Is4In6() {
			errs = append(errs, fieldErrorf(path, "invalid CIDR %q: must not have an IPv4-mapped IPv6 address", entry))
			continue
		}
		masked := p.Masked()
		if masked != p {
			warnings = append(warnings, fmt.Sprintf("%s: CIDR %q has bits set beyond the prefix length; using %q", path, entry, masked))
		}
		if slices.Contains(prefixes, masked) {
			warnings = append(warnings, fmt.Sprintf("%s: %q is listed more than once", path, masked))
			continue
		}
		prefixes = append(prefixes, masked)
	}
	return prefixes, errs, warnings
}

// cidrReason explains why netip.ParsePrefix refused entry, in fewer words
// than its error, which repeats the input twice.
func cidrReason(entry string, err error) string {
	i := strings.LastIndexByte(entry, '/')
	if i < 0 {
		return "missing the /prefix-length (like 10.244.0.0/16 or fd00:10:244::/56)"
	}
	addrPart, bitsPart := entry[:i], entry[i+1:]
	addr, aerr := netip.ParseAddr(addrPart)
	if aerr != nil {
		return strings.TrimPrefix(aerr.Error(), "ParseAddr("+strconv.Quote(addrPart)+"): ")
	}
	if addr.Zone() != "" {
		return "must not have an IPv6 zone"
	}
	bitLen := addr.BitLen()
	if bits, berr := strconv.Atoi(bitsPart); berr != nil || bits < 0 || bits > bitLen || bitsPart != strconv.Itoa(bits) {
		return fmt.Sprintf("prefix length %q must be a number from 0 to %d", bitsPart, bitLen)
	}
	return err.Error()
}
