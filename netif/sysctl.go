package netif

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

var _ Sysctl = (*ProcSysctl)(nil)

// DefaultSysctlRoot is where ProcSysctl finds its keys.
const DefaultSysctlRoot = "/proc/sys"

// ProcSysctl reads and writes sysctls as files under Root: the key
// "net/ipv4/vs/conntrack" is the file /proc/sys/net/ipv4/vs/conntrack.
// Set is like `sysctl -w net.ipv4.vs.conntrack=1`. A key whose file does
// not exist is ErrNotFound, for Set too: files are never created, as
// /proc/sys cannot create them either.
type ProcSysctl struct {
	// Root is the directory holding the keys; "" is DefaultSysctlRoot.
	// Tests point it at a temporary directory.
	Root string
}

// NewProcSysctl returns a ProcSysctl on /proc/sys. It has no side effects.
func NewProcSysctl() *ProcSysctl { return &ProcSysctl{Root: DefaultSysctlRoot} }

// Get returns the value of key with surrounding whitespace trimmed, like
// `sysctl -n net.ipv4.vs.conntrack`.
func (p *ProcSysctl) Get(key string) (string, error) {
	file, err := p.file(key)
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, mapFileErr(err))
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes value (trimmed, plus a newline, as `echo` writes) to key.
func (p *ProcSysctl) Set(key, value string) error {
	file, err := p.file(key)
	if err == nil {
		err = writeExisting(file, strings.TrimSpace(value)+"\n")
	}
	if err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, strings.TrimSpace(value), mapFileErr(err))
	}
	return nil
}

// writeExisting writes data to a file that must already exist, in one
// write call as procfs expects.
func writeExisting(file, data string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// file maps a key to its path under Root.
func (p *ProcSysctl) file(key string) (string, error) {
	if err := validateKey(key); err != nil {
		return "", err
	}
	root := p.Root
	if root == "" {
		root = DefaultSysctlRoot
	}
	return filepath.Join(root, filepath.FromSlash(key)), nil
}

// mapFileErr turns a missing file into ErrNotFound, keeping the cause.
func mapFileErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%w)", ErrNotFound, err)
	}
	return err
}

// validateKey accepts slash-separated keys such as "net/ipv4/ip_forward":
// relative, at least two parts, none empty, "." or "..". Dotted keys
// ("net.ipv4.ip_forward") are refused rather than converted, because
// interface names may contain dots ("net/ipv4/conf/eth0.100/rp_filter").
func validateKey(key string) error {
	if key == "" {
		return errors.New("empty sysctl key")
	}
	parts := strings.Split(key, "/")
	if len(parts) < 2 {
		return fmt.Errorf("invalid sysctl key %q: want a relative slash-separated path like net/ipv4/ip_forward", key)
	}
	for _, part := range parts {
		if part == "" || part == "." || part == ".." || strings.ContainsAny(part, "\\\x00 \t\n") {
			return fmt.Errorf("invalid sysctl key %q: want a relative slash-separated path like net/ipv4/ip_forward", key)
		}
	}
	return nil
}
