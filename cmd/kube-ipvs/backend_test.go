package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// TestIPTablesKernels runs no command on the host: detection reads canned
// save outputs.
func TestIPTablesKernels(t *testing.T) {
	cni := "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE\nCOMMIT\n"
	saves := func(outs map[string]string) func(string, ...string) ([]byte, error) {
		return func(name string, args ...string) ([]byte, error) {
			if len(args) != 0 {
				t.Errorf("%s %q: detection reads whole saves", name, args)
			}
			out, ok := outs[name]
			if !ok {
				return nil, errors.New("executable file not found")
			}
			return []byte(out), nil
		}
	}
	noRun := func(name string, args ...string) ([]byte, error) {
		t.Errorf("ran %s for a configured backend", name)
		return nil, errors.New("not run")
	}
	tests := []struct {
		name    string
		backend string
		run     func(string, ...string) ([]byte, error)
		want    [2]string // the IPv4 and IPv6 iptables binaries
		log     string    // the message logged
		fields  map[string]string
	}{
		{
			name: "legacy configured: no detection", backend: config.IPTablesBackendLegacy, run: noRun,
			want: [2]string{"iptables-legacy", "ip6tables-legacy"},
			log:  "iptables backend configured", fields: map[string]string{"backend": "legacy"},
		},
		{
			name: "nft configured", backend: config.IPTablesBackendNFT, run: noRun,
			want: [2]string{"iptables-nft", "ip6tables-nft"},
			log:  "iptables backend configured", fields: map[string]string{"backend": "nft"},
		},
		{
			name: "auto: the CNI's rules are in legacy", backend: config.IPTablesBackendAuto,
			run:  saves(map[string]string{"iptables-nft-save": "", "ip6tables-nft-save": "", "iptables-legacy-save": cni, "ip6tables-legacy-save": ""}),
			want: [2]string{"iptables-legacy", "ip6tables-legacy"},
			log:  "iptables backend detected", fields: map[string]string{"backend": "legacy", "why": "more rules (1)"},
		},
		{
			name: "auto: nothing anywhere is nft", backend: config.IPTablesBackendAuto,
			run:  saves(map[string]string{"iptables-nft-save": "", "ip6tables-nft-save": "", "iptables-legacy-save": "", "ip6tables-legacy-save": ""}),
			want: [2]string{"iptables-nft", "ip6tables-nft"},
			log:  "iptables backend detected", fields: map[string]string{"backend": "nft", "why": "nft is the default"},
		},
		{
			name: "auto without any save command: the plain names", backend: config.IPTablesBackendAuto,
			run:    saves(nil),
			want:   [2]string{"iptables", "ip6tables"},
			log:    "iptables backend: none detected; using the plain iptables commands",
			fields: map[string]string{"error": "neither iptables-legacy-save nor iptables-nft-save ran"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			v4, v6 := iptablesKernels(zap.New(core), tt.backend, tt.run)
			cmd4, _, save4 := v4.Commands()
			cmd6, restore6, _ := v6.Commands()
			if got := [2]string{cmd4, cmd6}; got != tt.want {
				t.Errorf("kernels run %q, want %q", got, tt.want)
			}
			if save4 != tt.want[0]+"-save" || restore6 != tt.want[1]+"-restore" {
				t.Errorf("save %q, restore %q: not the backend of %q", save4, restore6, tt.want)
			}
			entries := logs.All()
			if len(entries) != 1 || entries[0].Message != tt.log {
				t.Fatalf("logged %v, want one %q", entries, tt.log)
			}
			fields := entries[0].ContextMap()
			for k, want := range tt.fields {
				if got := fmt.Sprint(fields[k]); !strings.Contains(got, want) {
					t.Errorf("field %s = %q, want it to say %q", k, got, want)
				}
			}
		})
	}
}

// TestIPTablesKernelsDetectInTheBackground: iptablesKernels returns before
// detection ends, and the first command waits for it.
func TestIPTablesKernelsDetectInTheBackground(t *testing.T) {
	release := make(chan struct{})
	run := func(name string, _ ...string) ([]byte, error) {
		<-release
		if name == "iptables-legacy-save" {
			return []byte("*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"), nil
		}
		return nil, nil
	}
	returned := make(chan [2]*iptables.Kernel)
	go func() {
		v4, v6 := iptablesKernels(zap.NewNop(), config.IPTablesBackendAuto, run)
		returned <- [2]*iptables.Kernel{v4, v6}
	}()
	var k [2]*iptables.Kernel
	select {
	case k = <-returned:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("iptablesKernels waited for detection")
	}
	named := make(chan string)
	go func() { cmd, _, _ := k[1].Commands(); named <- cmd }()
	select {
	case cmd := <-named:
		t.Fatalf("the IPv6 kernel was named %q before detection ended", cmd)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if cmd := <-named; cmd != "ip6tables-legacy" {
		t.Errorf("IPv6 runs %q, want ip6tables-legacy (kubelet's hint is in legacy)", cmd)
	}
	if cmd, _, _ := k[0].Commands(); cmd != "iptables-legacy" {
		t.Errorf("IPv4 runs %q, want iptables-legacy", cmd)
	}
}
