//go:build linux

package iptables

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// KernelSets is the kernel's ipset table, spoken to over netlink
// (NFNL_SUBSYS_IPSET) through github.com/vishvananda/netlink; no `ipset`
// binary is needed.
type KernelSets struct{}

var _ Sets = (*KernelSets)(nil)

// NewKernelSets returns the kernel's ipsets. It opens nothing: every call
// opens its own netlink socket.
func NewKernelSets() *KernelSets { return &KernelSets{} }

// ListSets returns the names of all ipsets, sorted, like `ipset list -n`.
// The kernel sends every set with its members; only the names are kept.
func (k *KernelSets) ListSets() ([]string, error) {
	var results []netlink.IPSetResult
	err := guard(func() (err error) {
		results, err = netlink.IpsetListAll()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing ipsets: %w", err)
	}
	var names []string
	for _, r := range results {
		names = append(names, r.SetName)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// CreateSet creates a set without timeouts, counters or comments, like
// `ipset create NAME TYPE family inet|inet6` (default hashsize 1024, maxelem
// 65536); ErrExists if the name is taken, whatever the existing set's type.
func (k *KernelSets) CreateSet(s Set) error {
	if err := validateSet(s); err != nil {
		return fmt.Errorf("creating ipset %s: %w", s.Name, err)
	}
	opts := netlink.IpsetCreateOptions{Family: syscall.AF_INET}
	if s.IPv6 {
		opts.Family = syscall.AF_INET6
	}
	err := guard(func() error { return netlink.IpsetCreate(s.Name, string(s.Type), opts) })
	return mapSetError("creating ipset "+s.Name, err, ErrExists)
}

// DestroySet removes a set, like `ipset destroy NAME`; ErrNotFound if absent,
// ErrInUse while an iptables rule references it.
func (k *KernelSets) DestroySet(name string) error {
	err := guard(func() error { return destroySet(name) })
	return mapSetError("destroying ipset "+name, err, nil)
}

// nfnlSubsysIPSet is NFNL_SUBSYS_IPSET of linux/netfilter/nfnetlink.h.
const nfnlSubsysIPSet = 6

// destroySet sends IPSET_CMD_DESTROY with NLM_F_EXCL, as `ipset destroy`
// does. netlink.IpsetDestroy leaves the flag out, and the kernel then takes
// a missing set as already destroyed (like `ipset -exist destroy`) and
// answers success.
func destroySet(name string) error {
	req := nl.NewNetlinkRequest(nl.IPSET_CMD_DESTROY|nfnlSubsysIPSet<<8,
		nl.GetIpsetFlags(nl.IPSET_CMD_DESTROY)|syscall.NLM_F_EXCL)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: syscall.AF_NETLINK, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(name)))
	_, err := req.Execute(syscall.NETLINK_NETFILTER, 0)
	var errno syscall.Errno
	if errors.As(err, &errno) && int(errno) >= nl.IPSET_ERR_PRIVATE {
		return nl.IPSetError(uintptr(errno))
	}
	return err
}

// ListEntries returns the members of a set sorted like FakeSets does, like
// `ipset list NAME`; ErrNotFound if absent, errors.ErrUnsupported for a set
// of a type an Entry cannot hold (bitmap:port, hash:net,iface, …).
func (k *KernelSets) ListEntries(name string) ([]Entry, error) {
	var res *netlink.IPSetResult
	err := guard(func() (err error) {
		res, err = netlink.IpsetList(name)
		return err
	})
	if err != nil {
		return nil, mapSetError("listing ipset "+name, err, nil)
	}
	if t := SetType(res.TypeName); !supportedType(t) {
		return nil, fmt.Errorf("listing ipset %s: set of type %s: %w", name, t, errors.ErrUnsupported)
	}
	var entries []Entry
	for _, ne := range res.Entries {
		e, err := entryFromNetlink(SetType(res.TypeName), ne)
		if err != nil {
			return nil, fmt.Errorf("listing ipset %s: %w", name, err)
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, compareEntries)
	return entries, nil
}

// AddEntry adds a member, like `ipset add NAME ENTRY` (without -exist);
// ErrExists if present, ErrNotFound if the set is absent.
func (k *KernelSets) AddEntry(name string, e Entry) error {
	ne, err := entryToNetlink(e)
	if err != nil {
		return fmt.Errorf("adding %s to ipset %s: %w", e, name, err)
	}
	err = guard(func() error { return netlink.IpsetAdd(name, ne) })
	return mapSetError(fmt.Sprintf("adding %s to ipset %s", e, name), err, ErrExists)
}

// DelEntry removes a member, like `ipset del NAME ENTRY` (without -exist);
// ErrNotFound if it or the set is absent.
func (k *KernelSets) DelEntry(name string, e Entry) error {
	ne, err := entryToNetlink(e)
	if err != nil {
		return fmt.Errorf("deleting %s from ipset %s: %w", e, name, err)
	}
	err = guard(func() error { return netlink.IpsetDel(name, ne) })
	return mapSetError(fmt.Sprintf("deleting %s from ipset %s", e, name), err, ErrNotFound)
}

// guard runs a netlink call, turning a panic into an error: the library
// type-asserts every request error to syscall.Errno, which panics on any
// other error (an interrupted dump, a netlink sequence mismatch).
func guard(call func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netlink ipset: %v", r)
		}
	}()
	return call()
}

