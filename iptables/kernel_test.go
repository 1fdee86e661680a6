package iptables

import (
	"errors"
	"reflect"
	"testing"
)

func TestNewKernelHasNoSideEffects(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		ipv6                   bool
		command, restore, save string
	}{
		{name: "ipv4", command: "iptables", restore: "iptables-restore", save: "iptables-save"},
		{name: "ipv6", ipv6: true, command: "ip6tables", restore: "ip6tables-restore", save: "ip6tables-save"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k := NewKernel(tt.ipv6)
			if k.ipt != nil {
				t.Error("NewKernel created the go-iptables handle")
			}
			if k.Command != tt.command || k.RestoreCommand != tt.restore || k.SaveCommand != tt.save {
				t.Errorf("runs %q, %q, %q; want %q, %q, %q", k.Command, k.RestoreCommand, k.SaveCommand, tt.command, tt.restore, tt.save)
			}
		})
	}
}

// TestKernelRestoreChains runs RestoreChains against a recording runner:
// nothing touches the host.
func TestKernelRestoreChains(t *testing.T) {
	type run struct {
		name  string
		args  []string
		stdin string
	}
	tests := []struct {
		name    string
		ipv6    bool
		chains  []Chain
		fail    error
		want    []run
		wantErr bool
	}{
		{
			name:   "ipv4 restore",
			chains: []Chain{{Name: "KUBE-IPVS-A", Rules: [][]string{{"-m", "comment", "--comment", "x y", "-j", "RETURN"}}}},
			want: []run{{
				name:  "iptables-restore",
				args:  []string{"--noflush", "--wait=5"},
				stdin: "*nat\n:KUBE-IPVS-A - [0:0]\n-A KUBE-IPVS-A -m comment --comment \"x y\" -j RETURN\nCOMMIT\n",
			}},
		},
		{
			name:   "ipv6 restore",
			ipv6:   true,
			chains: []Chain{{Name: "KUBE-IPVS-A"}},
			want: []run{{
				name:  "ip6tables-restore",
				args:  []string{"--noflush", "--wait=5"},
				stdin: "*nat\n:KUBE-IPVS-A - [0:0]\nCOMMIT\n",
			}},
		},
		{name: "nothing to restore runs nothing"},
		{name: "built-in chain refused before running", chains: []Chain{{Name: "POSTROUTING"}}, wantErr: true},
		{
			name:    "runner failure returned",
			chains:  []Chain{{Name: "KUBE-IPVS-A"}},
			fail:    errors.New("iptables-restore: line 2 failed"),
			want:    []run{{name: "iptables-restore", args: []string{"--noflush", "--wait=5"}, stdin: "*nat\n:KUBE-IPVS-A - [0:0]\nCOMMIT\n"}},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := NewKernel(tt.ipv6)
			var got []run
			k.runner = func(name string, args []string, stdin []byte) ([]byte, error) {
				got = append(got, run{name, args, string(stdin)})
				return nil, tt.fail
			}
			err := k.RestoreChains(TableNAT, tt.chains)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("runs = %q, want %q", got, tt.want)
			}
			if k.ipt != nil {
				t.Error("RestoreChains created the go-iptables handle")
			}
		})
	}
}

func TestKernelDeleteChainRefusesBuiltin(t *testing.T) {
	// Refused before any iptables binary is looked up.
	if err := NewKernel(false).DeleteChain(TableNAT, "POSTROUTING"); err == nil {
		t.Fatal("deleting a built-in chain was not refused")
	}
}

func TestMapRestoreError(t *testing.T) {
	tests := []struct {
		stderr string
		want   error // nil: untyped
	}{
		{"iptables-restore v1.8.9 (nf_tables): Chain 'KIPVS-X' does not exist\nError occurred at line: 6", ErrNotFound},
		{"iptables-restore v1.8.9 (nf_tables): Set KIPVS-S doesn't exist.\nError occurred at line: 3", ErrNotFound},
		{"iptables-restore v1.8.7 (legacy): Couldn't load target `KIPVS-X':No such file or directory", ErrNotFound},
		{"iptables-restore v1.8.9 (nf_tables): CHAIN_USER_DEL failed (Device or resource busy): chain KIPVS-X", ErrInUse},
		{"iptables-restore: line 3 failed: Too many links", ErrInUse},
		{"iptables-restore: line 2 failed", nil},
	}
	for _, tt := range tests {
		err := mapRestoreError("deleting chain filter/KIPVS-X", errors.New(tt.stderr))
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%q: err = %v, want %v", tt.stderr, err, tt.want)
		}
		if tt.want == nil && (errors.Is(err, ErrNotFound) || errors.Is(err, ErrInUse)) {
			t.Errorf("%q: err = %v, want untyped", tt.stderr, err)
		}
	}
}

func TestRenderDeleteChain(t *testing.T) {
	got := string(renderDeleteChain(TableFilter, "KIPVS-A"))
	if want := "*filter\n:KIPVS-A - [0:0]\n-X KIPVS-A\nCOMMIT\n"; got != want {
		t.Errorf("renderDeleteChain = %q, want %q", got, want)
	}
}

// TestNewKernelLater: the backend is asked for once, at the first call
// that runs a binary, which then runs that backend's; a backend it does
// not know gives the plain names.
func TestNewKernelLater(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ipv6    bool
		backend Backend
		save    string
	}{
		{name: "nft", backend: BackendNFT, save: "iptables-nft-save"},
		{name: "legacy ipv6", ipv6: true, backend: BackendLegacy, save: "ip6tables-legacy-save"},
		{name: "none found", backend: "", save: "iptables-save"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			asked := 0
			k := NewKernelLater(tt.ipv6, func() Backend { asked++; return tt.backend })
			var ran []string
			k.runner = func(name string, _ []string, _ []byte) ([]byte, error) {
				ran = append(ran, name)
				return []byte("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"), nil
			}
			if asked != 0 {
				t.Fatalf("NewKernelLater asked for the backend %d times before any call", asked)
			}
			for range 2 {
				if _, err := k.SaveTable(TableNAT); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, save := k.Commands(); asked != 1 || save != tt.save {
				t.Errorf("asked %d times, saves with %q; want once, %q", asked, save, tt.save)
			}
			if want := []string{tt.save, tt.save}; !reflect.DeepEqual(ran, want) {
				t.Errorf("ran %q, want %q", ran, want)
			}
		})
	}
}
