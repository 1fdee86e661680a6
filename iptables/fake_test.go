package iptables

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const emptyDump = `*filter
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
COMMIT
`

var (
	masqSpec = []string{"-m", "comment", "--comment", "kube-ipvs: masquerade", "-j", "MASQUERADE"}
	jumpPost = []string{"-m", "comment", "--comment", "kube-ipvs postrouting", "-j", "KUBE-IPVS-POSTROUTING"}
)

// mustRestore seeds a Fake with one chain.
func mustRestore(t *testing.T, f *Fake, table string, chains ...Chain) {
	t.Helper()
	if err := f.RestoreChains(table, chains); err != nil {
		t.Fatal(err)
	}
}

func TestFakeStartsWithBuiltins(t *testing.T) {
	if got := NewFake().Dump(); got != emptyDump {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, emptyDump)
	}
}

func TestFakeErrors(t *testing.T) {
	post := Chain{Name: "KUBE-IPVS-POSTROUTING", Rules: [][]string{masqSpec}}
	tests := []struct {
		name    string
		setup   func(t *testing.T, f *Fake)
		op      func(f *Fake) error
		want    error // a typed error, or nil
		wantAny bool  // an untyped error
	}{
		{
			name: "ListRules missing chain",
			op:   func(f *Fake) error { _, err := f.ListRules(TableNAT, "KUBE-NOPE"); return err },
			want: ErrNotFound,
		},
		{
			name: "ListRules missing table",
			op:   func(f *Fake) error { _, err := f.ListRules("nosuch", "PREROUTING"); return err },
			want: ErrNotFound,
		},
		{
			name: "EnsureRule missing chain",
			op:   func(f *Fake) error { _, err := f.EnsureRule(TableNAT, "KUBE-NOPE", masqSpec); return err },
			want: ErrNotFound,
		},
		{
			name: "EnsureRule jump to missing chain",
			op:   func(f *Fake) error { _, err := f.EnsureRule(TableNAT, "POSTROUTING", jumpPost); return err },
			want: ErrNotFound,
		},
		{
			name: "EnsureRule on missing set when linked",
			op: func(f *Fake) error {
				f.IPSets = NewFakeSets()
				_, err := f.EnsureRule(TableFilter, "INPUT", []string{"-m", "set", "--match-set", "KUBE-IPVS-X", "dst", "-j", "ACCEPT"})
				return err
			},
			want: ErrNotFound,
		},
		{
			name:  "EnsureRule mapping from a missing set when linked",
			setup: func(t *testing.T, f *Fake) { mustRestore(t, f, TableMangle, Chain{Name: "KUBE-IPVS-SC"}) },
			op: func(f *Fake) error {
				f.IPSets = NewFakeSets()
				_, err := f.EnsureRule(TableMangle, "KUBE-IPVS-SC", mapMark("KUBE-IPVS-X"))
				return err
			},
			want: ErrNotFound,
		},
		{
			name:    "EnsureRule SET --map-set outside mangle",
			op:      func(f *Fake) error { _, err := f.EnsureRule(TableFilter, "INPUT", mapMark("KUBE-IPVS-X")); return err },
			wantAny: true,
		},
		{
			name: "RestoreChains SET --map-set outside mangle",
			op: func(f *Fake) error {
				return f.RestoreChains(TableNAT, []Chain{{Name: "KUBE-IPVS-SC", Rules: [][]string{mapMark("KUBE-IPVS-X")}}})
			},
			wantAny: true,
		},
		{
			name: "DeleteRule missing rule",
			op:   func(f *Fake) error { return f.DeleteRule(TableNAT, "POSTROUTING", masqSpec) },
			want: ErrNotFound,
		},
		{
			name: "DeleteRule missing chain",
			op:   func(f *Fake) error { return f.DeleteRule(TableNAT, "KUBE-NOPE", masqSpec) },
			want: ErrNotFound,
		},
		{
			name: "DeleteChain missing",
			op:   func(f *Fake) error { return f.DeleteChain(TableNAT, "KUBE-NOPE") },
			want: ErrNotFound,
		},
		{
			name: "DeleteChain still jumped to",
			setup: func(t *testing.T, f *Fake) {
				mustRestore(t, f, TableNAT, post)
				if _, err := f.EnsureRule(TableNAT, "POSTROUTING", jumpPost); err != nil {
					t.Fatal(err)
				}
			},
			op:   func(f *Fake) error { return f.DeleteChain(TableNAT, "KUBE-IPVS-POSTROUTING") },
			want: ErrInUse,
		},
		{
			name:    "DeleteChain built-in refused",
			op:      func(f *Fake) error { return f.DeleteChain(TableNAT, "POSTROUTING") },
			wantAny: true,
		},
		{
			name:    "RestoreChains built-in refused",
			op:      func(f *Fake) error { return f.RestoreChains(TableNAT, []Chain{{Name: "POSTROUTING"}}) },
			wantAny: true,
		},
		{
			name:    "RestoreChains unknown table",
			op:      func(f *Fake) error { return f.RestoreChains("nosuch", []Chain{post}) },
			wantAny: true,
		},
		{
			name: "RestoreChains is all or nothing",
			op: func(f *Fake) error {
				return f.RestoreChains(TableNAT, []Chain{post, {Name: "KUBE-IPVS-B", Rules: [][]string{{"-j", "KUBE-NOPE"}}}})
			},
			want: ErrNotFound,
		},
		{
			name: "Hook error returned as-is, nothing done",
			op: func(f *Fake) error {
				f.Hook = func(string, ...string) error { return errBoom }
				return f.RestoreChains(TableNAT, []Chain{post})
			},
			want: errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake()
			if tt.setup != nil {
				tt.setup(t, f)
			}
			before := f.Dump()
			err := tt.op(f)
			switch {
			case tt.wantAny:
				if err == nil {
					t.Fatal("no error")
				}
				for _, typed := range []error{ErrNotFound, ErrExists, ErrInUse} {
					if errors.Is(err, typed) {
						t.Errorf("err %v is %v", err, typed)
					}
				}
			case !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if after := f.Dump(); after != before {
				t.Errorf("a failed call changed the state:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

var errBoom = errors.New("boom")

// mapMark is kube-ipvs's short-circuit rule: the packet takes the mark of
// its destination's member of set.
func mapMark(set string) []string {
	return []string{"-m", "set", "--match-set", set, "dst,dst", "-j", "SET", "--map-set", set, "dst,dst", "--map-mark"}
}

// TestFakeLazyTables: mangle appears, with its built-in chains, once used;
// a mapping rule is taken there.
func TestFakeLazyTables(t *testing.T) {
	f := NewFake()
	if got := f.Dump(); got != emptyDump {
		t.Fatalf("a new fake shows mangle before it is used:\n%s", got)
	}
	mustRestore(t, f, TableMangle, Chain{Name: "KIPVS-SHORT-CIRCUIT", Rules: [][]string{mapMark("KIPVS-SC")}})
	if _, err := f.EnsureRule(TableMangle, "INPUT", []string{"-j", "KIPVS-SHORT-CIRCUIT"}); err != nil {
		t.Fatal(err)
	}
	want := emptyDump[:strings.Index(emptyDump, "*nat")] + `*mangle
:PREROUTING ACCEPT
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:KIPVS-SHORT-CIRCUIT -
-A INPUT -j KIPVS-SHORT-CIRCUIT
-A KIPVS-SHORT-CIRCUIT -m set --match-set KIPVS-SC dst,dst -j SET --map-set KIPVS-SC dst,dst --map-mark
COMMIT
` + emptyDump[strings.Index(emptyDump, "*nat"):]
	if got := f.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
}

func TestFakeDump(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, TableNAT,
		Chain{Name: "KUBE-IPVS-POSTROUTING", Rules: [][]string{
			{"-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"},
			masqSpec,
		}},
		Chain{Name: "KUBE-IPVS-MARK-MASQ", Rules: [][]string{{"-j", "MARK", "--or-mark", "0x4000"}}},
	)
	mustRestore(t, f, TableFilter, Chain{Name: "KUBE-IPVS-FILTER"})
	for _, r := range []struct {
		table, chain string
		spec         []string
	}{
		{TableNAT, "POSTROUTING", jumpPost},
		{TableFilter, "INPUT", []string{"-j", "KUBE-IPVS-FILTER"}},
		{TableFilter, "INPUT", []string{"-i", "lo", "-j", "ACCEPT"}},
	} {
		if _, err := f.EnsureRule(r.table, r.chain, r.spec); err != nil {
			t.Fatal(err)
		}
	}
	want := `*filter
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:KUBE-IPVS-FILTER -
-A INPUT -i lo -j ACCEPT
-A INPUT -j KUBE-IPVS-FILTER
COMMIT
*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:KUBE-IPVS-MARK-MASQ -
:KUBE-IPVS-POSTROUTING -
-A POSTROUTING -m comment --comment "kube-ipvs postrouting" -j KUBE-IPVS-POSTROUTING
-A KUBE-IPVS-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-IPVS-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-IPVS-POSTROUTING -m comment --comment "kube-ipvs: masquerade" -j MASQUERADE
COMMIT
`
	if got := f.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
}

// flannelSave is what iptables-save prints on a node with Flannel and
// Docker: counters, comment lines, a DROP policy, a mangle table.
const flannelSave = `# Generated by iptables-save v1.8.9 (nf_tables) on Mon Jan  5 10:00:00 2026
*mangle
:PREROUTING ACCEPT [100:6000]
:INPUT ACCEPT [100:6000]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [90:5400]
:POSTROUTING ACCEPT [90:5400]
COMMIT
# Completed on Mon Jan  5 10:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
`

const flannelDump = `*filter
:INPUT ACCEPT
:FORWARD DROP
:OUTPUT ACCEPT
:FLANNEL-FWD -
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT
:INPUT ACCEPT
:FORWARD ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:FLANNEL-POSTRTG -
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
`

func TestFakeLoad(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    string
		wantErr bool
	}{
		{name: "iptables-save text", text: flannelSave, want: flannelDump},
		{name: "round trip of a Dump", text: flannelDump, want: flannelDump},
		{name: "empty text keeps everything", text: "", want: emptyDump},
		{name: "rule in undeclared chain", text: "*nat\n-A FOO -j RETURN\nCOMMIT\n", wantErr: true},
		{name: "missing COMMIT", text: "*nat\n:FOO - [0:0]\n", wantErr: true},
		{name: "rule outside a table", text: "-A FOO -j RETURN\n", wantErr: true},
		{name: "unterminated quote", text: "*nat\n:FOO - [0:0]\n-A FOO -m comment --comment \"x\nCOMMIT\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake()
			err := f.Load(tt.text)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if got := f.Dump(); got != emptyDump {
					t.Errorf("failed Load changed the state:\n%s", got)
				}
				return
			}
			if got := f.Dump(); got != tt.want {
				t.Errorf("Dump:\n%s\nwant:\n%s", got, tt.want)
			}
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("Load counted calls: %v", calls)
			}
		})
	}
}

func TestFakeLoadedRules(t *testing.T) {
	f := NewFake()
	if err := f.Load(flannelSave); err != nil {
		t.Fatal(err)
	}
	got, err := f.ListRules(TableNAT, "FLANNEL-POSTRTG")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"-m", "mark", "--mark", "0x4000/0x4000", "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN"},
		{"-s", "10.244.0.0/16", "!", "-d", "224.0.0.0/4", "-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE", "--random-fully"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListRules = %q, want %q", got, want)
	}
}

