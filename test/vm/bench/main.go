//go:build vmtest

// Command bench is the host side of `make bench-vm` (README.md beside
// it): kube-ipvs and upstream kube-proxy (IPVS mode) side by side on the
// VM's real kernel, against a real kube-apiserver, with the same API
// objects, and a floor that makes the same kernel objects directly.
//
// For each size N × M it boots a fresh VM per run: the floor, then each
// proxy alone in each situation (join: the objects are there before it
// starts; burst: the host creates them while it runs), then the floor
// again (the faster of its two counts). The guest side
// (guestbench) measures and hands back one Result; this program prints
// one table per size and issue 11's targets. A run that fails prints what
// it saw, and the program exits 1 after the others.
//
//	go run -tags vmtest ./test/vm/bench -services 1000,5000 -endpoints 5
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/controlplane"
	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
	"github.com/kube-ipvs/kube-ipvs/test/vm/e2e"
	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// options are the command line.
type options struct {
	sizes      []int
	endpoints  int
	changes    int
	syncPeriod time.Duration
	timeout    time.Duration
	idleLimit  time.Duration
	only       *regexp.Regexp
	kubeIPVS   string        // a kube-ipvs binary to run instead of building ./cmd/kube-ipvs
	profile    string        // a directory for kube-ipvs' CPU and heap profiles of join
	profileFor time.Duration // their length
	steps      bool          // print kube-ipvs' debug log but its per-operation lines
	kubeEnv    []string      // NAME=value pairs in kube-ipvs' environment (GOGC, GOMEMLIMIT, GODEBUG)
}

func parseFlags() (options, error) {
	var o options
	services := flag.String("services", "1000,5000", "Service counts N, comma-separated: one table each")
	flag.IntVar(&o.endpoints, "endpoints", 5, "endpoints M per Service")
	flag.IntVar(&o.changes, "changes", 40, "EndpointSlice changes timed per run (at least 30 for the targets)")
	flag.DurationVar(&o.syncPeriod, "sync-period", 10*time.Second, "kube-ipvs' ipvs.syncPeriod; the changes are spread over 3 of them")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "how long a proxy may take to hold everything, and each change")
	flag.DurationVar(&o.idleLimit, "idle-limit", 3*time.Minute, "how long to wait for a proxy to go idle")
	flag.StringVar(&o.kubeIPVS, "kube-ipvs", "", "a static kube-ipvs binary to benchmark instead of building ./cmd/kube-ipvs from the tree")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of kube-ipvs' join and then its heap profile (from its debug socket) to DIR/N-join-{cpu,heap}.pprof")
	flag.DurationVar(&o.profileFor, "profile-for", 30*time.Second, "how long the -profile profiles last")
	flag.BoolVar(&o.steps, "steps", false, "run kube-ipvs at debug level and print its log but the per-operation lines: when each full sync step ran and how long it took")
	kubeEnv := flag.String("kube-ipvs-env", "", "comma-separated NAME=value pairs added to kube-ipvs' environment only, such as GOMEMLIMIT=48MiB or GODEBUG=gctrace=1 (printed with -steps)")
	only := flag.String("only", "", "run only the rows matching this regexp (floor, kube-ipvs join, ...)")
	flag.Parse()
	for _, s := range strings.Split(*services, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-services %q: want positive numbers, comma-separated", *services)
		}
		if err := (measure.Layout{Services: n, Endpoints: o.endpoints, Changes: o.changes}).Validate(); err != nil {
			return o, err
		}
		o.sizes = append(o.sizes, n)
	}
	for _, kv := range strings.Split(*kubeEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" || strings.ContainsAny(kv, " \t") {
			return o, fmt.Errorf("-kube-ipvs-env %q: want NAME=value pairs, comma-separated, without blanks", *kubeEnv)
		}
		o.kubeEnv = append(o.kubeEnv, kv)
	}
	re, err := regexp.Compile(*only)
	if err != nil {
		return o, fmt.Errorf("-only: %w", err)
	}
	o.only = re
	return o, nil
}

