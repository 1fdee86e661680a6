//go:build vmtest

// Package vm boots the real-kernel test bed: a throwaway qemu VM (TCG, no host
// networking) from the Debian kernel and guest tree that prepare.sh caches, runs
// the guest tests of ./guest inside it and reports each one as a subtest here.
//
//	sudo test/vm/prepare.sh
//	go test -tags vmtest -v ./test/vm
//
// Environment:
//
//	KIPVS_CACHE          cache root (default /var/cache/kube-ipvs); the tree is $KIPVS_CACHE/vm/current
//	KIPVS_VM_RUN         regexp passed to the guest as -test.run
//	KIPVS_VM_TIMEOUT     limit for the VM run (default 15m, capped by go test -timeout)
//	KIPVS_VM_GUESTFWD    a host loopback port P: the guest reaches 127.0.0.1:P at 10.0.2.100:P
//	KIPVS_GUEST_*        exported unchanged into the guest tests' environment
//	KIPVS_VM_SHELL=1     boot interactively with a shell on stdio (see shell.sh)
package vm

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const defaultTimeout = 15 * time.Minute

type config struct {
	tree     string        // the prepared cache entry: vmlinuz, rootfs/, kernel-version
	run      string        // guest -test.run
	timeout  time.Duration // the whole VM run
	guestFwd int           // host loopback port forwarded into the guest, 0 for none
	shell    bool
	guestEnv map[string]string
}

func loadConfig(t *testing.T) config {
	t.Helper()
	cache := os.Getenv("KIPVS_CACHE")
	if cache == "" {
		cache = "/var/cache/kube-ipvs"
	}
	cfg := config{
		tree:     filepath.Join(cache, "vm", "current"),
		run:      os.Getenv("KIPVS_VM_RUN"),
		timeout:  defaultTimeout,
		shell:    os.Getenv("KIPVS_VM_SHELL") == "1",
		guestEnv: map[string]string{},
	}
	if _, err := os.Stat(filepath.Join(cfg.tree, "READY")); err != nil {
		t.Fatalf("no prepared VM tree at %s (%v): run `sudo test/vm/prepare.sh` first", cfg.tree, err)
	}
	if cfg.run != "" {
		if _, err := regexp.Compile(cfg.run); err != nil {
			t.Fatalf("KIPVS_VM_RUN=%q: %v", cfg.run, err)
		}
	}
	if s := os.Getenv("KIPVS_VM_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("KIPVS_VM_TIMEOUT=%q: want a positive duration like 10m", s)
		}
		cfg.timeout = d
	}
	if s := os.Getenv("KIPVS_VM_GUESTFWD"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			t.Fatalf("KIPVS_VM_GUESTFWD=%q: want a host loopback TCP port", s)
		}
		cfg.guestFwd = p
	}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KIPVS_GUEST_") {
			cfg.guestEnv[k] = v
		}
	}
	return cfg
}

// TestVM builds the binaries, boots the VM and replays every guest test as a subtest.
func TestVM(t *testing.T) {
	cfg := loadConfig(t)
	trackSources(t, moduleRoot(t))
	work := t.TempDir()
	start := time.Now()
	bins := buildBinaries(t, work)
	t.Logf("built kube-ipvs, backend and guest.test in %v", time.Since(start).Round(time.Millisecond))

	timeout := vmTimeout(t, cfg)
	initrd := filepath.Join(work, "initrd.img")
	start = time.Now()
	if err := writeInitramfs(initrd, filepath.Join(cfg.tree, "rootfs"), guestFiles(cfg, bins, timeout)); err != nil {
		t.Fatalf("writing the initramfs: %v", err)
	}
	if st, err := os.Stat(initrd); err == nil {
		t.Logf("initramfs: %.1f MiB in %v", float64(st.Size())/(1<<20), time.Since(start).Round(time.Millisecond))
	}
	if cfg.shell {
		runShell(t, cfg, initrd)
		return
	}
	run := bootVM(t, cfg, initrd, work, timeout)
	checkRun(t, run)
	replay(t, run)
}

