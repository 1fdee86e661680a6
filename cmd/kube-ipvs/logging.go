package main

import (
	"fmt"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"

	"github.com/kube-ipvs/kube-ipvs/config"
)

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

// routeKlog sends what client-go logs through klog (reflector and watch
// errors, throttling notices, …) to log, under the name "client-go", so the
// agent writes one format. klog.Info and klog.Warning become zap Info,
// klog.Error zap Error. klog's own verbosity stays 0, so klog.V(n) lines
// with n > 0 are dropped; a V(n) line through klog.FromContext is zap
// level -n, so logging.level debug shows V(1) and nothing shows more.
func routeKlog(log *zap.Logger) {
	klog.SetLoggerWithOptions(zapr.NewLogger(log.Named("client-go")),
		klog.ContextualLogger(true),
		klog.FlushLogger(func() { _ = log.Sync() }))
}
