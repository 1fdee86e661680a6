package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestBuildInfo(t *testing.T) {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	stamped := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.26.0", Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0d7c8572"}, {Key: "vcs.modified", Value: "true"},
		}}, true
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, c := range []struct {
		name   string
		read   func() (*debug.BuildInfo, bool)
		commit string // set with -ldflags
		want   string
	}{
		{"a git checkout with changes", stamped, "", "kube-ipvs devel commit 0d7c8572-dirty go1.26.0 " + platform},
		{"no build information", none, "", "kube-ipvs devel commit unknown " + runtime.Version() + " " + platform},
		{"the commit set at build time wins", stamped, "bddb3160", "kube-ipvs devel commit bddb3160 go1.26.0 " + platform},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := readBuildInfo(c.read).withCommit(c.commit).String(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
