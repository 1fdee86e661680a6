package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// savedSet is what one `ipset save` text says about a set: its create line
// (none when the set existed before) and its add lines, in order.
type savedSet struct {
	name   string
	create string   // the create line; "" for a set that already existed
	typ    SetType  // from the create line
	opts   []string // the create line's fields after the type
	adds   []savedAdd
}

type savedAdd struct {
	n      int // line number, for errors
	line   string
	fields []string
}

// parseIPSetSave splits `ipset save` text into sets, in the order they are
// first named. An add line may name a set of the text or of existing; a
// create line must not name either (ErrExists).
func parseIPSetSave(text string, existing map[string]*fakeSet) ([]*savedSet, error) {
	var order []*savedSet
	byName := map[string]*savedSet{}
	for i, raw := range strings.Split(text, "\n") {
		n, line := i+1, strings.TrimSpace(raw)
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 3 || (fields[0] != "create" && fields[0] != "add") {
			return nil, fmt.Errorf("line %d: want `create NAME TYPE …` or `add NAME MEMBER`, got %q", n, line)
		}
		name := fields[1]
		ss := byName[name]
		if fields[0] == "create" {
			if ss != nil || existing[name] != nil {
				return nil, fmt.Errorf("line %d: creating ipset %s: %w", n, name, ErrExists)
			}
			ss = &savedSet{name: name, create: line, typ: SetType(fields[2]), opts: fields[3:]}
			byName[name] = ss
			order = append(order, ss)
			continue
		}
		if ss == nil {
			if existing[name] == nil {
				return nil, fmt.Errorf("line %d: adding to ipset %s: %w", n, name, ErrNotFound)
			}
			ss = &savedSet{name: name}
			byName[name] = ss
			order = append(order, ss)
		}
		ss.adds = append(ss.adds, savedAdd{n: n, line: line, fields: fields})
	}
	return order, nil
}

// apply puts the set into table: a new set modelled or foreign (see
// FakeSets.Load), or the members added to an existing one.
func (ss *savedSet) apply(table map[string]*fakeSet) error {
	if ss.create == "" {
		return ss.addTo(table[ss.name])
	}
	set, ok := modelledSet(ss.name, ss.typ, ss.opts)
	for _, a := range ss.adds {
		_, modelled := memberMark(set, a.fields[3:])
		ok = ok && modelled
	}
	if !ok {
		fs := &fakeSet{set: Set{Name: ss.name, Type: ss.typ}, foreign: []string{ss.create}}
		table[ss.name] = fs
		return ss.addTo(fs)
	}
	fs := &fakeSet{set: set, entries: map[Entry]uint32{}, options: strings.Join(ss.opts, " ")}
	table[ss.name] = fs
	return ss.addTo(fs)
}

// addTo adds the add lines to fs: verbatim to a foreign set, as checked
// Entries to a modelled one. A member given twice is ErrExists, in a
// SkbInfo set too, as `ipset restore` without -exist refuses it.
func (ss *savedSet) addTo(fs *fakeSet) error {
	for _, a := range ss.adds {
		if fs.foreign != nil {
			fs.foreign = append(fs.foreign, a.line)
			continue
		}
		mark, ok := memberMark(fs.set, a.fields[3:])
		if !ok {
			return fmt.Errorf("line %d: ipset %s: member options are not modelled (a skbinfo set's members need a skbmark): %q", a.n, ss.name, a.line)
		}
		e, err := parseEntry(fs.set.Type, a.fields[2])
		e.Mark = mark
		if _, dup := fs.entries[e.Key()]; err == nil && dup {
			err = ErrExists
		}
		if err == nil {
			err = fs.add(e)
		}
		if err != nil {
			return fmt.Errorf("line %d: adding %s to ipset %s: %w", a.n, a.fields[2], ss.name, err)
		}
	}
	return nil
}