// vmTimeout is KIPVS_VM_TIMEOUT, cut so the VM is stopped (and cleaned up) before
// go test's own deadline kills the test binary.
func vmTimeout(t *testing.T, cfg config) time.Duration {
	t.Helper()
	d := cfg.timeout
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - 30*time.Second; left < d {
			d = left
		}
	}
	if d < time.Minute && !cfg.shell {
		t.Fatalf("only %v left for the VM run: raise go test -timeout", d)
	}
	return d
}

// moduleRoot is the directory holding go.mod, found upward from the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// trackSources stats every Go file, go.mod and go.sum of the module. go test
// caches a result until a file the test itself opened or stat'ed changes; the
// guest programs are built by a child `go build`, so without this a change to
// their sources would replay a stale cached result.
func trackSources(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if name := d.Name(); !d.IsDir() && (strings.HasSuffix(name, ".go") || name == "go.mod" || name == "go.sum") {
			_, err = os.Stat(p)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listing the module's sources: %v", err)
	}
}

type binaries struct{ agent, backend, guest string }

// buildBinaries builds the static guest programs into dir, like
// `CGO_ENABLED=0 go build -o dir/kube-ipvs ./cmd/kube-ipvs`.
func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	root := moduleRoot(t)
	b := binaries{
		agent:   filepath.Join(dir, "kube-ipvs"),
		backend: filepath.Join(dir, "backend"),
		guest:   filepath.Join(dir, "guest.test"),
	}
	ldflags := "-ldflags=-s -w"
	cmds := [][]string{
		{"build", "-trimpath", ldflags, "-o", b.agent, "./cmd/kube-ipvs"},
		{"build", "-trimpath", ldflags, "-o", b.backend, "./test/backend"},
		{"test", "-c", "-trimpath", ldflags, "-tags", "vmguest", "-o", b.guest, "./test/vm/guest"},
	}
	for _, args := range cmds {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, p := range []string{b.agent, b.backend, b.guest} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("build produced no %s: %v", p, err)
		}
	}
	return b
}

// guestFiles are the files added to the cached tree: /init, its settings and the binaries.
func guestFiles(cfg config, b binaries, timeout time.Duration) []extraFile {
	env := map[string]string{
		"KIPVS_MODE":          "test",
		"KIPVS_RUN":           cfg.run,
		"KIPVS_GUEST_TIMEOUT": guestTimeout(timeout).Round(time.Second).String(),
	}
	if cfg.shell {
		env["KIPVS_MODE"] = "shell"
	}
	if cfg.guestFwd != 0 {
		env["KIPVS_GUESTFWD_ADDR"] = fmt.Sprintf("%s:%d", guestFwdIP, cfg.guestFwd)
	}
	for k, v := range cfg.guestEnv {
		env[k] = v
	}
	return []extraFile{
		{Name: "init", Mode: 0o755, Data: []byte(initScript)},
		{Name: "etc/kipvs/env", Mode: 0o644, Data: envFile(env)},
		{Name: "bin/kube-ipvs", Mode: 0o755, Src: b.agent},
		{Name: "bin/backend", Mode: 0o755, Src: b.backend},
		{Name: "bin/guest.test", Mode: 0o755, Src: b.guest},
	}
}

// guestTimeout leaves the guest test binary time to print its own timeout panic
// (with every goroutine's stack) before the host kills the VM.
func guestTimeout(vm time.Duration) time.Duration {
	if d := vm - 45*time.Second; d > 30*time.Second {
		return d
	}
	return 30 * time.Second
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kernelVersion reads the kernel version prepare.sh recorded.
func kernelVersion(tree string) string {
	b, _ := os.ReadFile(filepath.Join(tree, "kernel-version"))
	return string(bytes.TrimSpace(b))
}
