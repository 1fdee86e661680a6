// Package inspect says what kube-ipvs does on a node, for `kube-ipvs show`
// and `kube-ipvs explain`. Show lists every virtual server as Kubernetes
// sees it; Explain traces a packet to one address through kube-ipvs' real
// rules and sets and its desired virtual servers. Both are pure functions
// of a proxier.View; their results are plain data with stable JSON field
// names, rendered as tables by WriteShow and WriteExplanation.
package inspect

import "time"

// Show is what `kube-ipvs show` prints.
type Show struct {
	Node   string `json:"node"`
	Family string `json:"family"` // "IPv4" or "IPv6"
	// Synced says the agent has synced with the kernel at least once.
	Synced bool `json:"synced"`
	DryRun bool `json:"dryRun,omitempty"`
	// At is when the agent took the view.
	At time.Time `json:"at"`
	// VirtualServers are kube-ipvs' virtual servers, in `ipvsadm -Sn`
	// order.
	VirtualServers []VirtualServer `json:"virtualServers"`
	// Foreign are the virtual servers in the kernel that are not
	// kube-ipvs': it never changes them.
	Foreign []ForeignServer `json:"foreign"`
	// Stats says the counters of RealServer.Stats were read.
	Stats bool `json:"stats"`
	// KernelError says why the kernel could not be read: the counters and
	// the inKernel fields are then unknown.
	KernelError string `json:"kernelError,omitempty"`
}

// The kinds of virtual server.
const (
	KindClusterIP    = "ClusterIP"
	KindNodePort     = "NodePort"
	KindLoadBalancer = "LoadBalancer"
	KindExternalIP   = "ExternalIP"
	// KindShortCircuit is the firewall-mark virtual server that takes
	// what pods and the node send to a Local port's external addresses.
	KindShortCircuit = "ShortCircuit"
)

// VirtualServer is one IPVS virtual server and what it is for.
type VirtualServer struct {
	// Key names it as `ipvsadm -Sn` does: "-t 10.96.0.10:80", "-f 8192".
	Key string `json:"key"`
	// Address ("10.96.0.10:80") and Protocol ("tcp") of an address
	// virtual server; Mark of a firewall-mark one.
	Address  string `json:"address,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Mark     uint32 `json:"mark,omitempty"`
	Kind     string `json:"kind"`
	// Service is its owner, namespace/name; Port the Service port's name
	// ("" when unnamed) and ServicePort its number.
	Service     string `json:"service"`
	Port        string `json:"port"`
	ServicePort int32  `json:"servicePort,omitempty"`
	// AlsoClaimedBy are other Services that want the same virtual server;
	// only Service's is programmed.
	AlsoClaimedBy []string `json:"alsoClaimedBy,omitempty"`
	Scheduler     string   `json:"scheduler"`
	Flags         []string `json:"flags,omitempty"` // "mh-port"
	// SessionAffinity is "None" or "ClientIP", with its timeout.
	SessionAffinity        string `json:"sessionAffinity"`
	SessionAffinityTimeout uint32 `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// TrafficPolicy is the policy that chose its real servers:
	// "Cluster" or "Local" (internalTrafficPolicy for a ClusterIP,
	// externalTrafficPolicy for the external kinds; a short circuit is
	// always "Cluster").
	TrafficPolicy string `json:"trafficPolicy"`
	// SourceRanges are the loadBalancerSourceRanges a load-balancer
	// virtual server admits (the ranges of KIPVS-LB-SOURCES).
	SourceRanges []string `json:"sourceRanges,omitempty"`
	// ShortCircuitMark is, on an external virtual server of a Local
	// port, the mark of the short circuit that pods and the node take
	// instead; ShortCircuitOf, on a short circuit, are the addresses it
	// takes traffic for ("192.168.60.11:30083/tcp").
	ShortCircuitMark uint32   `json:"shortCircuitMark,omitempty"`
	ShortCircuitOf   []string `json:"shortCircuitOf,omitempty"`
	// InKernel says the kernel holds it as kube-ipvs'.
	InKernel    bool         `json:"inKernel"`
	RealServers []RealServer `json:"realServers"`
}

// RealServer is one real server of a virtual server and its endpoint.
type RealServer struct {
	Address string `json:"address"` // "10.244.1.2:8080"
	Weight  int    `json:"weight"`
	// Pod is the endpoint's targetRef, namespace/name; Node its nodeName;
	// Local says Node is this node.
	Pod   string `json:"pod,omitempty"`
	Node  string `json:"node,omitempty"`
	Local bool   `json:"local"`
	// InEndpointSlices says an EndpointSlice of the Service has it; a
	// real server whose endpoint left is draining.
	InEndpointSlices bool `json:"inEndpointSlices"`
	Ready            bool `json:"ready"`
	Serving          bool `json:"serving"`
	Terminating      bool `json:"terminating"`
	// DrainingSince is when it went to weight 0 to let its connections
	// finish.
	DrainingSince *time.Time `json:"drainingSince,omitempty"`
	InKernel      bool       `json:"inKernel"`
	// ActiveConns and InactiveConns are ipvsadm -Ln's ActiveConn and
	// InActConn.
	ActiveConns   int    `json:"activeConns"`
	InactiveConns int    `json:"inactiveConns"`
	Stats         *Stats `json:"stats,omitempty"`
}

