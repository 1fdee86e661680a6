//go:build linux

// Command floor is the benchmark's floor (make bench-vm, ../README.md):
// in the VM, it makes the kernel objects a proxy makes for the
// benchmark's Services directly over netlink, with no API, no informers
// and no planning, one request at a time as a proxy sends them:
//
//	ip link add kipvs-floor type dummy
//	ip route add local 10.96.0.0/16 dev kipvs-floor table local
//	ipvsadm -A -t VIP:80 -s rr              # for each of N Services
//	ipvsadm -a -t VIP:80 -r EP:8080 -m -w 1 # for each of its M endpoints
//
// The addresses are the benchmark's (measure.Layout). It prints one JSON
// line: how long the kernel work took, and how many objects it made.
//
//	floor -services 1000 -endpoints 5
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"

	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
)

// Link is the floor's dummy interface; ServiceCIDR the range it accepts.
const (
	Link        = "kipvs-floor"
	ServiceCIDR = "10.96.0.0/16"
)

// Output is the line the floor prints.
type Output struct {
	Seconds        float64 `json:"seconds"`        // all of it
	AcceptSeconds  float64 `json:"acceptSeconds"`  // the link and the local route
	VirtualServers int     `json:"virtualServers"` // made
	RealServers    int     `json:"realServers"`    // made
}

func main() {
	services := flag.Int("services", 1000, "Services (virtual servers)")
	endpoints := flag.Int("endpoints", 5, "endpoints (real servers) per Service")
	flag.Parse()
	l := measure.Layout{Services: *services, Endpoints: *endpoints}
	if err := l.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(2)
	}
	out, err := run(l)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

func run(l measure.Layout) (Output, error) {
	var out Output
	began := time.Now()
	if err := acceptServiceCIDR(); err != nil {
		return out, err
	}
	out.AcceptSeconds = time.Since(began).Seconds()
	h, err := libipvs.New("")
	if err != nil {
		return out, fmt.Errorf("opening IPVS netlink: %w", err)
	}
	defer h.Close()
	for i := 0; i < l.Services; i++ {
		vs := &libipvs.Service{
			AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
			Address: ip(measure.VIP(i)), Port: measure.ServicePort, SchedName: "rr",
			Netmask: 0xffffffff,
		}
		if err := h.NewService(vs); err != nil {
			return out, fmt.Errorf("ipvsadm -A -t %s: %w", measure.VS(i), err)
		}
		out.VirtualServers++
		for _, rs := range l.Want(i) {
			d := &libipvs.Destination{
				AddressFamily: syscall.AF_INET, Address: ip(rs.Addr()), Port: rs.Port(),
				Weight: 1, ConnectionFlags: libipvs.ConnectionFlagMasq,
			}
			if err := h.NewDestination(vs, d); err != nil {
				return out, fmt.Errorf("ipvsadm -a -t %s -r %s: %w", measure.VS(i), rs, err)
			}
			out.RealServers++
		}
	}
	out.Seconds = time.Since(began).Seconds()
	return out, nil
}

// acceptServiceCIDR makes the node accept every address of ServiceCIDR
// with one route, whatever the number of Services.
func acceptServiceCIDR() error {
	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: Link}}
	if err := netlink.LinkAdd(link); err != nil {
		return fmt.Errorf("ip link add %s type dummy: %w", Link, err)
	}
	made, err := netlink.LinkByName(Link)
	if err != nil {
		return fmt.Errorf("ip link show %s: %w", Link, err)
	}
	if err := netlink.LinkSetUp(made); err != nil {
		return fmt.Errorf("ip link set %s up: %w", Link, err)
	}
	_, dst, err := net.ParseCIDR(ServiceCIDR)
	if err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: made.Attrs().Index, Dst: dst, Type: syscall.RTN_LOCAL,
		Table: syscall.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("ip route add local %s dev %s table local: %w", ServiceCIDR, Link, err)
	}
	return nil
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
