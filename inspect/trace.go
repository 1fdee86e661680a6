package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// The tracer follows one packet through kube-ipvs' own netfilter rules
// (proxier.Rules, as the kernel holds them) over the members of its sets,
// the way kube-proxy's nftables tests trace packets through a fake's
// rules. It knows the matches and targets those rules use, and fails on
// any other (a test runs it over every rule BuildRules makes), so a rule
// added to BuildRules cannot be silently misread. It sees only kube-ipvs'
// chains and jumps: what a CNI or the host firewall adds to the built-in
// chains is not in it.

// verdict is the outcome of a chain or hook.
type verdict int

const (
	vContinue   verdict = iota // RETURN, or the end of the chain
	vAccept                    // ACCEPT: this table is done with the packet
	vDrop                      // DROP
	vReject                    // REJECT
	vMasquerade                // nat MASQUERADE
)

// packet is what is traced: a new connection's first packet.
type packet struct {
	src   source
	dst   netip.AddrPort
	proto ipvs.Protocol
	mark  uint32
	// local says the node sent it (addrtype --src-type LOCAL).
	local bool
}

// source is a packet's source: an address, or, when none is known, only
// its kind (FromOutside, FromPod), about which the tracer assumes as
// little as it can and records what it assumed.
type source struct {
	kind string
	addr netip.Addr     // valid when known
	pod  netip.Prefix   // for a pod of unknown address: the cluster CIDR it is in
	cidr []netip.Prefix // the cluster CIDRs of the family
}

func (s source) known() bool { return s.addr.IsValid() }

// netfilter is kube-ipvs' rules and set members.
type netfilter struct {
	chains map[string]map[string][][]string // table → chain → rules
	jumps  map[string]map[string][][]string // table → built-in chain → kube-ipvs' jumps
	sets   map[string]*ipset
}

type ipset struct {
	typ     iptables.SetType
	members []iptables.Entry
}

// newNetfilter indexes the rules and the members of their sets.
func newNetfilter(r proxier.Rules, entries []proxier.SetEntry) *netfilter {
	nf := &netfilter{chains: map[string]map[string][][]string{}, jumps: map[string]map[string][][]string{}, sets: map[string]*ipset{}}
	for table, chains := range r.Chains {
		nf.chains[table] = map[string][][]string{}
		for _, c := range chains {
			nf.chains[table][c.Name] = c.Rules
		}
	}
	for _, j := range r.Jumps {
		if nf.jumps[j.Table] == nil {
			nf.jumps[j.Table] = map[string][][]string{}
		}
		nf.jumps[j.Table][j.Chain] = append(nf.jumps[j.Table][j.Chain], j.Spec)
	}
	for _, s := range r.Sets {
		nf.sets[s.Name] = &ipset{typ: s.Type}
	}
	for _, l := range r.Lists {
		nf.sets[l.Set.Name] = &ipset{typ: l.Set.Type, members: l.Members}
	}
	for _, e := range entries {
		if s := nf.sets[e.Set()]; s != nil {
			s.members = append(s.members, e.Entry())
		}
	}
	return nf
}

// tracer records the rules a packet matched and what it assumed.
type tracer struct {
	nf          *netfilter
	describe    func(table, chain string, rule []string) string
	steps       []Step
	assumptions []string
	err         error
}

// hook runs kube-ipvs' jumps from a built-in chain, in order, as the
// packet traverses it; vContinue means kube-ipvs let it go on.
func (t *tracer) hook(table, chain string, p *packet) verdict {
	for _, spec := range t.nf.jumps[table][chain] {
		if v := t.rule(table, chain, spec, p, 0, false); v != vContinue {
			return v
		}
	}
	return vContinue
}

// chain runs one of kube-ipvs' chains.
func (t *tracer) chain(table, name string, p *packet, depth int) verdict {
	rules, ok := t.nf.chains[table][name]
	if !ok || depth > 8 {
		t.fail(fmt.Errorf("%s %s: no such chain, or jumps too deep", table, name))
		return vContinue
	}
	for _, r := range rules {
		v := t.rule(table, name, r, p, depth, true)
		if v == vReturn {
			return vContinue
		}
		if v != vContinue {
			return v
		}
	}
	return vContinue
}

// vReturn is RETURN inside rule: the chain ends, the caller goes on.
const vReturn verdict = -1