func TestFakeRestoreChainsReplacesOnlyNamed(t *testing.T) {
	f := NewFake()
	if err := f.Load(flannelSave); err != nil {
		t.Fatal(err)
	}
	mustRestore(t, f, TableNAT,
		Chain{Name: "KUBE-IPVS-A", Rules: [][]string{{"-j", "RETURN"}, {"-j", "KUBE-IPVS-B"}}},
		Chain{Name: "KUBE-IPVS-B", Rules: [][]string{{"-j", "MASQUERADE"}}},
		Chain{Name: "KUBE-IPVS-C", Rules: [][]string{{"-j", "ACCEPT"}}},
	)
	if _, err := f.EnsureRule(TableNAT, "POSTROUTING", []string{"-j", "KUBE-IPVS-A"}); err != nil {
		t.Fatal(err)
	}
	// Second restore: A gets a new body, B is emptied, C is not named.
	mustRestore(t, f, TableNAT,
		Chain{Name: "KUBE-IPVS-A", Rules: [][]string{{"-s", "10.0.0.0/8", "-j", "KUBE-IPVS-B"}}},
		Chain{Name: "KUBE-IPVS-B"},
	)
	want := strings.Replace(flannelDump, `:FLANNEL-POSTRTG -
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
`, `:FLANNEL-POSTRTG -
:KUBE-IPVS-A -
:KUBE-IPVS-B -
:KUBE-IPVS-C -
-A POSTROUTING -j KUBE-IPVS-A
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
`, 1)
	want = strings.Replace(want, `--random-fully
COMMIT
`, `--random-fully
-A KUBE-IPVS-A -s 10.0.0.0/8 -j KUBE-IPVS-B
-A KUBE-IPVS-C -j ACCEPT
COMMIT
`, 1)
	if got := f.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
}

