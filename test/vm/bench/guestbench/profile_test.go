//go:build vmguest

package guestbench

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/kube-ipvs/kube-ipvs/test/vm/bench/measure"
)

// debugSocket is kube-ipvs' default debug socket (cmd/kube-ipvs).
const debugSocket = "/run/kube-ipvs/kube-ipvs.sock"

// profileKubeIPVS takes a CPU profile of kube-ipvs through its debug
// socket when the host asked for one (bench -profile, which sets
// KIPVS_BENCH_PROFILE to the profile's length), from as soon as the socket
// answers, then its heap profile, and prints them for the host (measure.ProfilePrefix lines). The
// returned func waits until it is printed. A profile that cannot be taken
// is logged, never fatal: it is not a figure.
func profileKubeIPVS(t *testing.T, p params) (wait func()) {
	t.Helper()
	seconds := os.Getenv("KIPVS_BENCH_PROFILE")
	if seconds == "" || p.proxy != measure.KubeIPVS {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", debugSocket)
		}}}
		deadline := time.Now().Add(time.Minute)
		for {
			if _, err := os.Stat(debugSocket); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Logf("profile: no %s after a minute", debugSocket)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		fetch := func(kind, path string) {
			began := time.Now()
			resp, err := hc.Get("http://kube-ipvs/debug/pprof/" + path)
			if err != nil {
				t.Logf("profile %s: %v", kind, err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Logf("profile %s: %d %v %.200s", kind, resp.StatusCode, err, body)
				return
			}
			enc := base64.StdEncoding.EncodeToString(body)
			for len(enc) > 0 {
				n := min(len(enc), 512)
				fmt.Printf("\n%s%s\n", measure.ProfilePrefix, enc[:n])
				enc = enc[n:]
			}
			fmt.Printf("\n%s%s\n", measure.ProfileEnd, kind)
			t.Logf("profile %s: %d bytes in %v", kind, len(body), time.Since(began).Round(time.Millisecond))
		}
		// The CPU profile from the start; then the heap's (its
		// alloc_space is everything allocated since the start).
		fetch("cpu", "profile?seconds="+seconds)
		fetch("heap", "heap")
	}()
	return func() { <-done }
}
