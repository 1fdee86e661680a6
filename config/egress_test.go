package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestEgressLists(t *testing.T) {
	tests := []struct {
		name                   string
		file                   string
		nonMasq, deny, sources []netip.Prefix
	}{
		{
			name:    "defaults: the cluster, the Services and link-local keep their source",
			file:    "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\nserviceCIDRs: [10.96.0.0/12]\n",
			nonMasq: prefixes("10.244.0.0/16", "fd00:10:244::/56", "10.96.0.0/12", "169.254.0.0/16", "fe80::/10"),
		},
		{
			name:    "defaults without any CIDR: link-local only",
			nonMasq: prefixes("169.254.0.0/16", "fe80::/10"),
		},
		{
			name:    "null is the default",
			file:    "clusterCIDR: 10.244.0.0/16\negress: {nonMasqueradeCIDRs: null}\n",
			nonMasq: prefixes("10.244.0.0/16", "169.254.0.0/16", "fe80::/10"),
		},
		{
			name: "an empty list keeps nothing",
			file: "clusterCIDR: 10.244.0.0/16\negress: {nonMasqueradeCIDRs: []}\n",
		},
		{
			name:    "a service CIDR inside the cluster CIDR's list once",
			file:    "clusterCIDR: 10.244.0.0/16\nserviceCIDRs: [10.244.0.0/16]\n",
			nonMasq: prefixes("10.244.0.0/16", "169.254.0.0/16", "fe80::/10"),
		},
		{
			name:    "lists as written, masked, a /0 in halves",
			file:    "egress:\n  nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.1.7/24]\n  denyCIDRs: [169.254.169.254/32, 0.0.0.0/0]\ningress:\n  denySourceCIDRs: ['::/0', 203.0.113.0/24]\n",
			nonMasq: prefixes("10.0.0.0/8", "192.168.1.0/24"),
			deny:    prefixes("169.254.169.254/32", "0.0.0.0/1", "128.0.0.0/1"),
			sources: prefixes("::/1", "8000::/1", "203.0.113.0/24"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load([]byte("apiVersion: kube-ipvs.io/v1alpha1\nkind: KubeIPVSConfiguration\n" + tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.EgressNonMasqueradeCIDRs(); !slices.Equal(got, tt.nonMasq) {
				t.Errorf("EgressNonMasqueradeCIDRs = %v, want %v", got, tt.nonMasq)
			}
			if got := c.EgressDenyCIDRs(); !slices.Equal(got, tt.deny) {
				t.Errorf("EgressDenyCIDRs = %v, want %v", got, tt.deny)
			}
			if got := c.IngressDenySourceCIDRs(); !slices.Equal(got, tt.sources) {
				t.Errorf("IngressDenySourceCIDRs = %v, want %v", got, tt.sources)
			}
		})
	}
}

func TestEgressValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Configuration)
		want   string
	}{
		{"masquerade with a cluster CIDR", func(c *Configuration) { c.Egress.Masquerade, c.ClusterCIDR = true, "10.244.0.0/16" }, ""},
		{"masquerade without a cluster CIDR", func(c *Configuration) { c.Egress.Masquerade = true },
			"egress.masquerade: invalid value true: needs clusterCIDR, the pod CIDRs whose traffic is masqueraded"},
		{"bad deny CIDR", func(c *Configuration) { c.Egress.DenyCIDRs = []string{"169.254.169.254/32", "169.254.169.254"} },
			`egress.denyCIDRs[1]: invalid CIDR "169.254.169.254": missing the /prefix-length`},
		{"bad source CIDR", func(c *Configuration) { c.Ingress.DenySourceCIDRs = []string{"203.0.113.0/33"} },
			`ingress.denySourceCIDRs[0]: invalid CIDR "203.0.113.0/33": prefix length "33" must be a number from 0 to 32`},
		{"bad non-masquerade CIDR", func(c *Configuration) { c.Egress.NonMasqueradeCIDRs = []string{""} },
			`egress.nonMasqueradeCIDRs[0]: empty entry: must be a CIDR (like 10.244.0.0/16 or fd00:10:244::/56)`},
		{"bad service CIDR", func(c *Configuration) { c.ServiceCIDRs = []string{"010.96.0.0/12"} },
			`serviceCIDRs[0]: invalid CIDR "010.96.0.0/12"`},
		{"bad backend", func(c *Configuration) { c.IPTablesBackend = "nftables" },
			`iptablesBackend: unsupported value "nftables": must be one of "auto", "legacy", "nft"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			got := errText(c.Validate())
			if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEgressWarnings(t *testing.T) {
	c := Default()
	c.ClusterCIDR = "10.244.0.0/16"
	c.ServiceCIDRs = []string{"10.96.0.0/12"}
	c.Egress.DenyCIDRs = []string{"10.0.0.0/8", "169.254.169.254/32", "169.254.169.254/32"}
	c.Ingress.DenySourceCIDRs = []string{"10.244.3.0/24"}
	got := strings.Join(c.Warnings(nil), "\n")
	for _, want := range []string{
		`egress.denyCIDRs[2]: "169.254.169.254/32" is listed more than once`,
		"egress.denyCIDRs: 10.0.0.0/8 overlaps the cluster's 10.244.0.0/16: pods cannot reach what lies in both",
		"egress.denyCIDRs: 10.0.0.0/8 overlaps the cluster's 10.96.0.0/12",
		"ingress.denySourceCIDRs: 10.244.3.0/24 overlaps the cluster CIDR 10.244.0.0/16",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, "169.254.169.254/32 overlaps") {
		t.Errorf("the metadata address is not in the cluster; got:\n%s", got)
	}
}

func TestEgressWarnsWhenPodsWouldBeMasqueradedToPods(t *testing.T) {
	c := Default()
	c.ClusterCIDR = "10.244.0.0/16,10.245.0.0/16"
	c.Egress.Masquerade = true
	c.Egress.NonMasqueradeCIDRs = []string{"10.244.0.0/15", "fd00::/8"}
	if got := strings.Join(c.Warnings(nil), "\n"); strings.Contains(got, "does not hold") {
		t.Errorf("10.244.0.0/15 holds both cluster CIDRs; got:\n%s", got)
	}
	c.Egress.NonMasqueradeCIDRs = []string{"10.244.0.0/16"}
	want := "egress.nonMasqueradeCIDRs does not hold the cluster CIDR 10.245.0.0/16: with egress.masquerade, pods reaching pods on other nodes are masqueraded"
	if got := strings.Join(c.Warnings(nil), "\n"); !strings.Contains(got, want) || strings.Contains(got, "10.244.0.0/16: with") {
		t.Errorf("warnings:\n%s\nwant %q only", got, want)
	}
	c.Egress.Masquerade = false
	if got := strings.Join(c.Warnings(nil), "\n"); strings.Contains(got, "does not hold") {
		t.Errorf("without egress.masquerade the list is not used; got:\n%s", got)
	}
}