func TestFakeEnsureRuleIdempotent(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, TableNAT, Chain{Name: "KUBE-IPVS-POSTROUTING"})
	steps := []struct {
		name string
		spec []string
		want bool
	}{
		{name: "first insert", spec: jumpPost, want: true},
		{name: "same rule again", spec: jumpPost, want: false},
		{name: "other rule goes to the head", spec: []string{"-j", "RETURN"}, want: true},
		{name: "first rule, no longer at the head, still not doubled", spec: jumpPost, want: false},
	}
	for _, s := range steps {
		got, err := f.EnsureRule(TableNAT, "POSTROUTING", s.spec)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got != s.want {
			t.Errorf("%s: inserted = %v, want %v", s.name, got, s.want)
		}
	}
	rules, err := f.ListRules(TableNAT, "POSTROUTING")
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{"-j", "RETURN"}, jumpPost}; !reflect.DeepEqual(rules, want) {
		t.Errorf("rules = %q, want %q", rules, want)
	}
}

func TestFakeDeleteRuleAndChain(t *testing.T) {
	f := NewFake()
	mustRestore(t, f, TableNAT, Chain{Name: "KUBE-IPVS-POSTROUTING", Rules: [][]string{masqSpec}})
	if _, err := f.EnsureRule(TableNAT, "POSTROUTING", jumpPost); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteRule(TableNAT, "POSTROUTING", jumpPost); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteChain(TableNAT, "KUBE-IPVS-POSTROUTING"); err != nil {
		t.Fatal(err)
	}
	if got := f.Dump(); got != emptyDump {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, emptyDump)
	}
}

