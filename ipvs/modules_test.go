package ipvs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fakeRoot builds a filesystem root in a temporary directory holding the
// given files (path -> content).
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// modprobeStub records the modules asked for. A module in ok loads, and
// when it has a path that path is created under the root as the kernel
// would; any other module fails.
type modprobeStub struct {
	root  string
	ok    map[string]string
	asked []string
}

func (m *modprobeStub) run(module string) error {
	m.asked = append(m.asked, module)
	p, ok := m.ok[module]
	if !ok {
		return errors.New("modprobe: FATAL: Module " + module + " not found")
	}
	if p != "" {
		full := filepath.Join(m.root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		return os.WriteFile(full, nil, 0o644)
	}
	return nil
}

const release = "6.1.0-28-amd64"

func TestEnsureScheduler(t *testing.T) {
	builtin := "/lib/modules/" + release + "/modules.builtin"
	tests := []struct {
		name      string
		files     map[string]string
		modprobe  map[string]string
		sched     string
		wantAsked []string
		wantMsg   string // "" means success
	}{
		{
			name:  "module loaded",
			files: map[string]string{"/sys/module/ip_vs_rr/refcnt": "0"},
			sched: "rr",
		},
		{
			name: "built in",
			files: map[string]string{
				"/proc/sys/kernel/osrelease": release + "\n",
				builtin:                      "kernel/net/netfilter/ipvs/ip_vs.ko\nkernel/net/netfilter/ipvs/ip_vs_wlc.ko\n",
			},
			sched: "wlc",
		},
		{
			name: "built in for another kernel release does not count",
			files: map[string]string{
				"/proc/sys/kernel/osrelease":          release,
				"/lib/modules/5.10.0/modules.builtin": "kernel/net/netfilter/ipvs/ip_vs_wlc.ko\n",
			},
			sched:     "wlc",
			wantAsked: []string{"ip_vs_wlc"},
			wantMsg:   `IPVS scheduler "wlc" is not available in this kernel (no module ip_vs_wlc): modprobe: FATAL: Module ip_vs_wlc not found (scheduler not available)`,
		},
		{
			name:      "loaded by modprobe",
			files:     map[string]string{"/proc/sys/kernel/osrelease": release, builtin: "kernel/net/netfilter/ipvs/ip_vs.ko\n"},
			modprobe:  map[string]string{"ip_vs_mh": ""},
			sched:     "mh",
			wantAsked: []string{"ip_vs_mh"},
		},
		{
			name:      "not available",
			sched:     "foo",
			wantAsked: []string{"ip_vs_foo"},
			wantMsg:   `IPVS scheduler "foo" is not available in this kernel (no module ip_vs_foo): modprobe: FATAL: Module ip_vs_foo not found (scheduler not available)`,
		},
		{
			name:    "name with a path in it is refused without looking",
			sched:   "../rr",
			wantMsg: `IPVS scheduler "../rr": invalid name: scheduler not available`,
		},
		{
			name:    "empty name",
			sched:   "",
			wantMsg: `IPVS scheduler "": invalid name: scheduler not available`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.files)
			stub := &modprobeStub{root: root, ok: tc.modprobe}
			k := NewKernel()
			k.Root, k.Modprobe = root, stub.run
			err := k.EnsureScheduler(tc.sched)
			if !slices.Equal(stub.asked, tc.wantAsked) {
				t.Errorf("modprobe asked for %v, want %v", stub.asked, tc.wantAsked)
			}
			if tc.wantMsg == "" {
				mustDo(t, err)
				return
			}
			if err == nil || err.Error() != tc.wantMsg {
				t.Fatalf("error = %v, want %q", err, tc.wantMsg)
			}
			if !errors.Is(err, ErrNoScheduler) {
				t.Errorf("error %v is not ErrNoScheduler", err)
			}
		})
	}
}

func TestEnsureModules(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		modprobe  map[string]string
		wantAsked []string
		wantMsg   string
	}{
		{
			name:  "already loaded: nothing run",
			files: map[string]string{"/proc/net/ip_vs": ""},
		},
		{
			name:      "loaded by modprobe",
			modprobe:  map[string]string{"ip_vs": "/proc/net/ip_vs"},
			wantAsked: []string{"ip_vs"},
		},
		{
			name:      "modprobe fails",
			wantAsked: []string{"ip_vs"},
			wantMsg:   "IPVS is not available in this kernel (no /proc/net/ip_vs): modprobe: FATAL: Module ip_vs not found",
		},
		{
			name:      "modprobe succeeds without effect",
			modprobe:  map[string]string{"ip_vs": ""},
			wantAsked: []string{"ip_vs"},
			wantMsg:   "IPVS is not available in this kernel (no /proc/net/ip_vs): modprobe succeeded but /proc/net/ip_vs is still missing",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.files)
			stub := &modprobeStub{root: root, ok: tc.modprobe}
			m := Modules{Root: root, Modprobe: stub.run}
			err := m.EnsureModules()
			if !slices.Equal(stub.asked, tc.wantAsked) {
				t.Errorf("modprobe asked for %v, want %v", stub.asked, tc.wantAsked)
			}
			if tc.wantMsg == "" {
				mustDo(t, err)
				return
			}
			if err == nil || err.Error() != tc.wantMsg {
				t.Fatalf("error = %v, want %q", err, tc.wantMsg)
			}
		})
	}
}

func TestLoadedLoadsNothing(t *testing.T) {
	stub := &modprobeStub{ok: map[string]string{"ip_vs": ""}}
	without := Modules{Root: fakeRoot(t, nil), Modprobe: stub.run}
	with := Modules{Root: fakeRoot(t, map[string]string{"proc/net/ip_vs": ""}), Modprobe: stub.run}
	if without.Loaded() || !with.Loaded() || len(stub.asked) != 0 {
		t.Errorf("Loaded: %v without /proc/net/ip_vs, %v with it, modprobe asked %v; want false, true, nothing", without.Loaded(), with.Loaded(), stub.asked)
	}
}