// mapSetError wraps a kernel error with the typed error it means. A missing
// set (ENOENT) is ErrNotFound; a referenced set (IPSET_ERR_BUSY) ErrInUse;
// EEXIST (set name taken) ErrExists; IPSET_ERR_EXIST, which the kernel
// returns both for adding a present member and deleting an absent one, is
// onExist (ErrExists or ErrNotFound, by operation).
func mapSetError(what string, err error, onExist error) error {
	if err == nil {
		return nil
	}
	var ipsetErr nl.IPSetError
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%s: %w: %w", what, ErrExists, err)
	case errors.As(err, &ipsetErr) && ipsetErr == nl.IPSET_ERR_BUSY:
		return fmt.Errorf("%s: %w: %w", what, ErrInUse, err)
	case errors.As(err, &ipsetErr) && ipsetErr == nl.IPSET_ERR_EXIST && onExist != nil:
		return fmt.Errorf("%s: %w: %w", what, onExist, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// entryToNetlink encodes an entry the way `ipset add` would: Addr as the IP,
// Proto and Port, Addr2 as the second IP, and Net as IP2/CIDR2 after an Addr
// (hash:ip,port,net) or as IP/CIDR alone (hash:net).
func entryToNetlink(e Entry) (*netlink.IPSetEntry, error) {
	ne := &netlink.IPSetEntry{}
	if e.Addr.IsValid() {
		ne.IP = net.IP(e.Addr.Unmap().AsSlice())
	}
	if e.Proto != "" {
		p, err := protoNumber(e.Proto)
		if err != nil {
			return nil, err
		}
		port := e.Port
		ne.Protocol, ne.Port = &p, &port
	}
	if e.Addr2.IsValid() {
		ne.IP2 = net.IP(e.Addr2.Unmap().AsSlice())
	}
	if e.Net.IsValid() {
		ip, bits := net.IP(e.Net.Addr().Unmap().AsSlice()), uint8(e.Net.Bits())
		if e.Addr.IsValid() {
			ne.IP2, ne.CIDR2 = ip, bits
		} else {
			ne.IP, ne.CIDR = ip, bits
		}
	}
	if ne.IP == nil {
		return nil, fmt.Errorf("entry has no address")
	}
	return ne, nil
}

// entryFromNetlink decodes a member of a set of type t (see Entry).
func entryFromNetlink(t SetType, ne netlink.IPSetEntry) (Entry, error) {
	ip, ok := addrFrom(ne.IP)
	if !ok {
		return Entry{}, fmt.Errorf("member without a valid address")
	}
	var e Entry
	switch t {
	case HashNet:
		e.Net = prefixFrom(ip, ne.CIDR)
		return e, nil
	case HashIP, HashIPPort, HashIPPortIP, HashIPPortNet:
		e.Addr = ip
	default:
		return Entry{}, fmt.Errorf("unsupported set type %q", t)
	}
	if t != HashIP {
		if ne.Protocol == nil || ne.Port == nil {
			return Entry{}, fmt.Errorf("member %s without protocol or port", ip)
		}
		e.Proto, e.Port = protoName(*ne.Protocol), *ne.Port
	}
	ip2, ok2 := addrFrom(ne.IP2)
	switch {
	case t == HashIPPortIP && ok2:
		e.Addr2 = ip2
	case t == HashIPPortNet && ok2:
		e.Net = prefixFrom(ip2, ne.CIDR2)
	case t == HashIPPortIP || t == HashIPPortNet:
		return Entry{}, fmt.Errorf("member %s without its second address", ip)
	}
	return e, nil
}

// addrFrom converts a kernel address (4 or 16 bytes) to a netip.Addr, an
// IPv4 one never in its IPv4-mapped IPv6 form.
func addrFrom(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// prefixFrom builds the masked prefix of a listed net; a missing CIDR means
// a single host.
func prefixFrom(a netip.Addr, cidr uint8) netip.Prefix {
	bits := int(cidr)
	if bits == 0 {
		bits = a.BitLen()
	}
	return netip.PrefixFrom(a, bits).Masked()
}