func TestFakeCallsAndHook(t *testing.T) {
	f := NewFake()
	var seen []string
	f.Hook = func(method string, args ...string) error {
		seen = append(seen, method+" "+strings.Join(args, " "))
		return nil
	}
	mustRestore(t, f, TableNAT, Chain{Name: "KUBE-IPVS-A"}, Chain{Name: "KUBE-IPVS-B"})
	_, _ = f.EnsureRule(TableNAT, "POSTROUTING", []string{"-j", "KUBE-IPVS-A"})
	_, _ = f.ListRules(TableNAT, "POSTROUTING")
	_, _ = f.ListRules(TableNAT, "KUBE-NOPE") // failed calls count too
	_ = f.DeleteRule(TableNAT, "POSTROUTING", []string{"-j", "KUBE-IPVS-A"})
	_ = f.DeleteChain(TableNAT, "KUBE-IPVS-B")
	_ = f.Dump() // not a call

	wantCalls := map[string]int{"RestoreChains": 1, "EnsureRule": 1, "ListRules": 2, "DeleteRule": 1, "DeleteChain": 1}
	if got := f.Calls(); !reflect.DeepEqual(got, wantCalls) {
		t.Errorf("Calls = %v, want %v", got, wantCalls)
	}
	if f.Reads() != 2 || f.Writes() != 4 {
		t.Errorf("Reads, Writes = %d, %d, want 2, 4", f.Reads(), f.Writes())
	}
	wantSeen := []string{
		"RestoreChains nat KUBE-IPVS-A KUBE-IPVS-B",
		"EnsureRule nat POSTROUTING -j KUBE-IPVS-A",
		"ListRules nat POSTROUTING",
		"ListRules nat KUBE-NOPE",
		"DeleteRule nat POSTROUTING -j KUBE-IPVS-A",
		"DeleteChain nat KUBE-IPVS-B",
	}
	if !reflect.DeepEqual(seen, wantSeen) {
		t.Errorf("Hook saw %q, want %q", seen, wantSeen)
	}
	f.ResetCalls()
	if got := f.Calls(); len(got) != 0 || f.Reads() != 0 || f.Writes() != 0 {
		t.Errorf("after ResetCalls: %v", got)
	}
}

func TestFakeKernelLinksSets(t *testing.T) {
	f, sets := NewFakeKernel()
	rule := []string{"-m", "set", "--match-set", "KUBE-IPVS-CLUSTER-IP", "dst,dst", "-j", "ACCEPT"}
	if _, err := f.EnsureRule(TableFilter, "INPUT", rule); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rule on a missing set: err = %v, want ErrNotFound", err)
	}
	if err := sets.CreateSet(Set{Name: "KUBE-IPVS-CLUSTER-IP", Type: HashIPPort}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.EnsureRule(TableFilter, "INPUT", rule); err != nil {
		t.Fatal(err)
	}
	if err := sets.DestroySet("KUBE-IPVS-CLUSTER-IP"); !errors.Is(err, ErrInUse) {
		t.Fatalf("destroying a referenced set: err = %v, want ErrInUse", err)
	}
	if err := f.DeleteRule(TableFilter, "INPUT", rule); err != nil {
		t.Fatal(err)
	}
	if err := sets.DestroySet("KUBE-IPVS-CLUSTER-IP"); err != nil {
		t.Fatal(err)
	}

	// A SET target holds the set it maps from, as a match does.
	if err := sets.CreateSet(Set{Name: "KIPVS-SC", Type: HashIPPort, SkbInfo: true}); err != nil {
		t.Fatal(err)
	}
	mapOnly := []string{"-j", "SET", "--map-set", "KIPVS-SC", "dst,dst", "--map-mark"}
	if _, err := f.EnsureRule(TableMangle, "OUTPUT", mapOnly); err != nil {
		t.Fatal(err)
	}
	if err := sets.DestroySet("KIPVS-SC"); !errors.Is(err, ErrInUse) {
		t.Fatalf("destroying a set a SET target maps from: err = %v, want ErrInUse", err)
	}
}