func main() {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench FAILED:", err)
		os.Exit(1)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d run(s) failed; their rows say FAILED and their output is above\n", failed)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// bench is everything the runs share.
type bench struct {
	o       options
	cfg     vmrun.Config
	bins    vmrun.Binaries
	work    string
	cluster *e2e.Cluster
	cp      *controlplane.ControlPlane
}

// run builds, starts the control plane, runs every size and prints the
// tables; it returns how many runs failed. Everything it started is
// stopped on the way out.
func run(ctx context.Context, o options) (failed int, err error) {
	b := &bench{o: o}
	if b.cfg, err = vmrun.ConfigFromEnv(); err != nil {
		return 0, err
	}
	if err := e2e.AddKubeProxy(&b.cfg); err != nil {
		return 0, err
	}
	if b.work, err = os.MkdirTemp("", "kipvs-bench-"); err != nil {
		return 0, err
	}
	defer os.RemoveAll(b.work)
	if err := b.build(); err != nil {
		return 0, err
	}
	b.cp, err = controlplane.StartContext(ctx, e2e.ControlPlaneOptions(logf))
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := b.cp.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	setupCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if b.cluster, err = e2e.Setup(setupCtx, b.cp, func(string, ...any) {}); err != nil {
		return 0, err
	}
	b.cluster.Configure(&b.cfg)
	var out strings.Builder
	for _, n := range o.sizes {
		rows, nFailed, err := b.size(ctx, n)
		failed += nFailed
		if len(rows) > 0 {
			report := sizeReport(n, o, rows)
			if err != nil {
				report = strings.Replace(report, " ==\n", " == (stopped early: only the runs that ended)\n", 1)
			}
			fmt.Print(report)
			out.WriteString(report)
		}
		if err != nil {
			return failed, err
		}
	}
	if len(o.sizes) > 1 {
		fmt.Print("\n==== all sizes ====\n" + out.String())
	}
	return failed, nil
}

// build builds the VM's programs, as vmrun.Build does but with the
// benchmark's guest test binary in place of the guest suite, plus the
// floor; kube-ipvs is o.kubeIPVS when given.
func (b *bench) build() error {
	root, err := vmrun.ModuleRoot()
	if err != nil {
		return err
	}
	began := time.Now()
	b.bins = vmrun.Binaries{
		Agent:   filepath.Join(b.work, "kube-ipvs"),
		Backend: filepath.Join(b.work, "backend"),
		Guest:   filepath.Join(b.work, "bench.test"),
		Relay:   filepath.Join(b.work, "relay"),
	}
	floor := filepath.Join(b.work, "kipvs-floor")
	ldflags := "-ldflags=-s -w"
	cmds := [][]string{
		{"build", "-trimpath", ldflags, "-o", b.bins.Backend, "./test/backend"},
		{"build", "-trimpath", ldflags, "-o", b.bins.Relay, "./test/vm/relay"},
		{"test", "-c", "-trimpath", ldflags, "-tags", "vmguest", "-o", b.bins.Guest, "./test/vm/bench/guestbench"},
		{"build", "-trimpath", ldflags, "-o", floor, "./test/vm/bench/floor"},
	}
	if b.o.kubeIPVS != "" {
		b.bins.Agent = b.o.kubeIPVS
	} else {
		cmds = append(cmds, []string{"build", "-trimpath", ldflags, "-o", b.bins.Agent, "./cmd/kube-ipvs"})
	}
	for _, args := range cmds {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	b.cfg.Files = append(b.cfg.Files, vmrun.File{Name: measure.FloorBin[1:], Mode: 0o755, Src: floor})
	logf("built the benchmark's guest program, the floor and the rest in %v; kube-ipvs: %s", time.Since(began).Round(time.Millisecond), b.bins.Agent)
	return nil
}

// runSpec is one VM boot.
type runSpec struct{ proxy, situation string }

// The floor boots first and last: its row is the faster of the two
// (measure.FasterFloor).
var runs = []runSpec{
	{measure.Floor, ""},
	{measure.KubeIPVS, measure.Join}, {measure.KubeProxy, measure.Join},
	{measure.KubeIPVS, measure.Burst}, {measure.KubeProxy, measure.Burst},
	{measure.Floor, ""},
}

// size runs every run of N Services; an error is one that stops the
// whole benchmark (the API objects could not be made).
func (b *bench) size(ctx context.Context, n int) (map[string]measure.Row, int, error) {
	l := measure.Layout{Services: n, Endpoints: b.o.endpoints, Changes: b.o.changes}
	objs, err := newObjects(b.cp.AdminConfig(), l, logf)
	if err != nil {
		return nil, 0, err
	}
	rows := map[string]measure.Row{}
	failed := 0
	for _, r := range runs {
		name := measure.RowName(r.proxy, r.situation)
		if !b.o.only.MatchString(name) {
			continue
		}
		if ctx.Err() != nil {
			return rows, failed, errors.New("interrupted")
		}
		if err := objs.reset(ctx); err != nil {
			return rows, failed, err
		}
		if r.situation == measure.Join {
			took, err := objs.createAll(ctx)
			if err != nil {
				return rows, failed, err
			}
			logf("created %d Services and %d EndpointSlices in %v", n, n, took.Round(time.Millisecond))
		}
		logf("%d × %d: %s", n, l.Endpoints, name)
		res, err := b.boot(ctx, l, r, objs)
		if ctx.Err() != nil {
			return rows, failed, errors.New("interrupted")
		}
		if res != nil {
			line, _ := json.Marshal(res)
			logf("%d × %d %s: %s", n, l.Endpoints, name, line)
		}
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "\n%d × %d %s FAILED: %v\n\n", n, l.Endpoints, name, err)
		}
		row := measure.Row{Name: name, Result: res, Err: err}
		if prev, ok := rows[name]; ok && name == measure.Floor {
			row = measure.FasterFloor(prev, row)
		}
		rows[name] = row
	}
	if err := objs.reset(ctx); err != nil {
		return rows, failed, err
	}
	return rows, failed, nil
}

