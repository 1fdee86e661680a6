package netif

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// procRoot builds a /proc/sys stand-in in a temporary directory.
func procRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for key, content := range files {
		p := filepath.Join(root, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestNewProcSysctl(t *testing.T) {
	if p := NewProcSysctl(); p.Root != "/proc/sys" {
		t.Errorf("Root = %q", p.Root)
	}
}

func TestProcSysctl(t *testing.T) {
	files := map[string]string{
		"net/ipv4/vs/conntrack":                   "0\n",
		"net/ipv4/conf/eth0.100/arp_ignore":       "0\n",
		"net/ipv4/ip_local_reserved_ports":        "\n",
		"net/ipv4/vs/expire_quiescent_template":   "0",
		"net/bridge/bridge-nf-call-iptables":      "1\n",
		"net/ipv4/vs/sloppy_tcp/not-a-file/.keep": "",
	}
	tests := []struct {
		name     string
		op       func(p *ProcSysctl) (string, error)
		want     string
		wantErr  error
		wantMsg  string // prefix of the error text; "" means success
		wantFile map[string]string
	}{
		{
			name: "get trims the newline",
			op:   func(p *ProcSysctl) (string, error) { return p.Get("net/ipv4/vs/conntrack") },
			want: "0",
		},
		{
			name: "get key through a dotted interface name",
			op:   func(p *ProcSysctl) (string, error) { return p.Get("net/ipv4/conf/eth0.100/arp_ignore") },
			want: "0",
		},
		{
			name: "get empty value",
			op:   func(p *ProcSysctl) (string, error) { return p.Get("net/ipv4/ip_local_reserved_ports") },
			want: "",
		},
		{
			name:    "get missing",
			op:      func(p *ProcSysctl) (string, error) { return p.Get("net/ipv4/vs/conn_reuse_mode") },
			wantErr: ErrNotFound,
			wantMsg: "reading sysctl net/ipv4/vs/conn_reuse_mode: not found (open ",
		},
		{
			name:    "get dotted key",
			op:      func(p *ProcSysctl) (string, error) { return p.Get("net.ipv4.vs.conntrack") },
			wantMsg: `reading sysctl net.ipv4.vs.conntrack: invalid sysctl key "net.ipv4.vs.conntrack"`,
		},
		{
			name:    "get absolute key",
			op:      func(p *ProcSysctl) (string, error) { return p.Get("/etc/passwd") },
			wantMsg: `reading sysctl /etc/passwd: invalid sysctl key "/etc/passwd"`,
		},
		{
			name:     "set writes trimmed value and newline",
			op:       func(p *ProcSysctl) (string, error) { return "", p.Set("net/ipv4/vs/conntrack", " 1 ") },
			wantFile: map[string]string{"net/ipv4/vs/conntrack": "1\n"},
		},
		{
			name: "set replaces a longer value",
			op: func(p *ProcSysctl) (string, error) {
				return "", p.Set("net/ipv4/ip_local_reserved_ports", "30000-32767")
			},
			wantFile: map[string]string{"net/ipv4/ip_local_reserved_ports": "30000-32767\n"},
		},
		{
			name:     "set does not create a missing key",
			op:       func(p *ProcSysctl) (string, error) { return "", p.Set("net/ipv4/vs/conn_reuse_mode", "0") },
			wantErr:  ErrNotFound,
			wantMsg:  "setting sysctl net/ipv4/vs/conn_reuse_mode=0: not found (open ",
			wantFile: map[string]string{"net/ipv4/vs/conn_reuse_mode": ""},
		},
		{
			name:    "set escaping the root",
			op:      func(p *ProcSysctl) (string, error) { return "", p.Set("net/../../x", "1") },
			wantMsg: `setting sysctl net/../../x=1: invalid sysctl key "net/../../x"`,
		},
		{
			name:    "get a directory",
			op:      func(p *ProcSysctl) (string, error) { return p.Get("net/ipv4/vs") },
			wantMsg: "reading sysctl net/ipv4/vs: read ",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := procRoot(t, files)
			p := &ProcSysctl{Root: root}
			got, err := tc.op(p)
			if tc.wantMsg == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantMsg != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantMsg)) {
				t.Fatalf("error = %v, want prefix %q", err, tc.wantMsg)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("value = %q, want %q", got, tc.want)
			}
			for key, want := range tc.wantFile {
				b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(key)))
				if want == "" {
					if err == nil {
						t.Errorf("%s was created", key)
					}
					continue
				}
				if err != nil || string(b) != want {
					t.Errorf("%s = %q, %v; want %q", key, b, err, want)
				}
			}
		})
	}
}
