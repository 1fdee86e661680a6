package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// notes say why a virtual server is not, or not quite, what one may expect
// on key: it is wanted but not in the kernel, or claimed twice; or there is
// none, and then which Service comes closest and what keeps it from key.
func (x *index) notes(key ipvs.ServiceKey) []string {
	var notes []string
	add := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	if !x.v.Synced {
		add("kube-ipvs has not synced with the kernel yet: this is what it wants, which the kernel may not hold")
	}
	if x.v.KernelErr != "" {
		add("the kernel's virtual servers could not be read (%s): every wanted one is taken as there", x.v.KernelErr)
	}
	foreign := slices.ContainsFunc(x.v.Foreign, func(s ipvs.Service) bool { return s.Key == key })
	if sv := x.servers[key]; sv != nil {
		switch {
		case sv.InKernel || x.v.KernelErr != "":
		case foreign:
			add("a virtual server kube-ipvs did not make holds %s: kube-ipvs leaves it alone, and %s is not served here until it goes", key, sv.Owner)
		default:
			msg := fmt.Sprintf("kube-ipvs wants %s for %s, but the kernel does not hold it", key, sv.Owner)
			if svc := x.services[sv.Owner]; svc != nil && svc.Failure != "" {
				msg += "; its last operation failed, and is retried: " + svc.Failure
			}
			notes = append(notes, msg)
		}
		if len(sv.Claimants) > 0 {
			add("%s is also claimed by %s; %s, first by namespace/name, has it", key, joinNames(sv.Claimants), sv.Owner)
		}
		return notes
	}
	if foreign {
		add("%s is a virtual server kube-ipvs did not make; it leaves it alone", key)
	}
	n := len(notes)
	notes = append(notes, x.sameAddress(key)...)
	notes = append(notes, x.nodePorts(key)...)
	notes = append(notes, x.externalAddrs(key)...)
	notes = append(notes, x.clusterIPs(key, len(notes) > n)...)
	if len(notes) == n && !foreign {
		where := "it is not an address of this node"
		if cidr, ok := x.serviceCIDR(key.Addr); ok {
			where = "it is in serviceCIDR " + cidr.String() + ", which the node accepts whole (its local route on kipvs0), so new connections to it are rejected (" + proxier.ChainFilter + ", kubernetes#72236)"
		} else if x.isLocal(key.Addr) {
			where = "it is an address of this node, so the node's own sockets get the connection"
		}
		add("no Service has %s/%s; %s", key.AddrPort(), key.Proto, where)
	}
	return notes
}

// sameAddress: the address has virtual servers, on other ports.
func (x *index) sameAddress(key ipvs.ServiceKey) []string {
	byOwner := map[string][]string{}
	var owners []string
	for _, sv := range x.v.Servers {
		k := sv.Service.Key
		if k.IsMark() || k.Addr != key.Addr {
			continue
		}
		o := sv.Owner.String()
		if byOwner[o] == nil {
			owners = append(owners, o)
		}
		byOwner[o] = append(byOwner[o], portProto(k))
	}
	if len(owners) == 0 {
		return nil
	}
	var of []string
	for _, o := range owners {
		of = append(of, o+" ("+strings.Join(byOwner[o], ", ")+")")
	}
	_, bound := slices.BinarySearchFunc(x.v.Addrs, key.Addr, netip.Addr.Compare)
	msg := fmt.Sprintf("%s is a Service address of %s; %s is none of its ports", key.Addr, strings.Join(of, ", "), portProto(key))
	if cidr, ok := x.serviceCIDR(key.Addr); ok && !bound {
		msg += ", and it is in serviceCIDR " + cidr.String() + ", accepted by its local route on kipvs0, so new connections to it are rejected (" + proxier.ChainFilter + ", kubernetes#72236)"
	} else if bound {
		msg += ", and it is bound on kipvs0, so new connections to it are rejected (" + proxier.ChainFilter + ", kubernetes#72236)"
	}
	return []string{msg}
}

// nodePorts: the port is a Service's NodePort, on an address that is not
// one of this node's NodePort addresses.
func (x *index) nodePorts(key ipvs.ServiceKey) []string {
	var notes []string
	for _, s := range x.v.Services {
		spec := s.Service.Spec
		if spec.Type != v1.ServiceTypeNodePort && spec.Type != v1.ServiceTypeLoadBalancer {
			continue
		}
		for _, sp := range spec.Ports {
			if sp.NodePort != int32(key.Port) || ipvsProto(sp.Protocol) != key.Proto || slices.Contains(x.v.Build.NodePortAddrs, key.Addr) {
				continue
			}
			msg := fmt.Sprintf("%s is the NodePort of %s (port %s), but %s is not one of this node's NodePort addresses (%s; nodePortAddresses)",
				portProto(key), s.Name, cmpOr(sp.Name, "(unnamed)"), key.Addr, addrsString(x.v.Build.NodePortAddrs))
			if key.Addr.IsLoopback() {
				msg += "; NodePorts are never served on loopback (CVE-2020-8558)"
			}
			notes = append(notes, msg)
		}
	}
	return notes
}

