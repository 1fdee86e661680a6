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
// The file may instead be kube-proxy's own, a KubeProxyConfiguration such
// as the key config.conf of kubeadm's ConfigMap kube-system/kube-proxy:
// see "kube-proxy's configuration" below.
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
// serviceCIDRs (default [], no flag): the cluster's Service CIDRs (the
// apiserver's --service-cluster-ip-range), IPv4 and/or IPv6, parsed as
// clusterCIDR's entries. The node accepts each IPv4 one whole by one local
// route on kipvs0 (`local 10.96.0.0/12 dev kipvs0 table local`), so a
// ClusterIP inside it is not bound as an address of its own, and a new
// connection to any address of it that is not a ClusterIP virtual server
// is rejected (kubernetes#72236). kipvs0 then also holds each such CIDR's
// network address (10.96.0.0/32), because the kernel deletes a link's IPv4
// routes with its last IPv4 address. Empty: every ClusterIP is bound on
// kipvs0. Also part of the default egress.nonMasqueradeCIDRs.
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
// metricsBindAddress (default "127.0.0.1:10249", flag
// --metrics-bind-address): where /metrics (Prometheus) is served, as
// kube-proxy's metricsBindAddress, on loopback by default as kube-proxy
// does ("0.0.0.0:10249" serves every address). IP:PORT, or empty for
// none, checked as healthzBindAddress.
//
// virtualServerMetrics (default false, flag --virtual-server-metrics):
// also export, on /metrics, the kernel's counters of every virtual server
// kube-ipvs programs (kube_ipvs_virtual_server_connections_total,
// _packets_total and _bytes_total by direction), labelled with the
// Service's namespace, name and port name and the virtual server. Off by
// default: that is five series per virtual server.
//
// iptablesBackend (default "auto", flag --iptables-backend): which
// iptables kube-ipvs writes its rules with, "legacy" (iptables-legacy, the
// x_tables kernel API) or "nft" (iptables-nft, nf_tables). "auto" uses the
// one the node already uses, as kube-proxy's image decides with
// iptables-wrapper: the backend holding kubelet's KUBE-IPTABLES-HINT or
// KUBE-KUBELET-CANARY chain, else the one holding more rules. Both
// backends' rules apply to every packet, in an order the kernel does not
// promise, so kube-ipvs' rules belong beside the CNI's.
//
// takeOverFromKubeProxy (default false, flag --take-over-from-kube-proxy):
// take the node over from kube-proxy's IPVS mode, stopped but with its
// state still in the kernel, without interrupting a connection. The first
// full syncs adopt kube-proxy's virtual servers (on an address of
// kube-ipvs0, or on one of its NodePorts) for the Services kube-ipvs
// serves, editing a different scheduler or flag in place, so their
// connections and counters go on; bind the VIPs on kipvs0 too; and put
// kube-ipvs' rules ahead of kube-proxy's. Once a full sync has programmed
// every Service, kube-proxy's other virtual servers (not those in
// ipvs.excludeCIDRs), the jumps to its chains, its chains, its ipsets and
// kube-ipvs0 are removed. Afterwards it changes nothing: leaving it on is
// harmless. kube-proxy must not run meanwhile.
//
// nodePortAddresses (default ["primary"], flag --nodeport-addresses,
// comma-separated): the local addresses NodePorts are served on, as
// kube-proxy's nodePortAddresses. Either the single entry "primary", the
// Node object's InternalIP addresses of the family served (kube-proxy's
// default in nftables mode; its IPVS mode defaults to every local
// address), or a list of CIDRs, IPv4 and/or IPv6: a local address inside
// one of them serves NodePorts ("192.168.10.0/24", "0.0.0.0/0" for every
// IPv4 address). "primary" mixed with CIDRs is an error (kube-proxy v1.37
// accepts the mix, and its keywords "localhost" and "all": see "kube-proxy's
// configuration" for how a KubeProxyConfiguration's list translates).
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
// ipvs.minSyncPeriod (default "0s", flag --min-sync-period): the minimum
// interval between two syncs; changes that arrive meanwhile are coalesced
// into one sync. From 0 to ipvs.syncPeriod. An incremental sync costs what
// changed, and the changes that come while one runs make the next, so 0
// (as kube-proxy v1.37's IPVS mode) programs each change at once.
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
// ipvs.excludeCIDRs (default [], flag --ipvs-exclude-cidrs,
// comma-separated): CIDRs, IPv4 and/or IPv6. A virtual server whose
// address lies inside one of them is never adopted, changed or deleted by
// kube-ipvs, whoever made it, like kube-proxy's ipvs.excludeCIDRs, which
// keeps its IPVS mode's cleanup off them: list the addresses of the
// virtual servers that keepalived, or another load balancer on the node,
// programs ("10.96.200.0/24"). CIDRs are parsed as clusterCIDR's entries;
// Configuration.ExcludedCIDRs gives the parsed list.
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
// egress.masquerade (default false, no flag): masquerade (SNAT to the
// address of the interface it leaves by) what a pod, a source inside
// clusterCIDR, sends to a destination outside egress.nonMasqueradeCIDRs,
// like ip-masq-agent. Off by default because most CNIs do it themselves
// (Flannel's ipMasq, Calico's natOutgoing, Weave Net's own rule): turn
// one of them off, never run both. Needs clusterCIDR. The destinations
// live in the ipset KIPVS-EGRESS-KEEP, so the rules stay the same
// whatever the list holds.
//
// egress.nonMasqueradeCIDRs (default: clusterCIDR, serviceCIDRs and
// link-local, 169.254.0.0/16 and fe80::/10): the destinations whose
// traffic from pods keeps the pod's address under egress.masquerade.
// Left out (or null) means that default; [] means none, every destination
// outside the node is masqueraded. ip-masq-agent's default list is the
// private ranges (RFC 1918 and others) instead: list them here to keep
// its behaviour; under egress.masquerade a list that leaves out a cluster
// CIDR is warned about (pods reaching pods on other nodes would be
// masqueraded). A /0 is stored as its two halves. The effective list is
// Configuration.EgressNonMasqueradeCIDRs.
//
// egress.denyCIDRs (default [], no flag): destinations pods may not
// reach, like the cloud metadata address [169.254.169.254/32]. A new
// connection the node forwards to one of them (routed from a pod, or
// through IPVS) is rejected with an ICMP "administratively prohibited";
// what the node's own processes send (host-network pods included) is not
// affected. The list is the ipset KIPVS-EGRESS-DENY; the rules stay
// the same whatever it holds. A CIDR that overlaps clusterCIDR or
// serviceCIDRs is warned about.
//
// ingress.denySourceCIDRs (default [], no flag): sources whose packets to
// this node's NodePorts, load-balancer IPs and external IPs are dropped,
// before IPVS and before a Service's loadBalancerSourceRanges. Traffic
// to ClusterIPs is not affected, nor is what the node itself sends. The
// list is the ipset KIPVS-DENY-SOURCES.
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
// ipsets) and exits; see Flags.Cleanup. --hostname-override is kube-proxy's
// name for --node-name, so that kubeadm's command line works; given both,
// they must agree.
//
// # kube-proxy's configuration
//
// --config also reads kube-proxy's configuration file, apiVersion
// "kubeproxy.config.k8s.io/v1alpha1", kind "KubeProxyConfiguration" (the
// document's apiVersion or kind chooses). On a kubeadm cluster that is the
// key config.conf of the ConfigMap kube-system/kube-proxy: mount the
// ConfigMap at /var/lib/kube-proxy, as kubeadm's kube-proxy DaemonSet does,
// and give kube-ipvs kubeadm's command line:
//
//	kube-ipvs --config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)
//
// The file is decoded with kube-proxy's published type
// (k8s.io/kube-proxy/config/v1alpha1), strictly, as kube-proxy first tries
// to: keys are case-sensitive, and an unknown or duplicate field, at any
// depth, is an error naming it ("ipvs.schedular: unknown field"), where
// kube-proxy would log it and decode again leniently. Errors name fields as
// the file spells them ("iptables.masqueradeBit: invalid value 13: …").
// Flags override the result as they override a KubeIPVSConfiguration. The
// fields kube-proxy has no counterpart of (apiServer, serviceProxyName,
// serviceCIDRs, iptablesBackend, ipvs.drainTimeout, externalIPs,
// loadBalancerIPs, egress, ingress, logging) keep kube-ipvs' defaults;
// use their flags, or a KubeIPVSConfiguration.
//
// Honoured: each of these fields becomes the kube-ipvs field shown, with
// kube-proxy v1.37's default (pkg/proxy/apis/config/v1alpha1) where it is
// left empty or zero, as kubeadm leaves most of them:
//
//	mode                          must be "ipvs" (see below)
//	hostnameOverride              nodeName; empty: $NODE_NAME, then the hostname
//	clientConnection.kubeconfig   kubeconfig
//	clusterCIDR                   clusterCIDR
//	detectLocalMode               "" or "ClusterCIDR" only: pods are told apart by clusterCIDR
//	iptables.masqueradeAll        masqueradeAll (kube-proxy's IPVS mode reads the iptables section)
//	iptables.masqueradeBit        masqueradeBit; null: 14
//	healthzBindAddress            healthzBindAddress; empty: 0.0.0.0:10256, an IP alone gets :10256
//	metricsBindAddress            metricsBindAddress; empty: 127.0.0.1:10249, an IP alone gets :10249
//	bindAddress                   0.0.0.0, :: or empty; :: makes the two defaults above [::]:10256 and [::1]:10249
//	nodePortAddresses             nodePortAddresses (see below); empty: every local address
//	ipvs.scheduler                ipvs.scheduler; empty: rr
//	ipvs.syncPeriod               ipvs.syncPeriod; 0: 30s
//	ipvs.minSyncPeriod            ipvs.minSyncPeriod; 0 stays 0
//	ipvs.strictARP                ipvs.strictARP
//	ipvs.excludeCIDRs             ipvs.excludeCIDRs
//	ipvs.tcpTimeout, ipvs.tcpFinTimeout, ipvs.udpTimeout   the same fields, 0 the kernel's
//
// Where kube-ipvs then differs from kube-proxy:
//
//   - ipvs.minSyncPeriod: kube-proxy v1.37 defaults iptables.minSyncPeriod
//     and nftables.minSyncPeriod to 1s but ipvs.minSyncPeriod to nothing,
//     so kubeadm's 0s syncs every change at once, in kube-proxy and in
//     kube-ipvs alike. kube-ipvs' own default is 1s: add
//     --min-sync-period=1s to coalesce bursts of changes.
//   - nodePortAddresses: kubeadm leaves it null, which in IPVS mode means
//     every local address (kube-proxy's "all"), so kube-ipvs serves
//     NodePorts there too, and says so at start-up, as kube-proxy does;
//     kube-ipvs' own default is [primary]. Of kube-proxy's keywords, "all"
//     is 0.0.0.0/0 and ::/0, whatever else is listed; "localhost" is
//     127.0.0.0/8 and ::1/128, on which neither kube-proxy's IPVS mode nor
//     kube-ipvs serves NodePorts, but which keep their family off every
//     other address; "primary" alone is the Node's InternalIP addresses of
//     the family served (kube-proxy takes one primary address per family).
//   - ipvs timeouts must be whole seconds (kube-proxy drops the fraction).
//   - conntrack: kube-ipvs sets no conntrack sysctl. At its defaults
//     kube-proxy raises nf_conntrack_max to 32768 per CPU (131072 at
//     least) and sets nf_conntrack_tcp_timeout_established to 24h and
//     nf_conntrack_tcp_timeout_close_wait to 1h; kube-ipvs leaves the
//     kernel's values, so set them with sysctl if the node relied on them.
//   - an empty hostnameOverride: kube-proxy takes the hostname, kube-ipvs
//     $NODE_NAME first.
//   - logging: kube-ipvs logs JSON at info, or as --log-level and
//     --log-format say.
//
// Warned about: these fields, set to anything but empty, zero or kube-proxy
// v1.37's default, have no effect in kube-ipvs (most have none in
// kube-proxy's IPVS mode either), and one start-up warning names them all
// ("KubeProxyConfiguration fields kube-ipvs does not honour:
// iptables.syncPeriod, conntrack.maxPerCore, …"; see Configuration.Warnings):
// bindAddress (an address other than 0.0.0.0 or ::; kube-ipvs takes the
// node's addresses from its Node object), clientConnection.acceptContentTypes,
// clientConnection.contentType, clientConnection.qps, clientConnection.burst,
// configSyncPeriod, every conntrack field, detectLocal.bridgeInterface,
// detectLocal.interfaceNamePrefix, enableProfiling, iptables.localhostNodePorts,
// iptables.syncPeriod, iptables.minSyncPeriod, every logging field, every
// nftables field, oomScoreAdj, portRange, showHiddenMetricsForVersion,
// windowsRunAsService, every winkernel field, and feature gates: any not
// named in this section, whatever its value, and KubeProxyNFTablesLocalhostNodePorts,
// NFTablesNetlink, NativeHistograms, ContextualLogging, LoggingAlphaOptions
// and LoggingBetaOptions when not at their defaults. ComponentFlagz and
// ComponentStatusz are accepted either way: kube-ipvs serves neither page.
//
// Refused: these values stop start-up, each error naming its field, even
// when a flag would override the field. mode anything but "ipvs",
// empty or left out included (kube-proxy's default on Linux is iptables):
// kube-ipvs replaces only kube-proxy's IPVS mode. detectLocalMode NodeCIDR,
// BridgeInterface or InterfaceNamePrefix: kube-ipvs tells pod traffic apart
// by clusterCIDR only, so these would change which traffic is masqueraded
// and which traffic to an externalTrafficPolicy Local Service counts as a
// pod's. bindAddressHardFail true: kube-ipvs logs a healthz or metrics port
// it cannot bind and runs on, where kube-proxy would exit. nodePortAddresses
// with "primary" and other entries (kube-ipvs has "primary" only alone; "all"
// beside it is fine), or [primary] with a bindAddress other than 0.0.0.0 or
// :: (kube-proxy's primary address is then the bindAddress, and kube-ipvs
// would serve NodePorts on the Node's InternalIPs instead), and entries
// kube-proxy refuses too. Feature gates: AllowServiceExternalIPs false
// (kube-ipvs always serves spec.externalIPs: restrict them with
// externalIPs.allowedCIDRs or the apiserver's DenyServiceExternalIPs
// admission plugin), KubeProxyIPVS false (kube-proxy itself then refuses
// mode ipvs), and MultiCIDRServiceAllocator, PreferSameTrafficDistribution,
// WinDSR or WinOverlay false (locked to true in v1.37). After translation,
// everything Validate refuses, named as in the file: a scheduler kube-ipvs
// lacks (ipvs.scheduler), iptables.masqueradeBit 13, a bad CIDR, a bad
// hostnameOverride; a flag can correct these.
package config
