// Package vmrun boots the real-kernel test bed: a throwaway qemu VM (TCG, no
// host networking beyond one optional forwarded loopback port) from the Debian
// kernel and guest tree that ../prepare.sh caches, with the static guest
// programs (kube-ipvs, the backend and the guest test binary of ../guest) in
// its initramfs. It runs the guest tests and reads back what they left on the
// serial ports.
//
// The VM test drivers (go test -tags vmtest ./test/vm and ./test/vm/e2e) and
// the demo (test/demo) use it; nothing else should. By hand:
//
//	sudo test/vm/prepare.sh
//	go test -tags vmtest -v ./test/vm
//
// Environment, read by ConfigFromEnv:
//
//	KIPVS_CACHE          cache root (default /var/cache/kube-ipvs); the tree is $KIPVS_CACHE/vm/current
//	KIPVS_VM_RUN         regexp passed to the guest as -test.run
//	KIPVS_VM_TIMEOUT     limit for the VM run (default 25m, capped by go test -timeout)
//	KIPVS_VM_GUESTFWD    a host loopback port P: the guest reaches 127.0.0.1:P at 10.0.2.100:P
//	KIPVS_GUEST_*        exported unchanged into the guest tests' environment
//	KIPVS_VM_SHELL=1     boot interactively with a shell on stdio (see ../shell.sh)
package vmrun

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
	"time"
)

// DefaultTimeout bounds a whole VM run unless KIPVS_VM_TIMEOUT says otherwise.
const DefaultTimeout = 25 * time.Minute

// APISuites matches the guest tests that need the apiserver that only the
// e2e driver (test/vm/e2e) and the demo provide. The no-API suite skips them
// unless KIPVS_VM_RUN asks for them by name, and then they fail: a test that
// was asked for never skips for want of its apiserver.
const APISuites = `^Test(E2E|Demo)`

// Config is one VM run.
type Config struct {
	Tree     string        // the prepared cache entry: vmlinuz, rootfs/, kernel-version
	Run      string        // guest -test.run; empty runs every test but Skip's
	Skip     string        // guest -test.skip
	Timeout  time.Duration // the whole VM run
	GuestFwd int           // host loopback port forwarded into the guest, 0 for none
	Shell    bool          // interactive shell on stdio instead of the tests
	GuestEnv map[string]string
	// Files are added to the initramfs (e.g. kubeconfigs for the guest).
	Files []File
	// HostCommand is called, in order and one at a time, for each console
	// line "KIPVS-HOST: CMD" the guest prints, with CMD; an error fails the
	// run. Nil: such lines fail the run.
	HostCommand func(cmd string) error
	// GuestOutput, if set, receives each line of the guest test binary's
	// output (-test.v=test2json framing included) while the VM runs.
	GuestOutput func(line string)
	// Logf receives progress lines. Nil: none.
	Logf func(format string, args ...any)
}

// CacheRoot is $KIPVS_CACHE, or /var/cache/kube-ipvs.
func CacheRoot() string {
	if c := os.Getenv("KIPVS_CACHE"); c != "" {
		return c
	}
	return "/var/cache/kube-ipvs"
}

// ConfigFromEnv reads the environment (see the package comment) and checks
// that the tree prepare.sh builds is there. With KIPVS_VM_RUN unset, Skip is
// APISuites.
func ConfigFromEnv() (Config, error) {
	cfg := Config{
		Tree:     filepath.Join(CacheRoot(), "vm", "current"),
		Run:      os.Getenv("KIPVS_VM_RUN"),
		Timeout:  DefaultTimeout,
		Shell:    os.Getenv("KIPVS_VM_SHELL") == "1",
		GuestEnv: map[string]string{},
	}
	if cfg.Run == "" {
		cfg.Skip = APISuites
	}
	if _, err := os.Stat(filepath.Join(cfg.Tree, "READY")); err != nil {
		return cfg, fmt.Errorf("no prepared VM tree at %s (%v): run `sudo test/vm/prepare.sh` first", cfg.Tree, err)
	}
	if cfg.Run != "" {
		if _, err := regexp.Compile(cfg.Run); err != nil {
			return cfg, fmt.Errorf("KIPVS_VM_RUN=%q: %v", cfg.Run, err)
		}
	}
	if s := os.Getenv("KIPVS_VM_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("KIPVS_VM_TIMEOUT=%q: want a positive duration like 10m", s)
		}
		cfg.Timeout = d
	}
	if s := os.Getenv("KIPVS_VM_GUESTFWD"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			return cfg, fmt.Errorf("KIPVS_VM_GUESTFWD=%q: want a host loopback TCP port", s)
		}
		cfg.GuestFwd = p
	}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KIPVS_GUEST_") {
			cfg.GuestEnv[k] = v
		}
	}
	return cfg, nil
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// ModuleRoot is the directory holding go.mod, found upward from the working
// directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// TrackSources stats every Go file, go.mod and go.sum of the module. go test
// caches a result until a file the test itself opened or stat'ed changes; the
// guest programs are built by a child `go build`, so without this a change to
// their sources would replay a stale cached result.
func TrackSources(root string) error {
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
		return fmt.Errorf("listing the module's sources: %w", err)
	}
	return nil
}

