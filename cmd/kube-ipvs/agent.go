package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/kube-ipvs/kube-ipvs/config"
	"github.com/kube-ipvs/kube-ipvs/conntrack"
	"github.com/kube-ipvs/kube-ipvs/events"
	"github.com/kube-ipvs/kube-ipvs/healthcheck"
	"github.com/kube-ipvs/kube-ipvs/iptables"
	"github.com/kube-ipvs/kube-ipvs/ipvs"
	"github.com/kube-ipvs/kube-ipvs/metrics"
	"github.com/kube-ipvs/kube-ipvs/netif"
	"github.com/kube-ipvs/kube-ipvs/proxier"
)

// agent wires the configuration to the kernel adapters, the proxier, the
// informers and the runner.
type agent struct {
	log        *zap.Logger
	cfg        *config.Configuration
	objectsDir string
	ipvs       *ipvs.Kernel
	local      *netif.KernelAddrSource
	kernel     proxier.Kernel
	opts       proxier.Options
	build      buildInfo
	// warnings are the configuration's, also recorded on the Node.
	warnings []string
}

func newAgent(log *zap.Logger, cfg *config.Configuration, objectsDir string, build buildInfo) *agent {
	k := ipvs.NewKernel()
	local := netif.NewAddrSource(netif.DefaultLink)
	ipt4, ipt6 := iptablesKernels(log, cfg.IPTablesBackend, runSave)
	// The agent serves IPv4; an IPv6 Service CIDR is not routed.
	var serviceCIDRs []netip.Prefix
	for _, p := range cfg.ServiceCIDRPrefixes() {
		if p.Addr().Is4() {
			serviceCIDRs = append(serviceCIDRs, p)
		}
	}
	return &agent{
		log:        log,
		cfg:        cfg,
		objectsDir: objectsDir,
		ipvs:       k,
		local:      local,
		build:      build,
		kernel: proxier.Kernel{
			IPVS:      k,
			Addrs:     netif.NewDummy(netif.DefaultLink),
			IPTables:  ipt4,
			Sets:      iptables.NewKernelSets(),
			Conntrack: conntrack.NewKernel(),
			Local:     local,
		},
		opts: proxier.Options{
			Build: proxier.BuildConfig{
				NodeName: cfg.NodeName, Scheduler: cfg.IPVS.Scheduler, Family: v1.IPv4Protocol,
				ExternalIPCIDRs:   cfg.AllowedExternalIPCIDRs(),
				LoadBalancerCIDRs: cfg.AllowedLoadBalancerIPCIDRs(),
				ServiceCIDRs:      serviceCIDRs,
			},
			NodePorts: proxier.NodePortConfig{Primary: cfg.NodePortPrimary(), CIDRs: cfg.NodePortCIDRs()},
			Rules: proxier.RuleConfig{
				Family:        v1.IPv4Protocol,
				ClusterCIDRs:  cfg.ClusterCIDRs(),
				MasqueradeAll: cfg.MasqueradeAll,
				MasqueradeBit: cfg.MasqueradeBit,

				EgressMasquerade:       cfg.Egress.Masquerade,
				NonMasqueradeCIDRs:     cfg.EgressNonMasqueradeCIDRs(),
				EgressDenyCIDRs:        cfg.EgressDenyCIDRs(),
				IngressDenySourceCIDRs: cfg.IngressDenySourceCIDRs(),
				ServiceCIDRs:           serviceCIDRs,
			},
			DryRun:       cfg.Mode == config.ModeDryRun,
			DrainTimeout: cfg.IPVS.DrainTimeout.Duration,
			ExcludeCIDRs: cfg.ExcludedCIDRs(),
			TakeOver:     takeOver(cfg.TakeOver, ipt6),
			RetryMax:     cfg.IPVS.SyncPeriod.Duration,
		},
	}
}

// cleanup removes everything kube-ipvs made on the node. Without IPVS
// loaded there is no virtual server to remove, and nothing is loaded for
// it: the rest is removed all the same.
func (a *agent) cleanup() error {
	k := a.kernel
	if !a.ipvs.Loaded() {
		a.log.Info("IPVS is not loaded: no virtual server to remove")
		k.IPVS = nil
	}
	rules := proxier.BuildRules(a.opts.Rules)
	if a.opts.DryRun {
		plan, err := proxier.CleanupPlan(k, rules, a.opts.Build.Family)
		if err != nil {
			return fmt.Errorf("cleanup (dry-run): %w", err)
		}
		for _, op := range plan {
			a.log.Info("dry-run: cleanup would run", zap.String("op", op))
		}
		a.log.Info("dry-run: nothing was removed", zap.Int("ops", len(plan)))
		return nil
	}
	if err := proxier.Cleanup(k, rules, a.opts.Build.Family); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	a.log.Info("removed everything kube-ipvs made on this node")
	return nil
}

