// Command demo is the host side of `make demo` (test/demo/demo.sh runs it
// once the VM image and the control-plane binaries are cached): it starts a
// real etcd and kube-apiserver on 127.0.0.1, applies deploy/, boots the
// real-kernel test VM with one forwarded port to the apiserver, and streams
// the guest's TestDemo (test/vm/guest/demo_test.go) to the terminal as it
// runs: kube-ipvs with the kube-ipvs ServiceAccount's token, three pods and
// a Service created through the API, ipvsadm -Ln and requests, a scale to
// five pods and back. Everything it started is stopped, by PID, on the way
// out, also on failure or Ctrl-C.
//
//	go run ./test/demo        (from the repository root; see demo.sh)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/controlplane"
	"github.com/kube-ipvs/kube-ipvs/test/vm/e2e"
	"github.com/kube-ipvs/kube-ipvs/test/vm/vmrun"
)

// vmTimeout bounds the VM run; the demo takes about a minute in the VM.
const vmTimeout = 8 * time.Minute

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	err := run(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED after %v: %v\n", time.Since(began).Round(time.Second), err)
		stop()
		os.Exit(1)
	}
	fmt.Printf("\n==> host: demo finished in %v; the VM, kube-apiserver and etcd are gone\n", time.Since(began).Round(time.Second))
}

// step starts a host-side part of the demo; note adds a line to it.
func step(format string, args ...any) { fmt.Printf("\n==> host: "+format+"\n", args...) }
func note(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func run(ctx context.Context) (err error) {
	cfg, err := vmrun.ConfigFromEnv()
	if err != nil {
		return err
	}
	cfg.Run, cfg.Skip, cfg.Timeout = "^TestDemo$", "", vmTimeout
	root, err := vmrun.ModuleRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kipvs-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("Building kube-ipvs, the pods' backend and the guest program (static binaries for the VM)")
	bins, err := build(root, work)
	if err != nil {
		return err
	}

	step("Starting etcd and kube-apiserver on 127.0.0.1, and applying deploy/")
	cp, err := controlplane.StartContext(ctx, e2e.ControlPlaneOptions(note))
	if err != nil {
		return err
	}
	defer func() {
		note("stopping kube-apiserver and etcd")
		if stopErr := cp.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	setupCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cluster, err := e2e.Setup(setupCtx, cp, note)
	if err != nil {
		return err
	}
	cluster.Configure(&cfg)

	step("Booting the VM: Debian's kernel %s with IPVS, under qemu (TCG, no KVM, so about 50x slower than a real node)",
		strings.TrimSpace(readFile(cfg.Tree+"/kernel-version")))
	note("its only way out is qemu's forwarded port 10.0.2.100:%d -> the host's 127.0.0.1:%d (kube-apiserver)", cluster.Port, cluster.Port)
	initrd, err := vmrun.WriteImage(cfg, bins, work)
	if err != nil {
		return err
	}
	cfg.Logf = vmLog
	cfg.GuestOutput = guestLine
	res, err := vmrun.Boot(ctx, cfg, bins, initrd, work)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if err := res.Check(); err != nil {
		return err
	}
	if rc := res.ExitCode(); rc != "0" {
		return fmt.Errorf("the demo in the VM failed (exit status %s); its output is above", rc)
	}
	return nil
}

// build builds the binaries, printing a line every 15 s: the first build on
// a fresh machine compiles client-go and takes a few minutes.
func build(root, dir string) (vmrun.Binaries, error) {
	began := time.Now()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				note("still building (%v; the first build compiles client-go and takes a few minutes)",
					time.Since(began).Round(time.Second))
			}
		}
	}()
	bins, err := vmrun.Build(root, dir)
	close(done)
	if err == nil {
		note("built in %v", time.Since(began).Round(100*time.Millisecond))
	}
	return bins, err
}

// vmLog turns the VM driver's progress lines into the demo's.
func vmLog(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	switch {
	case strings.HasPrefix(msg, "booting kernel"), strings.HasPrefix(msg, "KIPVS-TESTS-START"),
		strings.HasPrefix(msg, "KIPVS-GUEST-EXIT"):
	case strings.HasPrefix(msg, "KIPVS-INIT-START after "):
		note("the VM booted in %s", strings.TrimPrefix(msg, "KIPVS-INIT-START after "))
	case strings.HasPrefix(msg, "VM ran "):
		fmt.Println()
		note("the VM powered off after %s", strings.Fields(msg)[2])
	default:
		note("%s", msg)
	}
}

// guestLine prints a line of the guest's output as it arrives, without the
// test framework's framing (lines that start with test2json's ^V marker).
func guestLine(line string) {
	if strings.HasPrefix(line, "\x16") {
		return
	}
	fmt.Println(line)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