// rule evaluates one rule of chain; record says whether a match is a
// step of the trace (kube-ipvs' own chains; not the plain jumps to them).
func (t *tracer) rule(table, chain string, r []string, p *packet, depth int, record bool) verdict {
	target, args, matched := t.matches(r, p)
	if !matched || t.err != nil {
		return vContinue
	}
	if record {
		t.steps = append(t.steps, Step{Where: table + " " + chain, Rule: ruleString(r), Does: t.describe(table, chain, r)})
	}
	switch target {
	case "ACCEPT":
		return vAccept
	case "DROP":
		return vDrop
	case "REJECT":
		return vReject
	case "RETURN":
		return vReturn
	case "MASQUERADE":
		return vMasquerade
	case "MARK":
		if len(args) < 2 || args[0] != "--set-xmark" {
			t.fail(fmt.Errorf("%s %s: MARK %v", table, chain, args))
			return vContinue
		}
		v, m, err := parseMark(args[1])
		if err != nil {
			t.fail(err)
		}
		p.mark = (p.mark &^ m) ^ v
		return vContinue
	case "SET":
		t.mapMark(args, p)
		return vContinue
	}
	if _, ok := t.nf.chains[table][target]; ok {
		return t.chain(table, target, p, depth+1)
	}
	t.fail(fmt.Errorf("%s %s: unknown target %q", table, chain, target))
	return vContinue
}

// match is one match of a rule: an option, its arguments, and whether it
// is negated ("!").
type match struct {
	neg  bool
	opt  string
	args []string
}

// optionArgs are the options kube-ipvs' rules use and how many arguments
// each takes.
var optionArgs = map[string]int{
	"-m": 1, "--comment": 1, "-s": 1, "-d": 1, "-p": 1, "--match-set": 2, "--ctstate": 1, "--src-type": 1, "--mark": 1,
}

// parseRule splits a rule into its matches and its target with the
// target's options. An option the tracer does not know is an error.
func parseRule(r []string) (ms []match, target string, args []string, err error) {
	for i := 0; i < len(r); {
		neg := r[i] == "!"
		if neg {
			i++
		}
		if i >= len(r) {
			break
		}
		opt := r[i]
		if opt == "-j" && !neg && i+1 < len(r) {
			return ms, r[i+1], r[i+2:], nil
		}
		n, ok := optionArgs[opt]
		if !ok || i+n >= len(r) {
			return nil, "", nil, fmt.Errorf("unknown option %q in %q", opt, ruleString(r))
		}
		if opt != "-m" && opt != "--comment" {
			ms = append(ms, match{neg: neg, opt: opt, args: r[i+1 : i+1+n]})
		}
		i += 1 + n
	}
	return nil, "", nil, fmt.Errorf("rule without a target: %q", ruleString(r))
}

// matches checks the matches of r in order, as iptables does, stopping at
// the first that fails; it returns the target and its options. What was
// assumed of the source counts only where it decided the outcome.
func (t *tracer) matches(r []string, p *packet) (target string, args []string, ok bool) {
	ms, target, args, err := parseRule(r)
	if err != nil {
		t.fail(err)
		return "", nil, false
	}
	var assumed []string
	for _, m := range ms {
		hit, why := t.match(m, p)
		if why != "" {
			assumed = append(assumed, why)
		}
		if hit == m.neg {
			if why != "" {
				t.assume(why)
			}
			return "", nil, false
		}
	}
	t.assume(assumed...)
	return target, args, true
}

// match evaluates one match on the packet; why is what it assumed of a
// source of unknown address.
func (t *tracer) match(m match, p *packet) (hit bool, why string) {
	a := m.args
	switch m.opt {
	case "-s":
		return p.src.in(a[0])
	case "-d":
		pf, err := netip.ParsePrefix(a[0])
		if err != nil {
			t.fail(err)
		}
		return pf.Contains(p.dst.Addr()), ""
	case "-p":
		return a[0] == p.proto.String(), ""
	case "--match-set":
		return t.inSet(a[0], a[1], p)
	case "--ctstate":
		return slices.Contains(strings.Split(a[0], ","), "NEW"), ""
	case "--src-type":
		if a[0] != "LOCAL" {
			t.fail(fmt.Errorf("addrtype --src-type %s", a[0]))
		}
		return p.local, ""
	case "--mark":
		v, mask, err := parseMark(a[0])
		if err != nil {
			t.fail(err)
		}
		return p.mark&mask == v, ""
	}
	t.fail(fmt.Errorf("unknown match %s", m.opt))
	return false, ""
}

// in matches the source against a prefix. A source of unknown address is
// never in a cluster CIDR from outside, always in its own from a pod, and
// assumed outside any other prefix.
func (s source) in(prefix string) (bool, string) {
	pf, err := netip.ParsePrefix(prefix)
	if err != nil {
		return false, ""
	}
	if s.known() {
		return pf.Contains(s.addr), ""
	}
	if s.kind == FromPod && pf == s.pod {
		return true, ""
	}
	if slices.Contains(s.cidr, pf) || !s.could(pf) {
		return false, ""
	}
	return false, "the source is not in " + pf.String()
}

// could reports whether a source of unknown address may lie in p: an
// outside client is in no cluster CIDR, a pod in its own.
func (s source) could(p netip.Prefix) bool {
	switch s.kind {
	case FromOutside:
		return !slices.ContainsFunc(s.cidr, func(c netip.Prefix) bool { return c.Bits() <= p.Bits() && c.Contains(p.Addr()) })
	case FromPod:
		return p.Overlaps(s.pod)
	}
	return true
}