// Binaries are the programs one run needs: the three static guest programs
// and the host-side relay behind the guestfwd.
type Binaries struct{ Agent, Backend, Guest, Relay string }

// Build builds the programs into dir from the module at root, like
// `CGO_ENABLED=0 go build -o dir/kube-ipvs ./cmd/kube-ipvs`.
func Build(root, dir string) (Binaries, error) {
	b := Binaries{
		Agent:   filepath.Join(dir, "kube-ipvs"),
		Backend: filepath.Join(dir, "backend"),
		Guest:   filepath.Join(dir, "guest.test"),
		Relay:   filepath.Join(dir, "relay"),
	}
	ldflags := "-ldflags=-s -w"
	cmds := [][]string{
		{"build", "-trimpath", ldflags, "-o", b.Agent, "./cmd/kube-ipvs"},
		{"build", "-trimpath", ldflags, "-o", b.Backend, "./test/backend"},
		{"test", "-c", "-trimpath", ldflags, "-tags", "vmguest", "-o", b.Guest, "./test/vm/guest"},
		{"build", "-trimpath", ldflags, "-o", b.Relay, "./test/vm/relay"},
	}
	for _, args := range cmds {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, p := range []string{b.Agent, b.Backend, b.Guest, b.Relay} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("build produced no %s: %w", p, err)
		}
	}
	return b, nil
}

// WriteImage writes the initramfs for cfg into dir/initrd.img: the cached
// tree plus /init, its settings, the guest programs and cfg.Files.
func WriteImage(cfg Config, b Binaries, dir string) (string, error) {
	initrd := filepath.Join(dir, "initrd.img")
	files := append(guestFiles(cfg, b), cfg.Files...)
	if err := WriteInitramfs(initrd, filepath.Join(cfg.Tree, "rootfs"), files); err != nil {
		return "", fmt.Errorf("writing the initramfs: %w", err)
	}
	return initrd, nil
}

// guestFiles are the files added to the cached tree: /init, its settings and the binaries.
func guestFiles(cfg Config, b Binaries) []File {
	env := map[string]string{
		"KIPVS_MODE":          "test",
		"KIPVS_RUN":           cfg.Run,
		"KIPVS_SKIP":          cfg.Skip,
		"KIPVS_GUEST_TIMEOUT": guestTimeout(cfg.Timeout).Round(time.Second).String(),
	}
	if cfg.Shell {
		env["KIPVS_MODE"] = "shell"
	}
	if cfg.GuestFwd != 0 {
		env["KIPVS_GUESTFWD_ADDR"] = fmt.Sprintf("%s:%d", GuestFwdIP, cfg.GuestFwd)
	}
	for k, v := range cfg.GuestEnv {
		env[k] = v
	}
	return []File{
		{Name: "init", Mode: 0o755, Data: []byte(initScript)},
		{Name: "etc/kipvs/env", Mode: 0o644, Data: envFile(env)},
		{Name: "bin/kube-ipvs", Mode: 0o755, Src: b.Agent},
		{Name: "bin/backend", Mode: 0o755, Src: b.Backend},
		{Name: "bin/guest.test", Mode: 0o755, Src: b.Guest},
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