// boot runs one VM for r and returns the Result the guest printed.
func (b *bench) boot(ctx context.Context, l measure.Layout, r runSpec, objs *objects) (*measure.Result, error) {
	cfg := b.cfg
	cfg.Run, cfg.Skip = "^TestBench$", ""
	cfg.Timeout = 3*b.o.timeout + 2*b.o.idleLimit + 3*b.o.syncPeriod + 10*time.Minute
	cfg.GuestEnv = map[string]string{
		"KIPVS_BENCH_PROXY": r.proxy, "KIPVS_BENCH_SITUATION": r.situation,
		"KIPVS_BENCH_SERVICES": strconv.Itoa(l.Services), "KIPVS_BENCH_ENDPOINTS": strconv.Itoa(l.Endpoints),
		"KIPVS_BENCH_CHANGES": strconv.Itoa(l.Changes), "KIPVS_BENCH_SYNC_PERIOD": b.o.syncPeriod.String(),
		"KIPVS_BENCH_SPREAD": (3 * b.o.syncPeriod).String(), "KIPVS_BENCH_TIMEOUT": b.o.timeout.String(),
		"KIPVS_BENCH_IDLE_LIMIT": b.o.idleLimit.String(),
	}
	if b.o.steps {
		cfg.GuestEnv["KIPVS_BENCH_STEPS"] = "1"
	}
	if len(b.o.kubeEnv) > 0 {
		cfg.GuestEnv["KIPVS_BENCH_KUBE_IPVS_ENV"] = strings.Join(b.o.kubeEnv, " ")
	}
	if b.o.profile != "" {
		cfg.GuestEnv["KIPVS_BENCH_PROFILE"] = strconv.Itoa(int(b.o.profileFor.Seconds()))
	}
	for k, v := range b.cfg.GuestEnv {
		cfg.GuestEnv[k] = v
	}
	cfg.HostCommand = func(cmd string) error {
		if cmd == "bench-create" {
			return objs.burst(ctx)
		}
		return b.cluster.HostCommand(cmd)
	}
	var result *measure.Result
	var parseErr error
	var profile strings.Builder
	cfg.GuestOutput = func(line string) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), measure.ProfilePrefix); ok {
			profile.WriteString(rest)
			return
		}
		if kind, ok := strings.CutPrefix(strings.TrimSpace(line), measure.ProfileEnd); ok {
			b.writeProfile(l, r, kind, profile.String())
			profile.Reset()
			return
		}
		if rest, ok := strings.CutPrefix(line, measure.ResultPrefix); ok {
			result = &measure.Result{}
			if err := json.Unmarshal([]byte(rest), result); err != nil {
				result, parseErr = nil, fmt.Errorf("the guest's result %q: %w", rest, err)
			}
			return
		}
		if !strings.HasPrefix(line, "\x16") && strings.TrimSpace(line) != "" {
			fmt.Fprintf(os.Stderr, "    guest| %s\n", strings.TrimSpace(line))
		}
	}
	cfg.Logf = func(format string, args ...any) {
		if msg := fmt.Sprintf(format, args...); !strings.HasPrefix(msg, "booting kernel") {
			logf("vm: %s", msg)
		}
	}
	work, err := os.MkdirTemp(b.work, "run-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	initrd, err := vmrun.WriteImage(cfg, b.bins, work)
	if err != nil {
		return nil, err
	}
	res, err := vmrun.Boot(ctx, cfg, b.bins, initrd, work)
	if err != nil {
		return nil, err
	}
	if err := res.Check(); err != nil {
		return nil, err
	}
	if rc := res.ExitCode(); rc != "0" {
		return nil, fmt.Errorf("the guest's benchmark failed (exit status %s); what it saw is in its output above", rc)
	}
	if parseErr != nil {
		return nil, parseErr
	}
	if result == nil {
		return nil, errors.New("the guest ended without printing a result")
	}
	return result, nil
}