// inSet is `-m set --match-set NAME FLAGS` for the set types kube-ipvs
// uses. Of a source of unknown address, it assumes it is no member's
// source (never a VIP, never a range's, never the endpoint itself), and
// says so when a member could have matched.
func (t *tracer) inSet(name, flags string, p *packet) (bool, string) {
	s := t.nf.sets[name]
	if s == nil {
		t.fail(fmt.Errorf("set %s is not one of kube-ipvs' sets", name))
		return false, ""
	}
	proto := p.proto.String()
	dstPort := func(e iptables.Entry) bool {
		return e.Addr == p.dst.Addr() && e.Proto == proto && e.Port == p.dst.Port()
	}
	switch {
	case s.typ == iptables.HashIP && flags == "dst":
		return slices.ContainsFunc(s.members, func(e iptables.Entry) bool { return e.Addr == p.dst.Addr() }), ""
	case s.typ == iptables.HashIP && flags == "src":
		// A source of unknown address is an outside client or a pod: never
		// one of the node's addresses.
		return p.src.known() && slices.ContainsFunc(s.members, func(e iptables.Entry) bool { return e.Addr == p.src.addr }), ""
	case s.typ == iptables.HashIPPort && flags == "dst,dst":
		return slices.ContainsFunc(s.members, dstPort), ""
	case s.typ == iptables.HashIPPortIP && flags == "dst,dst,src":
		return t.bySource(name, s, dstPort, p, func(e iptables.Entry) netip.Prefix { return netip.PrefixFrom(e.Addr2, e.Addr2.BitLen()) })
	case s.typ == iptables.HashIPPortNet && flags == "dst,dst,src":
		return t.bySource(name, s, dstPort, p, func(e iptables.Entry) netip.Prefix { return e.Net })
	case s.typ == iptables.HashNet && flags == "dst":
		return slices.ContainsFunc(s.members, func(e iptables.Entry) bool { return e.Net.Contains(p.dst.Addr()) }), ""
	case s.typ == iptables.HashNet && flags == "src":
		every := func(iptables.Entry) bool { return true }
		return t.bySource(name, s, every, p, func(e iptables.Entry) netip.Prefix { return e.Net })
	}
	t.fail(fmt.Errorf("set %s of type %s matched with %s", name, s.typ, flags))
	return false, ""
}

// bySource matches the members for the packet's destination whose source
// part (src) holds its source.
func (t *tracer) bySource(name string, s *ipset, dst func(iptables.Entry) bool, p *packet, src func(iptables.Entry) netip.Prefix) (bool, string) {
	var could []string
	for _, e := range s.members {
		if !dst(e) {
			continue
		}
		if p.src.known() && src(e).Contains(p.src.addr) {
			return true, ""
		}
		if !p.src.known() && p.src.could(src(e)) {
			could = append(could, prefixString(src(e)))
		}
	}
	if p.src.known() || len(could) == 0 {
		return false, ""
	}
	return false, fmt.Sprintf("the source is not %s (%s)", strings.Join(could, ", "), name)
}

// mapMark is `-j SET --map-set NAME dst,dst --map-mark`: the packet takes
// the mark of its destination's member.
func (t *tracer) mapMark(args []string, p *packet) {
	if len(args) < 4 || args[0] != "--map-set" || args[2] != "dst,dst" || args[3] != "--map-mark" {
		t.fail(fmt.Errorf("SET %v", args))
		return
	}
	s := t.nf.sets[args[1]]
	if s == nil {
		t.fail(fmt.Errorf("set %s is not one of kube-ipvs' sets", args[1]))
		return
	}
	for _, e := range s.members {
		if e.Addr == p.dst.Addr() && e.Proto == p.proto.String() && e.Port == p.dst.Port() {
			p.mark = e.Mark
			return
		}
	}
}

func (t *tracer) assume(why ...string) {
	for _, w := range why {
		if !slices.Contains(t.assumptions, w) {
			t.assumptions = append(t.assumptions, w)
		}
	}
}

func (t *tracer) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// parseMark reads "0x4000/0x4000" (value/mask; no mask is 0xffffffff).
func parseMark(s string) (value, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, err := strconv.ParseUint(vs, 0, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("mark %q: %w", s, err)
	}
	m := uint64(0xffffffff)
	if hasMask {
		if m, err = strconv.ParseUint(ms, 0, 32); err != nil {
			return 0, 0, fmt.Errorf("mark %q: %w", s, err)
		}
	}
	return uint32(v), uint32(m), nil
}

// ruleString renders a rule as `iptables -S` prints it after -A CHAIN.
func ruleString(r []string) string {
	parts := make([]string, len(r))
	for i, a := range r {
		if strings.ContainsAny(a, " \t") {
			a = strconv.Quote(a)
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// prefixString is a prefix, a single address without its length.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
