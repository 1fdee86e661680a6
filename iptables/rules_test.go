package iptables

import (
	"reflect"
	"strings"
	"testing"
)

func TestRenderRestore(t *testing.T) {
	tests := []struct {
		name   string
		table  string
		chains []Chain
		want   string
	}{
		{
			name:  "no chains",
			table: TableNAT,
			want:  "*nat\nCOMMIT\n",
		},
		{
			name:   "empty chain is declared, hence flushed",
			table:  TableFilter,
			chains: []Chain{{Name: "KUBE-IPVS-FILTER"}},
			want:   "*filter\n:KUBE-IPVS-FILTER - [0:0]\nCOMMIT\n",
		},
		{
			name:  "declarations first, rules in order, comments quoted",
			table: TableNAT,
			chains: []Chain{
				{Name: "KUBE-IPVS-POSTROUTING", Rules: [][]string{
					{"-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"},
					{"-j", "MARK", "--xor-mark", "0x4000"},
					{"-m", "comment", "--comment", "kube-ipvs: masquerade", "-j", "MASQUERADE", "--random-fully"},
				}},
				{Name: "KUBE-IPVS-MARK-MASQ", Rules: [][]string{
					{"-m", "comment", "--comment", "plain-comment_1", "-j", "MARK", "--or-mark", "0x4000"},
					{"-m", "comment", "--comment", "a.b", "-s", "10.0.0.0/8", "-j", "RETURN"},
					{"-m", "comment", "--comment", `say "hi" \ it's`, "-j", "RETURN"},
					{"-m", "comment", "--comment", "", "-j", "RETURN"},
				}},
			},
			want: `*nat
:KUBE-IPVS-POSTROUTING - [0:0]
:KUBE-IPVS-MARK-MASQ - [0:0]
-A KUBE-IPVS-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-IPVS-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-IPVS-POSTROUTING -m comment --comment "kube-ipvs: masquerade" -j MASQUERADE --random-fully
-A KUBE-IPVS-MARK-MASQ -m comment --comment plain-comment_1 -j MARK --or-mark 0x4000
-A KUBE-IPVS-MARK-MASQ -m comment --comment "a.b" -s 10.0.0.0/8 -j RETURN
-A KUBE-IPVS-MARK-MASQ -m comment --comment "say \"hi\" \\ it\'s" -j RETURN
-A KUBE-IPVS-MARK-MASQ -m comment --comment "" -j RETURN
COMMIT
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(renderRestore(tt.table, tt.chains)); got != tt.want {
				t.Errorf("renderRestore:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestParseRuleLines(t *testing.T) {
	tests := []struct {
		name    string
		chain   string
		lines   []string
		want    [][]string
		wantErr bool
	}{
		{
			name:  "user chain, -N skipped",
			chain: "KUBE-IPVS-POSTROUTING",
			lines: []string{
				"-N KUBE-IPVS-POSTROUTING",
				`-A KUBE-IPVS-POSTROUTING -m comment --comment "kube-ipvs: masquerade" -j MASQUERADE`,
				"-A KUBE-IPVS-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
			},
			want: [][]string{
				{"-m", "comment", "--comment", "kube-ipvs: masquerade", "-j", "MASQUERADE"},
				{"-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"},
			},
		},
		{
			name:  "built-in chain, -P skipped, escapes",
			chain: "POSTROUTING",
			lines: []string{
				"-P POSTROUTING ACCEPT",
				`-A POSTROUTING -m comment --comment "say \"hi\" \\ it\'s" -j KUBE-IPVS-POSTROUTING`,
				`-A POSTROUTING -m comment --comment "" -j RETURN`,
			},
			want: [][]string{
				{"-m", "comment", "--comment", `say "hi" \ it's`, "-j", "KUBE-IPVS-POSTROUTING"},
				{"-m", "comment", "--comment", "", "-j", "RETURN"},
			},
		},
		{
			name:  "empty chain",
			chain: "KUBE-X",
			lines: []string{"-N KUBE-X"},
		},
		{
			name:  "comment lines skipped (iptables-nft's warning about legacy tables)",
			chain: "KUBE-X",
			lines: []string{"# Warning: iptables-legacy tables present, use iptables-legacy to see them", "-N KUBE-X", "-A KUBE-X -j RETURN"},
			want:  [][]string{{"-j", "RETURN"}},
		},
		{
			name:  "nft counters dropped",
			chain: "KUBE-X",
			lines: []string{"-A KUBE-X -j RETURN -c 10 600"},
			want:  [][]string{{"-j", "RETURN"}},
		},
		{
			name:    "unterminated quote",
			chain:   "KUBE-X",
			lines:   []string{`-A KUBE-X -m comment --comment "oops -j RETURN`},
			wantErr: true,
		},
		{
			name:    "other chain",
			chain:   "KUBE-X",
			lines:   []string{"-A KUBE-Y -j RETURN"},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRuleLines(tt.chain, tt.lines)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []string
	}{
		{name: "blanks", line: "  -A  X\t-j RETURN ", want: []string{"-A", "X", "-j", "RETURN"}},
		{name: "quoted with blanks", line: `--comment "a b"`, want: []string{"--comment", "a b"}},
		{name: "closing quote ends the argument", line: `"a"b`, want: []string{"a", "b"}},
		{name: "quote opens mid-argument", line: `a"b c"`, want: []string{"ab c"}},
		{name: "empty quoted", line: `x "" y`, want: []string{"x", "", "y"}},
		{name: "backslash literal outside quotes", line: `a\b`, want: []string{`a\b`}},
		{name: "backslash escapes inside quotes", line: `"\"\\\'"`, want: []string{`"\'`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := splitArgs(tt.line)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRuleLineRoundTrip checks that what ruleLine writes, splitArgs (like
// iptables-restore) reads back unchanged.
func TestRuleLineRoundTrip(t *testing.T) {
	specs := [][]string{
		{"-m", "comment", "--comment", "kube-ipvs: masquerade", "-j", "MASQUERADE"},
		{"-m", "comment", "--comment", `q"uo\te's`, "-j", "RETURN"},
		{"-m", "comment", "--comment", "", "-j", "RETURN"},
		{"-m", "string", "--string", "a b", "--algo", "bm", "-j", "DROP"},
		{"-m", "string", "--string", "", "--algo", "bm", "-j", "DROP"},
		{"-s", `a\b`, "-j", "DROP"},
	}
	for _, spec := range specs {
		line := ruleLine("KUBE-X", spec)
		got, err := splitArgs(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if want := append([]string{"-A", "KUBE-X"}, spec...); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, want %q", line, got, want)
		}
	}
}

func TestValidateChains(t *testing.T) {
	tests := []struct {
		name    string
		chains  []Chain
		wantErr string
	}{
		{name: "fine", chains: []Chain{{Name: "KUBE-IPVS-A", Rules: [][]string{{"-j", "RETURN"}}}, {Name: "KUBE-IPVS-B"}}},
		{name: "built-in", chains: []Chain{{Name: "POSTROUTING"}}, wantErr: "built-in"},
		{name: "empty name", chains: []Chain{{}}, wantErr: "empty chain name"},
		{name: "too long", chains: []Chain{{Name: strings.Repeat("K", 29)}}, wantErr: "longer than 28"},
		{name: "twice", chains: []Chain{{Name: "KUBE-A"}, {Name: "KUBE-A"}}, wantErr: "twice"},
		{name: "empty rule", chains: []Chain{{Name: "KUBE-A", Rules: [][]string{{}}}}, wantErr: "empty rule"},
		{name: "line break", chains: []Chain{{Name: "KUBE-A", Rules: [][]string{{"--comment", "a\nb"}}}}, wantErr: "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateChains(TableNAT, tt.chains)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
