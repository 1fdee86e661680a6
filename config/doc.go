// Package config is kube-ipvs' versioned configuration: the YAML file given
// with --config, its defaults, its validation, and the command-line flags
// that override it.
//
// The effective configuration is built by Flags.Resolve in this order:
// Default(), then the fields the file sets, then the flags given on the
// command line (a flag left out never overrides the file). Problems are all
// reported at once, each naming the field's path and quoting the bad value:
//
//	ipvs.schedular: unknown field
//	ipvs.syncPeriod: invalid duration "3x"
//	mode: unsupported value "userspace": must be one of "ipvs", "dry-run"
//	ipvs.scheduler (--scheduler): unsupported value "fifo": must be one of "rr", …
//
// config/example.yaml shows every field with its default.
//
// # Document
//
// The file is YAML, decoded through the JSON field names below
// (sigs.k8s.io/yaml). Keys are case-sensitive; an unknown key, at any depth,
// is an error. A field left out, or set to null, keeps its default. Durations
// are Go duration strings ("30s", "1m30s", "500ms"); a bare number is an
// error, not nanoseconds. Lists are YAML sequences ("[10.0.0.0/8,
// fd00::/64]", or one "- " line per entry); an empty list, [], is not the
// same as leaving the field out. An error in a list's entry names it by
// index, from 0: "nodePortAddresses[1]: invalid CIDR …".
//
// # Fields
//
// apiVersion (required): must be "kube-ipvs.io/v1alpha1".
//
// kind (required): must be "KubeIPVSConfiguration".
//
// mode (default "ipvs", flag --mode): "ipvs" programs the kernel (IPVS
// virtual servers, VIPs on the dummy interface, iptables rules and ipsets).
// "dry-run" watches the cluster, computes every plan and logs it, and never
// touches the kernel.
//
// nodeName (default "", flag --node-name): the name of this node's Node
// object. When empty, $NODE_NAME is used (the DaemonSet sets it from the
// downward API, spec.nodeName), then the hostname. Whichever is used is
// trimmed and lower-cased, as kube-proxy does (NormalizeNodeName), and must
// then be a valid Node name (an RFC 1123 subdomain).
//
// kubeconfig (default "", flag --kubeconfig): path of a kubeconfig file to
// reach the API server. Empty means the pod's ServiceAccount: the token and
// CA in /var/run/secrets/kubernetes.io/serviceaccount/, as client-go's
// in-cluster config reads them. A path that does not exist stops start-up
// with an error naming it. deploy/ sets it to
// /var/lib/kube-proxy/kubeconfig.conf, the key kubeconfig.conf of kubeadm's
// ConfigMap kube-system/kube-proxy, which names the control-plane endpoint
// and the pod's ServiceAccount token.
//
// apiServer (default "", flag --api-server): the apiserver's URL,
// "https://192.0.2.10:6443", like kube-proxy's --master. It replaces the
// server of whatever credentials are used: the kubeconfig file if set, else
// the pod's ServiceAccount. Set it where kube-ipvs is the only proxy and no
// kubeconfig names the apiserver: with both empty, the in-cluster config
// dials the kubernetes Service's ClusterIP ($KUBERNETES_SERVICE_HOST), which
// works only while another proxy serves it (a warning says so at start-up).
// It must be an https (or http) URL with a host and no credentials, query or
// fragment.
//
// serviceProxyName (default "", flag --service-proxy-name): kube-ipvs serves
// only the Services (and their EndpointSlices) labelled
// service.kubernetes.io/service-proxy-name=<this>. Empty means only those
// without that label, as kube-proxy does. When set it must be a valid label
// value.
//
// clusterCIDR (default "", flag --cluster-cidr): the cluster's pod CIDRs,
// comma-separated, IPv4 and/or IPv6 ("10.244.0.0/16,fd00:10:244::/56");
// spaces around entries are ignored. Traffic to a Service from a source
// outside them is masqueraded. Each entry is parsed as Kubernetes validates
// new CIDR fields: leading zeros ("010.0.0.0/8"), IPv4-mapped IPv6 addresses
// and IPv6 zones are refused. Bits set beyond the prefix length
// ("10.244.1.0/16") are accepted and cleared, with a warning (see
// Configuration.Warnings); the parsed list is Configuration.ClusterCIDRs.
// The agent serves IPv4 only today: a clusterCIDR with no IPv4 prefix is
// warned about at start-up, and IPv4 Services are then treated as with no
// clusterCIDR (only what the node sends from a ClusterIP is masqueraded).
//
// masqueradeAll (default false, flag --masquerade-all): masquerade every
// packet to a Service, whatever its source.
//
// masqueradeBit (default 14): the bit of the packet mark (fwmark) that flags
// a packet for masquerade, 0 to 31 but 13. 14 is mark 0x4000, the same as
// kube-proxy, like `iptables -j MARK --or-mark 0x4000`. Bit 13 belongs to
// the firewall marks 0x2000-0x3fff of the short-circuit virtual servers
// (externalTrafficPolicy Local, reached from pods or the node); a lower
// bit makes the marks that have it unused.
//
// healthzBindAddress (default "0.0.0.0:10256", flag
// --healthz-bind-address): where /healthz and /livez are served, as
// kube-proxy's healthzBindAddress, with kube-proxy's answers: 200, or 503
// once a change has waited more than 2 × ipvs.syncPeriod for a successful
// sync; /healthz also 503 while this Node is not known, is being deleted or
// carries the ToBeDeletedByClusterAutoscaler taint. IP:PORT, or empty for
// none. A port that cannot be bound is logged; the data plane runs on.
//
// nodePortAddresses (default ["primary"], flag --nodeport-addresses,
// comma-separated): the local addresses NodePorts are served on, as
// kube-proxy's nodePortAddresses. Either the single entry "primary", the
// Node object's InternalIP addresses of the family served (kube-proxy's
// default in nftables mode; its IPVS mode defaults to every local
// address), or a list of CIDRs, IPv4 and/or IPv6: a local address inside
// one of them serves NodePorts ("192.168.10.0/24", "0.0.0.0/0" for every
// IPv4 address). "primary" mixed with CIDRs is an error, as in kube-proxy.
// A family the list has no CIDR of is served on every local address of
// that family, and an empty list ([], or --nodeport-addresses=) on every
// local address, both as kube-proxy does; the start-up warnings say so.
// The addresses on kube-ipvs' dummy interface are never NodePort
// addresses, nor are loopback addresses: a CIDR inside 127.0.0.0/8, or
// ::1/128, is accepted with a warning that it selects nothing. CIDRs are
// parsed as clusterCIDR's entries. Configuration.NodePortPrimary and
// Configuration.NodePortCIDRs give the parsed value.
//
// ipvs.scheduler (default "rr", flag --scheduler): the scheduler of every
// virtual server, like `ipvsadm -A -t VIP:PORT -s rr`: one of rr wrr lc wlc
// lblc lblcr sh dh mh sed nq (ipvs.Schedulers). The kernel module of the
// scheduler (ip_vs_rr, …) must be available.
//
// ipvs.syncPeriod (default "30s", flag --sync-period): the interval of the
// full resync, which reads the kernel back and repairs drift. Must be
// greater than 0.
//
// ipvs.minSyncPeriod (default "1s", flag --min-sync-period): the minimum
// interval between two syncs; changes that arrive in a burst are coalesced
// into one sync. From 0 to ipvs.syncPeriod.
//
// ipvs.tcpTimeout, ipvs.tcpFinTimeout, ipvs.udpTimeout (default "0s"): IPVS
// connection timeouts, like `ipvsadm --set TCP TCPFIN UDP`. 0 leaves the
// kernel's value. Whole seconds, from 0 to MaxIPVSTimeout (the kernel refuses
// more than INT_MAX/HZ seconds).
//
// ipvs.drainTimeout (default "15m"): a TCP or SCTP real server whose
// endpoint left the Service stays at weight 0 until its ActiveConn and
// InActConn reach 0 (checked at each full resync) or this long has passed;
// UDP real servers are deleted at once and their conntrack entries removed.
// 0 means no drain: delete at once. Must be 0 or greater; need not be whole
// seconds.
//
// ipvs.strictARP (default false, flag --ipvs-strict-arp): set
// net.ipv4.conf.all.arp_ignore=1 and net.ipv4.conf.all.arp_announce=2 at
// start-up, as kube-proxy's ipvs.strictARP does, so that the node neither
// answers ARP for the Service addresses on its dummy interface nor uses
// them as the source of its own ARP requests. MetalLB in L2 mode needs it:
// otherwise every node answers for a LoadBalancer IP. It changes ARP for
// the whole node (a reply only for an address of the interface asked on);
// false leaves both sysctls as they are, and cleanup never resets them.
//
// externalIPs.allowedCIDRs (default [], no flag): the CIDRs a Service's
// spec.externalIPs may lie in, IPv4 and/or IPv6. An external IP outside
// all of them is not programmed; the rest of the Service still is. Empty
// allows every address, as kube-proxy does. Anyone who may create a
// Service may write any address in spec.externalIPs and capture the
// traffic the cluster's nodes send to it (CVE-2020-8554); list the
// addresses your operators hand out. To refuse external IPs altogether,
// enable the apiserver's DenyServiceExternalIPs admission plugin. CIDRs
// are parsed as clusterCIDR's entries; Configuration.AllowedExternalIPCIDRs
// gives the parsed list.
//
// loadBalancerIPs.allowedCIDRs (default [], no flag): the CIDRs a
// Service's status.loadBalancer.ingress[].ip may lie in; one outside all
// of them is not programmed. Empty allows every address, as kube-proxy
// does. Whoever may update a Service's status can otherwise point a
// LoadBalancer IP at any address (CVE-2020-8554 again). The check is on
// the address, not on who wrote it: the Service does not reliably say who
// set its status (the manager in managedFields is whatever name the client
// chose), while the operator knows the pools the load-balancer controller
// (MetalLB, a cloud controller) allocates from, so list those pools.
// Configuration.AllowedLoadBalancerIPCIDRs gives the parsed list.
//
// logging.level (default "info", flag --log-level): debug, info, warn or
// error.
//
// logging.format (default "json", flag --log-format): json (one JSON object
// per line) or console (human-readable).
//
// # Flags without a field
//
// --config names the file; without it, the built-in defaults and the flags
// are used. --cleanup removes everything kube-ipvs made on the node (its IPVS
// virtual servers, VIPs and dummy interface, iptables chains and jump rules,
// ipsets) and exits; see Flags.Cleanup.
package config
