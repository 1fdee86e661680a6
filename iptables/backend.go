package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Backend is one of the two implementations of iptables 1.8 a node may use:
// the legacy one (x_tables, `xtables-legacy-multi`) or the nf_tables one
// (`xtables-nft-multi`). Both can hold rules at once, each invisible to the
// other's commands, so kube-ipvs must write its rules where the node's
// other rules (kubelet's, the CNI's) are.
type Backend string

// The backends, named as their commands are (iptables-legacy,
// iptables-nft).
const (
	BackendLegacy Backend = "legacy"
	BackendNFT    Backend = "nft"
)

// NewKernelFor returns the iptables of IPv4, or of IPv6 when ipv6 is set, of
// backend b: it runs iptables-legacy, iptables-legacy-restore and
// iptables-legacy-save (ip6tables-legacy… for IPv6), or the -nft ones,
// whatever the node's plain `iptables` points at. Like NewKernel it runs
// nothing. It panics on a Backend other than BackendLegacy and BackendNFT.
func NewKernelFor(b Backend, ipv6 bool) *Kernel {
	if b != BackendLegacy && b != BackendNFT {
		panic(fmt.Sprintf("iptables.NewKernelFor: unknown backend %q", b))
	}
	return newKernel(commandNames("iptables-"+string(b), ipv6), ipv6)
}

// kubeletChains are the chains kubelet (1.17 and later) makes in the mangle
// table of the backend it uses, so that containers can tell which one that
// is.
var kubeletChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"}

// SaveCount is what the save commands of one backend showed, for Decide.
type SaveCount struct {
	// Ran is set when at least one of its save commands (IPv4, IPv6)
	// succeeded: the backend can be used on this node.
	Ran bool
	// Hint is set when its mangle table holds kubelet's KUBE-IPTABLES-HINT
	// or KUBE-KUBELET-CANARY chain (IPv4 or IPv6).
	Hint bool
	// Rules counts its rules: the lines of its save output that start with
	// "-", IPv4 and IPv6 together.
	Rules int
}

// Add counts one save output (the whole of `iptables-nft-save` or
// `ip6tables-legacy-save`, all tables) into c.
func (c *SaveCount) Add(out []byte) {
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "-"):
			c.Rules++
		case strings.HasPrefix(line, ":") && table == TableMangle:
			name, _, _ := strings.Cut(line[1:], " ")
			for _, k := range kubeletChains {
				if name == k {
					c.Hint = true
				}
			}
		}
	}
}

// Decide picks the backend the node uses from what both backends' save
// commands showed, as kube-proxy's image decides it (the wrapper that
// kubernetes-sigs/iptables-wrappers' iptables-wrapper-installer.sh
// installs, before its rewrite in Go):
//
//  1. iptables-nft's mangle table holds kubelet's KUBE-IPTABLES-HINT or
//     KUBE-KUBELET-CANARY: nft;
//  2. else iptables-legacy's does: legacy;
//  3. else legacy if it holds more rules than nft, and nft otherwise, so
//     nft when there are no rules anywhere (the wrapper's default; its Go
//     rewrite defaults to nft as soon as no hint is found).
//
// One thing is added: a backend none of whose save commands ran is not
// chosen while the other's did (the wrapper would pick nft on a node
// without iptables-nft), and neither running is an error. why says in a
// sentence what decided, for the log.
func Decide(legacy, nft SaveCount) (b Backend, why string, err error) {
	switch {
	case !legacy.Ran && !nft.Ran:
		return "", "", errors.New("neither iptables-legacy-save nor iptables-nft-save ran")
	case !nft.Ran:
		return BackendLegacy, fmt.Sprintf("iptables-nft-save did not run; iptables-legacy holds %d rules", legacy.Rules), nil
	case !legacy.Ran:
		return BackendNFT, fmt.Sprintf("iptables-legacy-save did not run; iptables-nft holds %d rules", nft.Rules), nil
	case nft.Hint:
		return BackendNFT, "kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain is in iptables-nft's mangle table", nil
	case legacy.Hint:
		return BackendLegacy, "kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain is in iptables-legacy's mangle table", nil
	case legacy.Rules > nft.Rules:
		return BackendLegacy, fmt.Sprintf("no kubelet chain in either mangle table; iptables-legacy holds more rules (%d) than iptables-nft (%d)", legacy.Rules, nft.Rules), nil
	}
	return BackendNFT, fmt.Sprintf("no kubelet chain in either mangle table; iptables-legacy holds no more rules (%d) than iptables-nft (%d), and nft is the default", legacy.Rules, nft.Rules), nil
}

// detectCommands are the save commands Detect runs, by backend: both
// families, all tables. (iptables-legacy-save -t mangle would create the
// legacy mangle table, so the whole output is read, as the wrapper does.)
var detectCommands = []struct {
	backend Backend
	name    string
}{
	{BackendNFT, "iptables-nft-save"},
	{BackendNFT, "ip6tables-nft-save"},
	{BackendLegacy, "iptables-legacy-save"},
	{BackendLegacy, "ip6tables-legacy-save"},
}

// Detect finds the backend the node's rules are in: it runs
// iptables-nft-save, ip6tables-nft-save, iptables-legacy-save and
// ip6tables-legacy-save through run (which returns a command's stdout),
// counts what they print (SaveCount, the output of a failed command too,
// as the wrapper's `|| true` does) and lets Decide choose. why says what
// decided and which commands failed, for the log. It reads only: no table
// is created and no module loaded.
func Detect(run func(name string, args ...string) ([]byte, error)) (Backend, string, error) {
	counts := map[Backend]*SaveCount{BackendLegacy: {}, BackendNFT: {}}
	var failed []string
	for _, c := range detectCommands {
		out, err := run(c.name)
		counts[c.backend].Add(out)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.name, err))
			continue
		}
		counts[c.backend].Ran = true
	}
	b, why, err := Decide(*counts[BackendLegacy], *counts[BackendNFT])
	if err != nil {
		return "", "", fmt.Errorf("detecting the iptables backend: %w (%s)", err, strings.Join(failed, "; "))
	}
	if len(failed) > 0 {
		why += " (failed: " + strings.Join(failed, "; ") + ")"
	}
	return b, why, nil
}
