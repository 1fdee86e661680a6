package config

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// leafPaths lists the document paths of every scalar field of t
// ("ipvs.syncPeriod"), in declaration order.
func leafPaths(t reflect.Type, prefix string) []string {
	var paths []string
	for i := range t.NumField() {
		name, ok := jsonName(t.Field(i))
		if !ok {
			continue
		}
		p := joinPath(prefix, name)
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			paths = append(paths, leafPaths(ft, p)...)
			continue
		}
		paths = append(paths, p)
	}
	return paths
}

func allPaths() []string { return leafPaths(reflect.TypeFor[Configuration](), "") }

func TestExampleLoadsToDefault(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(data)
	if err != nil {
		t.Fatalf("Load(example.yaml): %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("example.yaml:\ngot  %+v\nwant %+v", got, Default())
	}
}

// example.yaml sets every field, so that it documents them all.
func TestExampleSetsEveryField(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, path := range allPaths() {
		// A key written as null counts (egress.nonMasqueradeCIDRs: null is
		// its default); a missing one does not.
		var node any = doc
		present := true
		for key := range strings.SplitSeq(path, ".") {
			m, _ := node.(map[string]any)
			node, present = m[key]
		}
		if !present {
			t.Errorf("example.yaml does not set %s", path)
		}
	}
}

// doc.go documents every field: it feeds the README's reference.
func TestDocMentionsEveryField(t *testing.T) {
	data, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, path := range allPaths() {
		if !strings.Contains(doc, " "+path+" (") && !strings.Contains(doc, " "+path+", ") {
			t.Errorf("doc.go has no entry for %s", path)
		}
	}
}

// What Marshal writes, Load reads back to the same configuration.
func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.NodeName, c.ClusterCIDR, c.MasqueradeAll = "node-1", "10.244.0.0/16", true
	c.IPVS.TCPTimeout.Duration = 900e9
	c.IPVS.StrictARP = true
	c.NodePortAddresses = []string{"192.168.10.0/24", "2001:db8:10::/64"}
	c.ExternalIPs.AllowedCIDRs = []string{"203.0.113.0/24"}
	c.MetricsBind, c.IPVS.ExcludeCIDRs = "", []string{"10.96.200.0/24"}
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "tcpTimeout: 15m0s\n") || !strings.Contains(string(data), "loadBalancerIPs:\n  allowedCIDRs: []\n") {
		t.Errorf("Marshal wrote durations as:\n%s", data)
	}
	back, err := Load(data)
	if err != nil {
		t.Fatalf("Load(Marshal()): %v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", back, c)
	}
}

func TestLeafPaths(t *testing.T) {
	want := []string{
		"apiVersion", "kind", "mode", "nodeName", "kubeconfig", "apiServer", "serviceProxyName", "clusterCIDR", "serviceCIDRs",
		"masqueradeAll", "masqueradeBit", "nodePortAddresses", "healthzBindAddress", "metricsBindAddress", "virtualServerMetrics", "takeOverFromKubeProxy", "iptablesBackend",
		"ipvs.scheduler", "ipvs.syncPeriod", "ipvs.minSyncPeriod",
		"ipvs.tcpTimeout", "ipvs.tcpFinTimeout", "ipvs.udpTimeout", "ipvs.drainTimeout", "ipvs.strictARP", "ipvs.excludeCIDRs",
		"externalIPs.allowedCIDRs", "loadBalancerIPs.allowedCIDRs",
		"egress.masquerade", "egress.nonMasqueradeCIDRs", "egress.denyCIDRs", "ingress.denySourceCIDRs", "logging.level", "logging.format",
	}
	if got := allPaths(); !reflect.DeepEqual(got, want) {
		t.Errorf("paths = %q, want %q", got, want)
	}
}