// writeProfile writes the base64 profile the guest printed to
// -profile's directory; it is not a figure, so a failure is only logged.
func (b *bench) writeProfile(l measure.Layout, r runSpec, kind, enc string) {
	data, err := base64.StdEncoding.DecodeString(enc)
	if err == nil {
		err = os.MkdirAll(b.o.profile, 0o755)
	}
	name := filepath.Join(b.o.profile, fmt.Sprintf("%d-%s-%s.pprof", l.Services, r.situation, kind))
	if err == nil {
		err = os.WriteFile(name, data, 0o644)
	}
	if err != nil {
		logf("profile %s: %v", name, err)
		return
	}
	logf("wrote %s (%d bytes): go tool pprof -top %s", name, len(data), name)
}

// sizeReport is one size's table, its notes and the targets.
func sizeReport(n int, o options, rows map[string]measure.Row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %d Services × %d endpoints (%d changes over %v; kube-ipvs syncPeriod %v) ==\n\n",
		n, o.endpoints, o.changes, 3*o.syncPeriod, o.syncPeriod)
	b.WriteString(measure.Table(rows))
	b.WriteString("\n")
	for _, name := range measure.RowOrder {
		row, ok := rows[name]
		if !ok {
			continue
		}
		if row.Err != nil {
			first, _, _ := strings.Cut(row.Err.Error(), "\n")
			fmt.Fprintf(&b, "- %s: FAILED: %s\n", name, first)
			continue
		}
		r := row.Result
		notes := append([]string{fmt.Sprintf("time read up to %s late", measure.Short(r.TimeError))}, r.Notes...)
		if r.Proxy == measure.Floor {
			notes = notes[1:]
		}
		fmt.Fprintf(&b, "- %s: %s\n", name, strings.Join(notes, "; "))
	}
	fmt.Fprintf(&b, "\nIssue 11's targets (set for 5,000 × 5; here %d × %d):\n", n, o.endpoints)
	b.WriteString(measure.FormatTargets(measure.Targets(rows)))
	return b.String()
}