// externalAddrs: the address is a Service's external or load-balancer IP
// that is not programmed, or lacks the port.
func (x *index) externalAddrs(key ipvs.ServiceKey) []string {
	var notes []string
	for _, s := range x.v.Services {
		spec := s.Service.Spec
		var ips []string
		for _, ip := range spec.ExternalIPs {
			ips = append(ips, "externalIP "+ip)
		}
		if spec.Type == v1.ServiceTypeLoadBalancer {
			for _, ing := range s.Service.Status.LoadBalancer.Ingress {
				ips = append(ips, "ingress IP "+ing.IP)
			}
		}
		for _, what := range ips {
			ip := what[strings.LastIndexByte(what, ' ')+1:]
			if a, err := netip.ParseAddr(ip); err != nil || a.Unmap() != key.Addr {
				continue
			}
			if skip, ok := skipFor(s.Skips, what); ok {
				notes = append(notes, fmt.Sprintf("%s: %s is not programmed: %s%s", s.Name, what, skip.Reason, x.allowedCIDRs(skip.Reason)))
				continue
			}
			if !hasPort(spec.Ports, key) {
				notes = append(notes, fmt.Sprintf("%s has %s, but no port %s", s.Name, what, portProto(key)))
			}
		}
	}
	return notes
}

// skipFor finds the Skip of an external or load-balancer IP ("externalIP
// 192.0.2.1").
func skipFor(skips []proxier.Skip, what string) (proxier.Skip, bool) {
	i := slices.IndexFunc(skips, func(s proxier.Skip) bool { return s.Detail == what })
	if i < 0 {
		return proxier.Skip{}, false
	}
	return skips[i], true
}

// allowedCIDRs says, for a disallowed address, which CIDRs are allowed.
func (x *index) allowedCIDRs(r proxier.Reason) string {
	switch r {
	case proxier.ReasonDisallowedExternalIP:
		return " (externalIPs.allowedCIDRs: " + prefixesString(x.v.Build.ExternalIPCIDRs) + "; CVE-2020-8554)"
	case proxier.ReasonDisallowedLBIP:
		return " (loadBalancerIPs.allowedCIDRs: " + prefixesString(x.v.Build.LoadBalancerCIDRs) + ")"
	}
	return ""
}

// clusterIPs: the address is a Service's ClusterIP and the Service
// programs nothing on key; said already tells whether another note
// covers the address.
func (x *index) clusterIPs(key ipvs.ServiceKey, said bool) []string {
	var notes []string
	for _, s := range x.v.Services {
		spec := s.Service.Spec
		ips := spec.ClusterIPs
		if len(ips) == 0 && spec.ClusterIP != "" {
			ips = []string{spec.ClusterIP}
		}
		if !slices.ContainsFunc(ips, func(ip string) bool { a, err := netip.ParseAddr(ip); return err == nil && a.Unmap() == key.Addr }) {
			continue
		}
		switch {
		case spec.Type == v1.ServiceTypeExternalName:
			notes = append(notes, fmt.Sprintf("%s is an ExternalName Service: kube-ipvs programs nothing for it", s.Name))
		case !hasPort(spec.Ports, key):
			if !said {
				notes = append(notes, fmt.Sprintf("%s has ClusterIP %s, but no port %s", s.Name, key.Addr, portProto(key)))
			}
		default:
			for _, sk := range s.Skips {
				if !sk.Reason.Normal() {
					notes = append(notes, fmt.Sprintf("%s: not programmed: %s (%s)", s.Name, sk.Reason, sk.Detail))
				}
			}
		}
	}
	return notes
}

// hasPort reports whether ports has key's port and protocol.
func hasPort(ports []v1.ServicePort, key ipvs.ServiceKey) bool {
	return slices.ContainsFunc(ports, func(sp v1.ServicePort) bool {
		return sp.Port == int32(key.Port) && ipvsProto(sp.Protocol) == key.Proto
	})
}

// portProto is "80/tcp".
func portProto(k ipvs.ServiceKey) string { return fmt.Sprintf("%d/%s", k.Port, k.Proto) }

func addrsString(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func joinNames[T fmt.Stringer](names []T) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = n.String()
	}
	return strings.Join(s, ", ")
}
