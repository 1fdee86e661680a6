package ipvs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Modules checks and loads the kernel modules IPVS needs. It is a setup
// step run explicitly (Kernel embeds it); nothing in kube-ipvs loads a
// module implicitly. The zero value checks the real system.
type Modules struct {
	// Root is the filesystem root under which /proc, /sys and /lib/modules
	// are looked up; "" means "/". Tests point it at a temporary directory.
	Root string
	// Modprobe loads a module, like `modprobe ip_vs_rr`; nil runs the
	// modprobe command. Tests replace it.
	Modprobe func(module string) error
}

// schedulerName is what a scheduler name may look like: it becomes part of
// a module name and of paths.
var schedulerName = regexp.MustCompile(`^[a-z0-9_]{1,15}$`)

// Loaded reports whether IPVS is loaded (/proc/net/ip_vs exists), loading
// nothing. Without it the kernel holds no virtual server.
func (m Modules) Loaded() bool { return m.exists("/proc/net/ip_vs") }

// EnsureModules makes sure the ip_vs module is loaded, like
// `modprobe ip_vs && test -e /proc/net/ip_vs`. If /proc/net/ip_vs already
// exists nothing is run, so it works in a container without /lib/modules
// when the host has IPVS loaded. Call it before the first use of a Kernel:
// github.com/moby/ipvs resolves the IPVS netlink family only once per
// process.
func (m Modules) EnsureModules() error {
	if m.exists("/proc/net/ip_vs") {
		return nil
	}
	loadErr := m.modprobe("ip_vs")
	if m.exists("/proc/net/ip_vs") {
		return nil
	}
	if loadErr == nil {
		loadErr = errors.New("modprobe succeeded but /proc/net/ip_vs is still missing")
	}
	return fmt.Errorf("IPVS is not available in this kernel (no /proc/net/ip_vs): %w", loadErr)
}

// EnsureScheduler makes sure the kernel has the IPVS scheduler name ("rr",
// "wlc", …): the module ip_vs_<name> is loaded (/sys/module/ip_vs_<name>
// exists), or built in (listed in /lib/modules/$(uname -r)/modules.builtin),
// or `modprobe ip_vs_<name>` succeeds. Otherwise the error names the
// scheduler and the module and wraps ErrNoScheduler.
func (m Modules) EnsureScheduler(name string) error {
	if !schedulerName.MatchString(name) {
		return fmt.Errorf("IPVS scheduler %q: invalid name: %w", name, ErrNoScheduler)
	}
	module := "ip_vs_" + name
	if m.exists(path.Join("/sys/module", module)) || m.builtin(module) {
		return nil
	}
	err := m.modprobe(module)
	if err == nil {
		return nil
	}
	return fmt.Errorf("IPVS scheduler %q is not available in this kernel (no module %s): %w (%w)",
		name, module, err, ErrNoScheduler)
}

// builtin reports whether module is listed in the running kernel's
// modules.builtin. Any read error counts as "not built in".
func (m Modules) builtin(module string) bool {
	release, err := os.ReadFile(m.path("/proc/sys/kernel/osrelease"))
	if err != nil {
		return false
	}
	rel := strings.TrimSpace(string(release))
	if rel == "" || strings.ContainsAny(rel, "/") {
		return false
	}
	f, err := os.Open(m.path(path.Join("/lib/modules", rel, "modules.builtin")))
	if err != nil {
		return false
	}
	defer f.Close()
	want := module + ".ko"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Lines look like "kernel/net/netfilter/ipvs/ip_vs_rr.ko".
		if path.Base(strings.TrimSpace(sc.Text())) == want {
			return true
		}
	}
	return false
}

func (m Modules) modprobe(module string) error {
	if m.Modprobe != nil {
		return m.Modprobe(module)
	}
	return runModprobe(module)
}

// runModprobe runs `modprobe MODULE` and puts its output in the error.
func runModprobe(module string) error {
	out, err := exec.Command("modprobe", module).CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return fmt.Errorf("modprobe %s: %w: %s", module, err, msg)
		}
		return fmt.Errorf("modprobe %s: %w", module, err)
	}
	return nil
}

// path maps an absolute system path under Root.
func (m Modules) path(p string) string {
	root := m.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

func (m Modules) exists(p string) bool {
	_, err := os.Stat(m.path(p))
	return err == nil
}
