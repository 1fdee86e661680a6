package proxier

import (
	"cmp"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// setEntryCases are members of every shape kube-ipvs' sets hold, and the
// address shapes a compact key could confuse (IPv4 against IPv4-mapped
// IPv6, :: against no address, a /0 against no prefix).
var setEntryCases = []struct {
	set string
	e   iptables.Entry
}{
	{"", iptables.Entry{}},
	{"KIPVS-OWNED-MARK", iptables.Entry{Port: 8193}},
	{"KIPVS-CLUSTER-IP", iptables.Entry{Addr: netip.MustParseAddr("10.96.0.1"), Proto: "tcp", Port: 443}},
	{"KIPVS-CLUSTER-IP-6", iptables.Entry{Addr: netip.MustParseAddr("fd00::1"), Proto: "udp", Port: 53}},
	{"KIPVS-CLUSTER-IP", iptables.Entry{Addr: netip.MustParseAddr("::ffff:10.96.0.1"), Proto: "tcp", Port: 443}},
	{"KIPVS-CLUSTER-IP", iptables.Entry{Addr: netip.MustParseAddr("::"), Proto: "tcp", Port: 443}},
	{"KIPVS-LOOP-BACK", iptables.Entry{Addr: netip.MustParseAddr("10.244.1.2"), Proto: "sctp", Port: 8080, Addr2: netip.MustParseAddr("10.244.1.2")}},
	{"KIPVS-SOURCE-RANGES", iptables.Entry{Addr: netip.MustParseAddr("203.0.113.7"), Proto: "tcp", Port: 80, Net: netip.MustParsePrefix("198.51.100.0/24")}},
	{"KIPVS-SOURCE-RANGES", iptables.Entry{Addr: netip.MustParseAddr("203.0.113.7"), Proto: "tcp", Port: 80, Net: netip.MustParsePrefix("0.0.0.0/0")}},
	{"KIPVS-SOURCE-RANGES-6", iptables.Entry{Addr: netip.MustParseAddr("2001:db8::7"), Proto: "tcp", Port: 80, Net: netip.MustParsePrefix("2001:db8:1::/48")}},
	{"KIPVS-NON-MASQ", iptables.Entry{Net: netip.MustParsePrefix("10.0.0.0/8")}},
	{"KIPVS-SHORT-CIRCUIT", iptables.Entry{Addr: netip.MustParseAddr("203.0.113.7"), Proto: "udp", Port: 53, Mark: 0x2001}},
	{"KIPVS-SHORT-CIRCUIT", iptables.Entry{Addr: netip.MustParseAddr("203.0.113.7"), Proto: "icmp", Port: 0}},
}

func TestSetEntryRoundTrip(t *testing.T) {
	seen := map[SetEntry]int{}
	for i, c := range setEntryCases {
		got := NewSetEntry(c.set, c.e)
		if got.Set() != c.set || got.Entry() != c.e {
			t.Errorf("NewSetEntry(%q, %v) gives back %q, %v", c.set, c.e, got.Set(), got.Entry())
		}
		if got.Mark() != c.e.Mark {
			t.Errorf("%v: Mark %#x, want %#x", c.e, got.Mark(), c.e.Mark)
		}
		if again := NewSetEntry(c.set, c.e); again != got {
			t.Errorf("%v: two SetEntry of the same member differ", c.e)
		}
		if j, ok := seen[got]; ok {
			t.Errorf("%q %v and %q %v make the same SetEntry", c.set, c.e, setEntryCases[j].set, setEntryCases[j].e)
		}
		seen[got] = i
		if want := c.set + " " + c.e.String(); got.String() != want {
			t.Errorf("String %q, want %q", got.String(), want)
		}
	}
}

func TestSetEntryMarkAndSet(t *testing.T) {
	c := setEntryCases[len(setEntryCases)-2]
	e := NewSetEntry(c.set, c.e)
	plain := c.e
	plain.Mark = 0
	if e.unmarked() != NewSetEntry(c.set, plain) {
		t.Errorf("unmarked %v, want the member without its mark", e.unmarked().Entry())
	}
	if e.unmarked().withMark(c.e.Mark) != e {
		t.Errorf("withMark does not give the mark back")
	}
	if !e.sameSet(NewSetEntry(c.set, iptables.Entry{})) || e.sameSet(NewSetEntry(c.set+"-6", c.e)) {
		t.Errorf("sameSet compares something other than the set")
	}
}

// TestSetEntrySize keeps SetEntry compact: the figure its comment gives.
func TestSetEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(SetEntry{}); n != 60 {
		t.Errorf("SetEntry takes %d bytes, its comment says 60", n)
	}
}

func TestNameTableRows(t *testing.T) {
	var tab nameTable
	if r := tab.row("", 4); r != 0 || tab.name(0) != "" {
		t.Fatalf("row of \"\" = %d, want 0", r)
	}
	a, b := tab.row("a", 4), tab.row("b", 4)
	if a == b || tab.row("a", 4) != a || tab.name(a) != "a" || tab.name(b) != "b" {
		t.Fatalf("rows a=%d b=%d: names %q %q", a, b, tab.name(a), tab.name(b))
	}
	tab.row("c", 4)
	defer func() {
		if recover() == nil {
			t.Errorf("a fifth name in a table of 4 rows did not panic")
		}
	}()
	tab.row("d", 4)
}

// TestSetEntryOrder checks compare against the order of the fields it
// packs, compared as netip and strings compare them, over every pair of
// cases and their variants by one field.
func TestSetEntryOrder(t *testing.T) {
	byFields := func(a, b SetEntry) int {
		x, y := a.Entry(), b.Entry()
		return cmp.Or(
			cmp.Compare(a.Set(), b.Set()),
			x.Addr.Compare(y.Addr),
			cmp.Compare(x.Proto, y.Proto),
			cmp.Compare(x.Port, y.Port),
			x.Addr2.Compare(y.Addr2),
			x.Net.Addr().Compare(y.Net.Addr()),
			cmp.Compare(x.Net.Bits(), y.Net.Bits()),
			cmp.Compare(x.Mark, y.Mark),
		)
	}
	var all []SetEntry
	for _, c := range setEntryCases {
		e := c.e
		all = append(all, NewSetEntry(c.set, e), NewSetEntry("KIPVS-A", e), NewSetEntry(c.set, iptables.Entry{Addr: e.Addr}))
		e.Port++
		e.Mark++
		all = append(all, NewSetEntry(c.set, e))
		if e.Net.IsValid() {
			e.Net = netip.PrefixFrom(e.Net.Addr(), e.Net.Bits()+1)
			all = append(all, NewSetEntry(c.set, e))
		}
	}
	for _, a := range all {
		for _, b := range all {
			if got, want := a.compare(b), byFields(a, b); got != want {
				t.Errorf("compare(%v, %v) = %d, want %d", a, b, got, want)
			}
		}
	}
}
