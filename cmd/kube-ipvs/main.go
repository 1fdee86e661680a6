// Command kube-ipvs is the node agent: it makes Kubernetes Service
// addresses work on its node with kernel IPVS. See the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"

	"github.com/kube-ipvs/kube-ipvs/config"
)

func main() {
	build := readBuildInfo(debug.ReadBuildInfo).withCommit(commit)
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println(build)
		return
	}
	if len(os.Args) >= 2 && (os.Args[1] == "show" || os.Args[1] == "explain") {
		os.Exit(runInspect(os.Args[1], os.Args[2:], os.Stdout, os.Stderr))
	}
	gogc, chosen := setGCPercent(os.Getenv)
	fs := flag.NewFlagSet("kube-ipvs", flag.ExitOnError)
	flags := config.BindFlags(fs)
	objectsDir := fs.String("objects-dir", "",
		"read Services, EndpointSlices and Nodes from the YAML files in this directory (re-read every second) instead of an apiserver; for tests and demos")
	fs.StringVar(&debugSocket, "debug-socket", DefaultDebugSocket,
		"serve kube-ipvs show and explain on the unix socket `PATH` (mode 0600); empty: none")
	_ = fs.Parse(os.Args[1:])

	cfg, err := flags.Resolve(os.ReadFile, os.Getenv, os.Hostname)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-ipvs: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg.Logging)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-ipvs: %v\n", err)
		os.Exit(2)
	}
	defer func() { _ = log.Sync() }()
	routeKlog(log)
	log.Info("kube-ipvs", zap.String("version", build.Version), zap.String("commit", build.Commit),
		zap.Bool("modified", build.Modified), zap.String("go", build.GoVersion), zap.String("platform", build.Platform),
		zap.String("GOGC", gogc), zap.Bool("GOGCFromEnvironment", !chosen))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a := newAgent(log, cfg, *objectsDir, build)
	if flags.Cleanup() {
		err = a.cleanup()
	} else {
		a.warnings = cfg.Warnings([]v1.IPFamily{a.opts.Rules.Family})
		for _, w := range a.warnings {
			log.Warn("configuration", zap.String("warning", w))
		}
		err = a.run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("kube-ipvs stopped", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
}
