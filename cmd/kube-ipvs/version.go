package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time (`make build`: `git describe`
// and `git rev-parse HEAD`), like `go build -ldflags "-X
// main.version=v0.3.0 -X main.commit=0d7c857…"`. Without commit, the one
// Go stamps into a binary built in a git checkout (-buildvcs) is used.
var (
	version = "devel"
	commit  = ""
)

// buildInfo is what `kube-ipvs version` prints and start-up logs.
type buildInfo struct {
	Version, Commit, GoVersion, Platform string
	Modified                             bool // built from a tree with uncommitted changes
}

// readBuildInfo reads the version, the VCS commit Go stamped into the
// binary (`go build` in a git checkout does unless -buildvcs=false;
// "unknown" without) and the Go version.
func readBuildInfo(read func() (*debug.BuildInfo, bool)) buildInfo {
	b := buildInfo{Version: version, Commit: "unknown", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := read()
	if !ok {
		return b
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	if info.GoVersion != "" {
		b.GoVersion = info.GoVersion
	}
	return b
}

// withCommit is b with the commit set at build time, if any.
func (b buildInfo) withCommit(c string) buildInfo {
	if c != "" {
		b.Commit, b.Modified = c, false
	}
	return b
}

// String is the line `kube-ipvs version` prints:
// "kube-ipvs v0.3.0 commit 0d7c857… go1.26.0 linux/amd64".
func (b buildInfo) String() string {
	commit := b.Commit
	if b.Modified {
		commit += "-dirty"
	}
	return fmt.Sprintf("kube-ipvs %s commit %s %s %s", b.Version, commit, b.GoVersion, b.Platform)
}
