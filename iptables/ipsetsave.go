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
		ok = ok && len(a.fields) == 3
	}
	if !ok {
		fs := &fakeSet{set: Set{Name: ss.name, Type: ss.typ}, foreign: []string{ss.create}}
		table[ss.name] = fs
		return ss.addTo(fs)
	}
	fs := &fakeSet{set: set, entries: map[Entry]struct{}{}, options: strings.Join(ss.opts, " ")}
	table[ss.name] = fs
	return ss.addTo(fs)
}

// addTo adds the add lines to fs: verbatim to a foreign set, as checked
// Entries to a modelled one.
func (ss *savedSet) addTo(fs *fakeSet) error {
	for _, a := range ss.adds {
		if fs.foreign != nil {
			fs.foreign = append(fs.foreign, a.line)
			continue
		}
		if len(a.fields) != 3 {
			return fmt.Errorf("line %d: ipset %s: member options are not modelled: %q", a.n, ss.name, a.line)
		}
		e, err := parseEntry(fs.set.Type, a.fields[2])
		if err == nil {
			err = fs.add(e)
		}
		if err != nil {
			return fmt.Errorf("line %d: adding %s to ipset %s: %w", a.n, a.fields[2], ss.name, err)
		}
	}
	return nil
}

// modelledSet returns the Set a create line describes and true when the
// fake models it: a type kube-ipvs uses, and only options that do not
// change what the set holds (family, hashsize, maxelem, bucketsize,
// initval), each with its value.
func modelledSet(name string, t SetType, opts []string) (Set, bool) {
	set := Set{Name: name, Type: t}
	if validateSet(set) != nil || len(opts)%2 != 0 {
		return set, false
	}
	for i := 0; i < len(opts); i += 2 {
		switch key, val := opts[i], opts[i+1]; key {
		case "family":
			switch val {
			case "inet":
			case "inet6":
				set.IPv6 = true
			default:
				return set, false
			}
		case "hashsize", "maxelem", "bucketsize", "initval":
		default:
			return set, false
		}
	}
	return set, true
}

// parseEntry reads a member as `ipset save` prints it (and Entry.String
// renders it) for a set of type t: "10.96.0.1", "10.96.0.1,tcp:80",
// "10.244.1.5,tcp:8080,10.244.1.5", "10.96.0.1,tcp:80,10.0.0.0/8",
// "10.0.0.0/8". A net without a length is a host net.
func parseEntry(t SetType, s string) (Entry, error) {
	parts := strings.Split(s, ",")
	want := map[SetType]int{HashIP: 1, HashNet: 1, HashIPPort: 2, HashIPPortIP: 3, HashIPPortNet: 3}[t]
	if want == 0 {
		return Entry{}, fmt.Errorf("unsupported type %q", t)
	}
	if len(parts) != want {
		return Entry{}, fmt.Errorf("member %q does not fit type %s", s, t)
	}
	var e Entry
	var err error
	if t == HashNet {
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
