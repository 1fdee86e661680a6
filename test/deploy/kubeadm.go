package deploy

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// What kubeadm leaves on a cluster for kube-proxy, which deploy/ reuses:
// ConfigMap kube-system/kube-proxy, whose key kubeconfig.conf the DaemonSet
// mounts at /var/lib/kube-proxy.
const (
	KubeProxyConfigMap  = "kube-proxy"
	KubeProxyKubeconfig = "kubeconfig.conf"
	// ServiceAccountDir is where kubelet mounts a pod's ServiceAccount
	// token and the cluster's CA, which kubeconfig.conf names.
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// KubeadmKubeProxyConfigMap is ConfigMap kube-system/kube-proxy as `kubeadm
// init` writes it for a control-plane endpoint server
// ("https://192.0.2.10:6443"): kubeconfig.conf names the server and the
// pod's ServiceAccount token and CA files; config.conf is kube-proxy's own
// configuration, byte for byte what kubeadm v1.37 writes for a pod subnet
// 10.244.0.0/16 and mode ipvs (config/testdata/kubeadm-v1.37-config.conf,
// whose README says how it was made), which `kube-ipvs --config` can read.
func KubeadmKubeProxyConfigMap(server string) *corev1.ConfigMap {
	kubeconfig := KubeadmKubeconfig(server, ServiceAccountDir)
	proxyConfig := `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ipvs
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""`
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: KubeProxyConfigMap, Namespace: "kube-system",
			Labels: map[string]string{"app": "kube-proxy"},
		},
		Data: map[string]string{KubeProxyKubeconfig: kubeconfig, "config.conf": proxyConfig},
	}
}

// KubeadmKubeconfig is key kubeconfig.conf of that ConfigMap: the server,
// and the ServiceAccount token and CA files in saDir.
func KubeadmKubeconfig(server, saDir string) string {
	return `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: ` + saDir + `/ca.crt
    server: ` + server + `
  name: default
contexts:
- context:
    cluster: default
    namespace: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: ` + saDir + `/token
`
}
