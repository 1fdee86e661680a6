//go:build vmguest

package guest

import (
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MetricsAddr is where the agent serves /metrics by default
// (metricsBindAddress, kube-proxy's 127.0.0.1:10249).
var MetricsAddr = netip.MustParseAddrPort("127.0.0.1:10249")

// HTTPGet is GET http://addr/path from inside ns, on a connection of its
// own: the status, the body and the headers.
func HTTPGet(t testing.TB, ns string, addr netip.AddrPort, path string) (int, []byte, http.Header) {
	t.Helper()
	conn, err := DialTCP(ns, addr)
	if err != nil {
		t.Fatalf("GET %s%s from %s: %v", addr, path, ns, err)
	}
	defer conn.Close()
	c := conn.c
	if err := c.SetDeadline(time.Now().Add(RequestTimeout)); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr.String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	resp, err := http.ReadResponse(conn.r, req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	return resp.StatusCode, body, resp.Header
}

// ScrapeMetrics returns the agent's /metrics text, fetched from inside ns.
func ScrapeMetrics(t testing.TB, ns string, addr netip.AddrPort) string {
	t.Helper()
	code, body, _ := HTTPGet(t, ns, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("scraping %s: %d %.200s", addr, code, body)
	}
	return string(body)
}

// MetricValue is the value of one series ("name{label=\"v\"}" exactly as
// the text format writes it, or a bare name) in a scrape; false if absent.
func MetricValue(scrape, series string) (float64, bool) {
	for line := range strings.SplitSeq(scrape, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}