// run checks the kernel, prepares the node, waits for the caches and then
// syncs until ctx is done. Stopping removes nothing: a restart adopts what
// is in the kernel.
func (a *agent) run(ctx context.Context) error {
	if err := a.prepare(); err != nil {
		return err
	}
	var src proxier.Source
	var rec *events.Recorder // nil records nothing: with objectsDir, warnings are only logged
	if a.objectsDir != "" {
		files, err := startFileSource(ctx, a.log, a.objectsDir, time.Second)
		if err != nil {
			return err
		}
		src = files
	} else {
		client, err := a.client()
		if err != nil {
			return err
		}
		a.waitForAPIServer(ctx, client)
		var stopEvents func()
		rec, stopEvents = events.New(ctx, client, a.cfg.NodeName)
		defer stopEvents()
		src = client
	}
	for _, w := range a.warnings {
		rec.Node("configuration warning", w)
	}
	m := metrics.New(string(a.opts.Build.Family), metrics.Build{Version: a.build.Version, Commit: a.build.Commit, GoVersion: a.build.GoVersion})
	// As kube-proxy: unhealthy once a change waited 2 × syncPeriod.
	proxyHealth := healthcheck.NewProxyHealth(clock.RealClock{}, 2*a.cfg.IPVS.SyncPeriod.Duration, a.opts.Build.Family)
	proxyHealth.CountAnswers(m.Served)
	health := healthcheck.New(a.log.Named("healthcheck"), proxyHealth.Healthy, nil)
	defer health.Close()
	opts := a.opts
	opts.Health, opts.Metrics, opts.Events = health, m, rec
	p := proxier.New(a.log, a.kernel, opts)
	r := proxier.NewRunner(a.log, clock.RealClock{}, proxier.RunnerConfig{
		MinInterval:  a.cfg.IPVS.MinSyncPeriod.Duration,
		FullInterval: a.cfg.IPVS.SyncPeriod.Duration,
		BackoffMin:   time.Second,
		BackoffMax:   a.cfg.IPVS.SyncPeriod.Duration,
	}, p)
	r.Observe(proxyHealth)
	r.Observe(m)
	if a.cfg.VirtualServerMetrics {
		m.Registry().MustRegister(metrics.NewTraffic(p.ServerOwners, a.ipvs))
	}
	w, err := proxier.NewWatcher(src, a.cfg.NodeName, a.cfg.ServiceProxyName, p, r.Request)
	if err != nil {
		return err
	}
	if err := w.WatchNode(proxyHealth.SetNode); err != nil {
		return err
	}
	if addr := a.cfg.HealthzBind; addr != "" {
		failed := func(err error) {
			a.log.Error("not serving /healthz and /livez; the data plane runs on", zap.Error(err))
			rec.Node("health server failed", err.Error())
		}
		if err := healthcheck.ServeProxyHealth(ctx, addr, proxyHealth, failed); err != nil {
			failed(err)
		}
	}
	if path := debugSocket; path != "" { // kube-ipvs show and explain (debugserver.go)
		debugCtx, stopDebug := context.WithCancel(ctx)
		debugDone := make(chan struct{})
		go func() {
			defer close(debugDone)
			if err := serveDebug(debugCtx, a.log.Named("debug"), path, p); err != nil {
				a.log.Error("not serving show and explain; the data plane runs on", zap.Error(err))
			}
		}()
		defer func() { stopDebug(); <-debugDone }() // the socket is gone before run returns
	}
	if addr := a.cfg.MetricsBind; addr != "" {
		failed := func(err error) {
			a.log.Error("not serving /metrics; the data plane runs on", zap.Error(err))
			rec.Node("metrics server failed", err.Error())
		}
		if err := metrics.Serve(ctx, addr, m.Handler(), failed); err != nil {
			failed(err)
		}
	}
	go a.watchAddrs(ctx, rec, func() { p.OnLocalAddrsChanged(); r.Request() })
	a.log.Info("kube-ipvs running; waiting for Services and EndpointSlices to sync", zap.String("node", a.cfg.NodeName),
		zap.String("mode", a.cfg.Mode), zap.String("scheduler", a.cfg.IPVS.Scheduler))
	return proxier.Run(ctx, w, r)
}

// watchAddrs tells the proxier when an address of the node changes, so
// NodePorts follow the node's addresses at once. Without the netlink
// subscription every full sync still reads them.
func (a *agent) watchAddrs(ctx context.Context, rec *events.Recorder, changed func()) {
	if err := a.local.Watch(ctx, changed); err != nil && ctx.Err() == nil {
		a.log.Warn("not watching the node's addresses; they are read at every full sync", zap.Error(err))
		rec.Node("not watching addresses", err.Error())
	}
}

// prepare checks the kernel can do what the configuration asks (IPVS, the
// scheduler) and, unless in dry-run mode, sets the node up.
func (a *agent) prepare() error {
	if err := a.ipvs.EnsureModules(); err != nil {
		return fmt.Errorf("loading IPVS: %w", err)
	}
	if err := a.ipvs.EnsureScheduler(a.cfg.IPVS.Scheduler); err != nil {
		return fmt.Errorf("ipvs.scheduler %q: %w", a.cfg.IPVS.Scheduler, err)
	}
	if a.opts.DryRun {
		a.log.Info("dry-run: the kernel will be read, never written")
		return nil
	}
	c := a.cfg.IPVS
	if err := a.ipvs.SetTimeouts(c.TCPTimeout.Duration, c.TCPFinTimeout.Duration, c.UDPTimeout.Duration); err != nil {
		return err
	}
	if err := proxier.Setup(a.log, a.kernel, netif.NewProcSysctl(), proxier.SetupOptions{StrictARP: a.cfg.IPVS.StrictARP}); err != nil {
		return fmt.Errorf("preparing the node: %w", err)
	}
	return nil
}

// takeOver is the take-over from kube-proxy when on is set (the
// configuration's takeOverFromKubeProxy), nil otherwise; ip6tables is the
// node's IPv6 iptables, where kube-proxy's IPv6 chains are.
func takeOver(on bool, ip6tables iptables.Interface) *proxier.TakeOver {
	if !on {
		return nil
	}
	return &proxier.TakeOver{Link: netif.NewDummy(proxier.KubeProxyLink), IP6Tables: ip6tables}
}
