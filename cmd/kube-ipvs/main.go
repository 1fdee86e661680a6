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
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kube-ipvs/kube-ipvs/config"
)

func main() {
	fs := flag.NewFlagSet("kube-ipvs", flag.ExitOnError)
	flags := config.BindFlags(fs)
	objectsDir := fs.String("objects-dir", "",
		"read Services and EndpointSlices from the YAML files in this directory (re-read every second) instead of an apiserver; for tests and demos")
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
	for _, w := range cfg.Warnings() {
		log.Warn("configuration", zap.String("warning", w))
	}
	if cfg.ClusterCIDR == "" && !cfg.MasqueradeAll {
		log.Warn("configuration", zap.String("warning",
			"clusterCIDR is empty: only traffic the node sends from a ClusterIP is masqueraded; set clusterCIDR (or masqueradeAll) so clients outside the pod network get answers"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a := newAgent(log, cfg, *objectsDir)
	if flags.Cleanup() {
		err = a.cleanup()
	} else {
		err = a.run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("kube-ipvs stopped", zap.Error(err))
		_ = log.Sync()
		os.Exit(1)
	}
}

// newLogger builds the zap logger the configuration asks for.
func newLogger(c config.LoggingConfiguration) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("logging.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == config.LogFormatConsole {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zc.Sampling = nil
	zc.DisableStacktrace = true
	return zc.Build()
}