// Stats are a real server's counters since it was added, as
// `ipvsadm -Ln --stats` shows them.
type Stats struct {
	Conns      uint64 `json:"conns"`
	PacketsIn  uint64 `json:"packetsIn"`
	PacketsOut uint64 `json:"packetsOut"`
	BytesIn    uint64 `json:"bytesIn"`
	BytesOut   uint64 `json:"bytesOut"`
}

// ForeignServer is a virtual server someone else made.
type ForeignServer struct {
	Key       string `json:"key"`
	Scheduler string `json:"scheduler"`
}

// Explanation is what `kube-ipvs explain` prints: what happens on this node
// to a new connection to one address.
type Explanation struct {
	Address  string `json:"address"`  // "10.96.0.10:80"
	Protocol string `json:"protocol"` // "tcp"
	// VirtualServer is kube-ipvs' virtual server on the address, if any.
	VirtualServer *VirtualServer `json:"virtualServer,omitempty"`
	// Paths are the connection from each kind of client, or from the one
	// address asked for.
	Paths []Path `json:"paths"`
	// Notes say why nothing, or less than one may expect, is programmed.
	Notes []string `json:"notes,omitempty"`
}

// The clients a Path is traced from.
const (
	FromOutside = "outside" // a client outside the cluster CIDRs
	FromPod     = "pod"     // a pod: a source in a cluster CIDR
	FromNode    = "node"    // this node itself
)

// The verdicts of a Path.
const (
	// VerdictServed: IPVS gives the connection to one of Endpoints.
	VerdictServed = "served"
	// VerdictRefused: a virtual server takes it and has no real server
	// to give it to; IPVS answers ICMP port unreachable.
	VerdictRefused = "refused"
	// VerdictRejected: kube-ipvs' filter rejects it (ICMP port
	// unreachable).
	VerdictRejected = "rejected"
	// VerdictDropped: kube-ipvs' mangle rules drop it, unanswered.
	VerdictDropped = "dropped"
	// VerdictHost: no virtual server takes it; the node's own sockets
	// get it (a host process answers, or the kernel refuses).
	VerdictHost = "host"
	// VerdictNotLocal: the address is not this node's: the packet is
	// routed on, and kube-ipvs plays no part.
	VerdictNotLocal = "not-local"
)

// Path is one client's new connection, traced.
type Path struct {
	// From is the kind of client: FromOutside, FromPod or FromNode (of
	// a source asked for, the kind its address is); Source the source
	// address traced, when one is known.
	From   string `json:"from"`
	Source string `json:"source,omitempty"`
	// Verdict is one of the Verdict constants; Summary says it in a
	// sentence.
	Verdict string `json:"verdict"`
	Summary string `json:"summary"`
	// VirtualServer is the key of the virtual server IPVS gives the
	// connection to, when one takes it.
	VirtualServer string `json:"virtualServer,omitempty"`
	// Endpoints are the real servers IPVS may choose (weight above 0),
	// each with whether the connection is masqueraded to it.
	Endpoints []PathEndpoint `json:"endpoints,omitempty"`
	// Choice says why these endpoints: the traffic policy, the fallback
	// to terminating endpoints, the short circuit.
	Choice string `json:"choice,omitempty"`
	// Steps are the rules that matched and what IPVS did, in packet order.
	Steps []Step `json:"steps"`
	// Assumptions are what the trace assumed of a source it did not know
	// ("not in 10.0.0.0/8"); give a source to trace it exactly.
	Assumptions []string `json:"assumptions,omitempty"`
}

// PathEndpoint is one real server a Path may reach.
type PathEndpoint struct {
	Address string `json:"address"`
	Pod     string `json:"pod,omitempty"`
	Node    string `json:"node,omitempty"`
	// Masquerade says the endpoint sees the node's address, not the
	// client's; Why says which rule decided.
	Masquerade bool   `json:"masquerade"`
	Why        string `json:"why"`
}

// Step is one rule that matched, or IPVS' decision.
type Step struct {
	// Where is "TABLE CHAIN" ("nat KIPVS-CLUSTER") or "IPVS".
	Where string `json:"where"`
	// Rule is the rule as `iptables -S` prints it after -A CHAIN, or the
	// virtual server for IPVS.
	Rule string `json:"rule"`
	// Does says what it did, in words.
	Does string `json:"does"`
}
