package ipvs

import (
	"net/netip"
	"strings"
	"testing"
)

// key builds a ServiceKey from "10.96.0.10:80" or "[fd00::a]:53".
func key(p Protocol, addrPort string) ServiceKey {
	ap := netip.MustParseAddrPort(addrPort)
	return ServiceKey{Addr: ap.Addr(), Proto: p, Port: ap.Port()}
}

// rr is a round-robin virtual server without persistence.
func rr(k ServiceKey) Service { return Service{Key: k, Scheduler: "rr"} }

// masq is a masqueraded real server of weight 1.
func masq(addrPort string) Destination {
	return Destination{Addr: netip.MustParseAddrPort(addrPort), Weight: 1, Forward: Masquerade}
}

// lines joins lines with a trailing newline, the way Dump ends.
func lines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

// seeded returns a Fake loaded with text, failing the test on error.
func seeded(t *testing.T, text string) *Fake {
	t.Helper()
	f := NewFake()
	if err := f.Load(text); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return f
}

// diff reports got vs want text for a whole-state comparison.
func diff(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n--- got ---\n%s--- want ---\n%s", what, got, want)
	}
}
