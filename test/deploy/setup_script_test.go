package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// fakeModprobe stands in for modprobe: it logs each module, makes ip_vs
// appear with its sysctls (at 0) as loading the real module does, refuses
// ip_vs_mh (a kernel without that scheduler), and refuses ip_vs as well
// when NO_IPVS is set.
const fakeModprobe = `#!/bin/sh
echo "$1" >> "$ROOT/modprobe.log"
case "$1" in
ip_vs)
	if [ -n "${NO_IPVS:-}" ]; then echo "modprobe: FATAL: Module ip_vs not found" >&2; exit 1; fi
	mkdir -p "$ROOT/proc/net" "$ROOT/proc/sys/net/ipv4/vs"
	: > "$ROOT/proc/net/ip_vs"
	for f in conntrack expire_nodest_conn expire_quiescent_template; do echo 0 > "$ROOT/proc/sys/net/ipv4/vs/$f"; done ;;
ip_vs_mh)
	echo "modprobe: FATAL: Module ip_vs_mh not found" >&2; exit 1 ;;
*)
	mkdir -p "$ROOT/sys/module/$1" ;;
esac
`

// The setup container's script, run by sh against a fake /proc, /sys and
// modprobe: it loads what is missing, tolerates a missing scheduler, sets
// every sysctl, and fails when the kernel has no IPVS at all.
func TestSetupScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to run the setup script with: %v", err)
	}
	ds := only[*appsv1.DaemonSet](t, readManifests(t))
	script := setupScript(t, container(t, ds.Spec.Template.Spec.InitContainers, "setup"))

	var allSchedulers []string
	for _, s := range ipvs.Schedulers {
		allSchedulers = append(allSchedulers, "ip_vs_"+s)
	}
	cases := []struct {
		name string
		// files is the fake node before the script runs, relative to root.
		files  map[string]string
		noIPVS bool
		// wantOK: the script exits 0; wantLoads: the modprobe calls;
		// wantSysctls: every proxier.Sysctls key is set afterwards.
		wantOK, wantSysctls bool
		wantLoads           []string
	}{
		{
			name:        "fresh node",
			files:       map[string]string{"proc/sys/net/ipv4/ip_forward": "0\n"},
			wantOK:      true,
			wantSysctls: true,
			wantLoads:   append([]string{"ip_vs"}, allSchedulers...),
		},
		{
			name: "IPVS and rr already loaded, sysctls already set",
			files: map[string]string{
				"proc/net/ip_vs":                                 "",
				"sys/module/ip_vs_rr/refcnt":                     "0\n",
				"proc/sys/net/ipv4/ip_forward":                   "1\n",
				"proc/sys/net/ipv4/vs/conntrack":                 "1\n",
				"proc/sys/net/ipv4/vs/expire_nodest_conn":        "1\n",
				"proc/sys/net/ipv4/vs/expire_quiescent_template": "1\n",
			},
			wantOK:      true,
			wantSysctls: true,
			wantLoads:   allSchedulers[1:],
		},
		{
			name:      "no IPVS in the kernel",
			files:     map[string]string{"proc/sys/net/ipv4/ip_forward": "0\n"},
			noIPVS:    true,
			wantLoads: []string{"ip_vs"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.files)
			out, err := runRooted(t, sh, script, root, tc.noIPVS)
			t.Logf("setup script output:\n%s", out)
			if ok := err == nil; ok != tc.wantOK {
				t.Errorf("script succeeded=%v (%v), want %v", ok, err, tc.wantOK)
			}
			loads := strings.Fields(readFile(t, filepath.Join(root, "modprobe.log")))
			if !slices.Equal(loads, tc.wantLoads) {
				t.Errorf("modprobe calls %q, want %q", loads, tc.wantLoads)
			}
			for _, s := range proxier.Sysctls {
				got := strings.TrimSpace(readFile(t, filepath.Join(root, "proc", "sys", filepath.FromSlash(s.Key))))
				if set := got == s.Value; set != tc.wantSysctls {
					t.Errorf("sysctl %s = %q after the script; want set to %s: %v", s.Key, got, s.Value, tc.wantSysctls)
				}
			}
			if tc.wantOK && !strings.Contains(string(out), "module ip_vs_mh not loaded") {
				t.Errorf("output does not report the missing ip_vs_mh")
			}
		})
	}
}

// runRooted runs script with sh, its /proc/ and /sys/module/ paths moved
// under root and fakeModprobe first on PATH.
func runRooted(t *testing.T, sh, script, root string, noIPVS bool) ([]byte, error) {
	t.Helper()
	writeTree(t, root, map[string]string{"bin/modprobe": fakeModprobe})
	if err := os.Chmod(filepath.Join(root, "bin", "modprobe"), 0o755); err != nil {
		t.Fatal(err)
	}
	// One pass: "/proc/sys/…" becomes ROOT/proc/sys/…, untouched by the /sys/module/ rule.
	rooted := strings.NewReplacer("/proc/", root+"/proc/", "/sys/module/", root+"/sys/module/").Replace(script)
	// Never let the script reach the host's /proc or /sys.
	rest := strings.NewReplacer(root+"/proc/", "@", root+"/sys/module/", "@").Replace(rooted)
	if strings.Contains(rest, "/proc") || strings.Contains(rest, "/sys") {
		t.Fatalf("setup script names a /proc or /sys path this test does not redirect:\n%s", script)
	}
	cmd := exec.Command(sh, "-c", rooted)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"), "ROOT="+root)
	if noIPVS {
		cmd.Env = append(cmd.Env, "NO_IPVS=1")
	}
	return cmd.CombinedOutput()
}

func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readFile returns the file's content, or "" if it does not exist.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
