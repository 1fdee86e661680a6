package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/klog/v2"

	"github.com/kube-ipvs/kube-ipvs/config"
)

// What client-go writes through klog comes out of the agent's zap logger,
// named client-go, at the matching level, with its structured fields.
func TestKlogGoesThroughZap(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	routeKlog(zap.New(core))
	t.Cleanup(klog.ClearLogger)

	klog.Info("watch of *v1.Service ended")
	klog.Warningf("throttled for %s", "1s")
	klog.Error("failed to list *v1.EndpointSlice")
	klog.ErrorS(errors.New("connection refused"), "Unhandled Error", "resource", "services")
	klog.InfoS("Caches populated", "type", "*v1.Node")
	klog.V(4).Info("verbose: dropped at klog's verbosity 0")
	klog.Background().WithName("reflector").Info("contextual")
	klog.Flush()

	var got []string
	for _, e := range logs.All() {
		line := fmt.Sprintf("%s %s %q", e.Level, e.LoggerName, e.Message)
		for _, f := range e.Context {
			enc := zapcore.NewMapObjectEncoder()
			f.AddTo(enc)
			for k, v := range enc.Fields {
				line += fmt.Sprintf(" %s=%v", k, v)
			}
		}
		got = append(got, line)
	}
	want := []string{
		`info client-go "watch of *v1.Service ended"`,
		`info client-go "throttled for 1s"`,
		`error client-go "failed to list *v1.EndpointSlice"`,
		`error client-go "Unhandled Error" resource=services error=connection refused`,
		`info client-go "Caches populated" type=*v1.Node`,
		`info client-go.reflector "contextual"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("zap got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNewLogger(t *testing.T) {
	for _, c := range []config.LoggingConfiguration{{Level: "debug", Format: "json"}, {Level: "warn", Format: "console"}} {
		if _, err := newLogger(c); err != nil {
			t.Errorf("newLogger(%+v): %v", c, err)
		}
	}
	if _, err := newLogger(config.LoggingConfiguration{Level: "loud", Format: "json"}); err == nil ||
		!strings.HasPrefix(err.Error(), "logging.level: ") {
		t.Errorf("newLogger with level loud: %v, want a logging.level error", err)
	}
}
