// Command etcd runs a single-member etcd server embedded through
// go.etcd.io/etcd/server/v3/embed, for the tier-3 tests. It listens only
// where it is told to (loopback in the tests), keeps its data in --data-dir,
// and shuts down cleanly on SIGTERM or SIGINT.
//
// Like `etcd --data-dir D --listen-client-urls http://127.0.0.1:P
// --advertise-client-urls http://127.0.0.1:P --listen-peer-urls ...`.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		name      = flag.String("name", "default", "member name")
		dataDir   = flag.String("data-dir", "", "directory for the member's data (required)")
		clientURL = flag.String("listen-client-url", "http://127.0.0.1:2379", "URL to serve clients on, also advertised")
		peerURL   = flag.String("listen-peer-url", "http://127.0.0.1:2380", "URL to serve peers on, also advertised")
		logLevel  = flag.String("log-level", "warn", "debug, info, warn or error")
		noFsync   = flag.Bool("unsafe-no-fsync", false, "skip fsync: faster, loses data on a crash (tests only)")
		startWait = flag.Duration("start-timeout", time.Minute, "how long to wait for the server to become ready")
	)
	flag.Parse()
	if *dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		return fmt.Errorf("--listen-client-url %q: %w", *clientURL, err)
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		return fmt.Errorf("--listen-peer-url %q: %w", *peerURL, err)
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync

	// Register before starting so a SIGTERM during start-up is not lost.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting: %w", err)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", cu)
	case err := <-e.Err():
		return fmt.Errorf("serving: %w", err)
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "etcd: %v before ready, stopping\n", s)
		return nil
	case <-time.After(*startWait):
		return fmt.Errorf("not ready after %v", *startWait)
	}

	select {
	case err := <-e.Err():
		return fmt.Errorf("serving: %w", err)
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", s)
		return nil
	}
}
