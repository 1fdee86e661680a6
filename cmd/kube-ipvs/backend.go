package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/iptables"
)

// iptablesKernels returns the iptables of IPv4 and of IPv6 of the
// configured backend (iptablesBackend): "legacy" and "nft" as named,
// "auto" the one holding the node's rules, as kube-proxy's iptables-wrapper
// finds it (iptables.Detect, which runs the four save commands through
// run: runSave), logged with the reason. Detection runs in the background
// from now, while the agent connects and its informers list (a tenth to a
// fifth of a second on a slow node); the first iptables command waits for
// it. Both families use one backend, as the wrapper picks one for both.
// When no save command of either backend runs, it says so and uses the
// plain `iptables` names, wherever the node's alternatives point.
func iptablesKernels(log *zap.Logger, backend string, run func(string, ...string) ([]byte, error)) (v4, v6 *iptables.Kernel) {
	var b iptables.Backend
	switch backend {
	case config.IPTablesBackendLegacy:
		b = iptables.BackendLegacy
	case config.IPTablesBackendNFT:
		b = iptables.BackendNFT
	default: // "auto"; Validate refuses anything else
		detected := sync.OnceValue(func() iptables.Backend { return detectBackend(log, run) })
		go detected() // a Kernel's first call waits for this one
		return iptables.NewKernelLater(false, detected), iptables.NewKernelLater(true, detected)
	}
	log.Info("iptables backend configured", zap.String("backend", string(b)))
	return iptables.NewKernelFor(b, false), iptables.NewKernelFor(b, true)
}

// detectBackend runs iptables.Detect and logs what it found and why; ""
// (the plain commands) when it found none.
func detectBackend(log *zap.Logger, run func(string, ...string) ([]byte, error)) iptables.Backend {
	detected, why, err := iptables.Detect(run)
	if err != nil {
		log.Warn("iptables backend: none detected; using the plain iptables commands", zap.Error(err))
		return ""
	}
	log.Info("iptables backend detected", zap.String("backend", string(detected)), zap.String("why", why))
	return detected
}

// runSave runs a save command for iptables.Detect: its stdout, and on
// failure an error carrying its stderr.
func runSave(name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return stdout.Bytes(), err
	}
	return stdout.Bytes(), nil
}
