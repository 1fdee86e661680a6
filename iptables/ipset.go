//go:build linux

package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// KernelSets is the kernel's ipset table, spoken to over netlink
// (NFNL_SUBSYS_IPSET): sets are created through
// github.com/vishvananda/netlink, members added, deleted and listed with
// requests of our own (ipset_netlink.go). No `ipset` binary is needed.
// It is safe for concurrent use.
type KernelSets struct {
	mu sync.Mutex
	// skbInfo remembers, per set, whether it was created with skbinfo, so
	// that refusing an unmarked member costs one header read per set, not
	// one per add. CreateSet and DestroySet forget the set.
	skbInfo map[string]bool
}

var _ Sets = (*KernelSets)(nil)

// NewKernelSets returns the kernel's ipsets. It opens nothing: every call
// opens its own netlink socket.
func NewKernelSets() *KernelSets { return &KernelSets{} }

// ListSets returns the names of all ipsets, sorted, like `ipset list -n`:
// the kernel sends the names only.
func (k *KernelSets) ListSets() ([]string, error) {
	sets, err := dumpSets("", ipsetFlagListSetname)
	if err != nil {
		return nil, fmt.Errorf("listing ipsets: %w", err)
	}
	var names []string
	for _, s := range sets {
		names = append(names, s.name)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// CreateSet creates a set without timeouts, counters or comments, like
// `ipset create NAME TYPE family inet|inet6 [skbinfo]` (default hashsize
// 1024, maxelem 65536) or `ipset create NAME bitmap:port range FROM-TO`;
// ErrExists if the name is taken, whatever the existing set's type.
func (k *KernelSets) CreateSet(s Set) error {
	if err := validateSet(s); err != nil {
		return fmt.Errorf("creating ipset %s: %w", s.Name, err)
	}
	opts := netlink.IpsetCreateOptions{Family: syscall.AF_INET, Skbinfo: s.SkbInfo}
	if s.IPv6 {
		opts.Family = syscall.AF_INET6
	}
	if s.Type == BitmapPort {
		opts.PortFrom, opts.PortTo = s.Ports[0], s.Ports[1]
	}
	k.forget(s.Name)
	err := guard(func() error { return netlink.IpsetCreate(s.Name, string(s.Type), opts) })
	return mapSetError("creating ipset "+s.Name, err, ErrExists)
}

// DestroySet removes a set, like `ipset destroy NAME`; ErrNotFound if absent,
// ErrInUse while an iptables rule references it.
func (k *KernelSets) DestroySet(name string) error {
	k.forget(name)
	return mapSetError("destroying ipset "+name, destroySet(name), nil)
}

func (k *KernelSets) forget(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.skbInfo, name)
}

// hasSkbInfo reports whether set name was created with skbinfo, reading
// its header the first time.
func (k *KernelSets) hasSkbInfo(name string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v, ok := k.skbInfo[name]; ok {
		return v, nil
	}
	sets, err := dumpSets(name, ipsetFlagListHeader)
	if err != nil {
		return false, err
	}
	v := len(sets) == 1 && sets[0].skbInfo()
	if k.skbInfo == nil {
		k.skbInfo = map[string]bool{}
	}
	k.skbInfo[name] = v
	return v, nil
}

// destroySet sends IPSET_CMD_DESTROY with NLM_F_EXCL, as `ipset destroy`
// does. netlink.IpsetDestroy leaves the flag out, and the kernel then takes
// a missing set as already destroyed (like `ipset -exist destroy`) and
// answers success.
func destroySet(name string) error {
	_, err := executeIPSet(ipsetRequest(nl.IPSET_CMD_DESTROY,
		nl.GetIpsetFlags(nl.IPSET_CMD_DESTROY)|syscall.NLM_F_EXCL, name))
	return err
}

// ListEntries returns the members of a set sorted like FakeSets does, each
// with its Mark, like `ipset list NAME`; ErrNotFound if absent,
// errors.ErrUnsupported for a set of a type an Entry cannot hold
// (hash:net,iface, …) or a member whose skbmark has a partial mask.
func (k *KernelSets) ListEntries(name string) ([]Entry, error) {
	what := "listing ipset " + name
	sets, err := dumpSets(name, 0)
	if err != nil {
		return nil, mapSetError(what, err, nil)
	}
	if len(sets) != 1 || sets[0].name != name {
		return nil, fmt.Errorf("%s: the kernel answered with %d sets", what, len(sets))
	}
	if t := sets[0].typ; !supportedType(t) {
		return nil, fmt.Errorf("%s: set of type %s: %w", what, t, errors.ErrUnsupported)
	}
	entries := sets[0].entries
	slices.SortFunc(entries, compareEntries)
	return entries, nil
}

// AddEntry adds a member, like `ipset add NAME ENTRY` (without -exist);
// ErrExists if present, ErrNotFound if the set is absent. An entry with a
// Mark is added like `ipset -exist add NAME ENTRY skbmark MARK`: a member
// of that key gets the mark. The kernel refuses a mark in a set without
// skbinfo; an entry without one first has the set's header read, so that a
// SkbInfo set refuses it too, as FakeSets does.
func (k *KernelSets) AddEntry(name string, e Entry) error {
	what := fmt.Sprintf("adding %s to ipset %s", e, name)
	if e.Mark == 0 {
		skb, err := k.hasSkbInfo(name)
		if err != nil {
			return mapSetError(what, err, nil)
		}
		if skb {
			return fmt.Errorf("%s: %w", what, validateMark(Set{SkbInfo: true}, e))
		}
	}
	req, err := adtRequest(nl.IPSET_CMD_ADD, name, e, e.Mark != 0)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err = executeIPSet(req)
	return mapEntryError(what, e, err, ErrExists)
}

// DelEntry removes the member with e's key whatever its mark, like `ipset
// del NAME ENTRY` (without -exist); ErrNotFound if it or the set is absent.
func (k *KernelSets) DelEntry(name string, e Entry) error {
	what := fmt.Sprintf("deleting %s from ipset %s", e, name)
	req, err := adtRequest(nl.IPSET_CMD_DEL, name, e.Key(), false)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err = executeIPSet(req)
	return mapEntryError(what, e, err, ErrNotFound)
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

// mapEntryError is mapSetError for an add or del of e, with words for the
// member errors of kube-ipvs's types: a mark in a set without skbinfo, a
// port outside a bitmap:port set's range, a full hash set.
func mapEntryError(what string, e Entry, err, onExist error) error {
	var ipsetErr nl.IPSetError
	if !errors.As(err, &ipsetErr) {
		return mapSetError(what, err, onExist)
	}
	portOnly := !e.Addr.IsValid() && !e.Net.IsValid()
	switch {
	case ipsetErr == nl.IPSET_ERR_SKBINFO:
		return fmt.Errorf("%s: %w: %w", what, validateMark(Set{}, e), err)
	case int(ipsetErr) == ipsetErrBitmapRange && portOnly:
		return fmt.Errorf("%s: port %d outside the set's range: %w", what, e.Port, err)
	case int(ipsetErr) == ipsetErrHashFull && !portOnly:
		return fmt.Errorf("%s: the set is full (maxelem): %w", what, err)
	}
	return mapSetError(what, err, onExist)
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

// prefixFrom builds the masked prefix of a listed net; a missing CIDR means
// a single host.
func prefixFrom(a netip.Addr, cidr uint8) netip.Prefix {
	bits := int(cidr)
	if bits == 0 {
		bits = a.BitLen()
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// AddEntries adds entries to the set name in one netlink request (one
// IPSET_CMD_ADD whose IPSET_ATTR_ADT holds every member, as `ipset
// restore` sends them), like `ipset -exist add` of each: a member already
// there is no error, and in a SkbInfo set it takes the entry's mark.
// ErrNotFound if the set is absent. On any error the kernel has added the
// members before the one it refused: the caller adds them one by one to
// learn which.
func (k *KernelSets) AddEntries(name string, entries []Entry) error {
	what := fmt.Sprintf("adding %d members to ipset %s", len(entries), name)
	skb, err := k.hasSkbInfo(name)
	if err != nil {
		return mapSetError(what, err, nil)
	}
	adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|int(nl.NLA_F_NESTED), nil)
	for _, e := range entries {
		if (e.Mark != 0) != skb {
			return fmt.Errorf("%s: %w", what, validateMark(Set{SkbInfo: skb}, e))
		}
		data, err := encodeEntry(e)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", what, e, err)
		}
		adt.AddChild(data)
	}
	req := ipsetRequest(nl.IPSET_CMD_ADD, nl.GetIpsetFlags(nl.IPSET_CMD_ADD), name)
	// The kernel takes IPSET_ATTR_ADT only with IPSET_ATTR_LINENO, where
	// it would put the number of a refused member.
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_LINENO, nl.Uint32Attr(0)))
	req.AddData(adt)
	_, err = executeIPSet(req)
	return mapSetError(what, err, nil)
}