// memberMark reads the options after a member of set s: none, or, in a
// SkbInfo set, `skbmark 0xMARK` or `skbmark 0xMARK/0xffffffff`. It returns
// the mark and whether the fake models those options; any other option or
// mask, and a member of a SkbInfo set without a skbmark, is not modelled.
func memberMark(s Set, opts []string) (uint32, bool) {
	switch {
	case len(opts) == 0:
		return 0, !s.SkbInfo
	case !s.SkbInfo || len(opts) != 2 || opts[0] != "skbmark":
		return 0, false
	}
	mark, mask, hasMask := strings.Cut(opts[1], "/")
	if hasMask && mask != "0xffffffff" {
		return 0, false
	}
	hex, ok := strings.CutPrefix(mark, "0x")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 32)
	return uint32(n), err == nil
}

// modelledSet returns the Set a create line describes and true when the
// fake models it: a type kube-ipvs uses, and only the options it models:
// for a hash type family, skbinfo and those that do not change what the
// set holds (hashsize, maxelem, bucketsize, initval); for bitmap:port its
// range. Each but skbinfo has a value.
func modelledSet(name string, t SetType, opts []string) (Set, bool) {
	set := Set{Name: name, Type: t}
	for i := 0; i < len(opts); i++ {
		key, val := opts[i], ""
		if key != "skbinfo" {
			if i++; i == len(opts) {
				return set, false
			}
			val = opts[i]
		}
		if !setOption(&set, key, val) {
			return set, false
		}
	}
	return set, validateSet(set) == nil
}

// setOption applies one create option to set, reporting whether the fake
// models it for the set's type.
func setOption(set *Set, key, val string) bool {
	bitmap := set.Type == BitmapPort
	switch {
	case key == "range" && bitmap:
		from, to, ok := strings.Cut(val, "-")
		f, err1 := strconv.ParseUint(from, 10, 16)
		t, err2 := strconv.ParseUint(to, 10, 16)
		set.Ports = [2]uint16{uint16(f), uint16(t)}
		return ok && err1 == nil && err2 == nil
	case bitmap:
		return false
	case key == "family" && (val == "inet" || val == "inet6"):
		set.IPv6 = val == "inet6"
		return true
	case key == "skbinfo":
		set.SkbInfo = true
		return true
	}
	switch key {
	case "hashsize", "maxelem", "bucketsize", "initval":
		return true
	}
	return false
}

// parseEntry reads a member as `ipset save` prints it (and Entry.String
// renders it, without a mark) for a set of type t: "10.96.0.1",
// "10.96.0.1,tcp:80", "10.244.1.5,tcp:8080,10.244.1.5",
// "10.96.0.1,tcp:80,10.0.0.0/8", "10.0.0.0/8", "8193". A net without a
// length is a host net.
func parseEntry(t SetType, s string) (Entry, error) {
	parts := strings.Split(s, ",")
	want := map[SetType]int{HashIP: 1, HashNet: 1, BitmapPort: 1, HashIPPort: 2, HashIPPortIP: 3, HashIPPortNet: 3}[t]
	if want == 0 {
		return Entry{}, fmt.Errorf("unsupported type %q", t)
	}
	if len(parts) != want {
		return Entry{}, fmt.Errorf("member %q does not fit type %s", s, t)
	}
	var e Entry
	var err error
	switch t {
	case BitmapPort:
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return Entry{}, fmt.Errorf("port %q: %w", s, err)
		}
		return Entry{Port: uint16(n)}, nil
	case HashNet:
		e.Net, err = parseNet(parts[0])
		return e, err
	}
	if e.Addr, err = netip.ParseAddr(parts[0]); err != nil {
		return Entry{}, err
	}
	if t == HashIP {
		return e, nil
	}
	if e.Proto, e.Port, err = parseProtoPort(parts[1]); err != nil {
		return Entry{}, err
	}
	switch t {
	case HashIPPortIP:
		e.Addr2, err = netip.ParseAddr(parts[2])
	case HashIPPortNet:
		e.Net, err = parseNet(parts[2])
	}
	if err != nil {
		return Entry{}, err
	}
	return e, nil
}

// parseProtoPort reads "tcp:80".
func parseProtoPort(s string) (string, uint16, error) {
	proto, port, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0, fmt.Errorf("%q: want PROTO:PORT", s)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return proto, uint16(n), nil
}

// parseNet reads "10.0.0.0/8", or an address as its host net.
func parseNet(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}
