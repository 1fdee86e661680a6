package main

import (
	"runtime/debug"
	"testing"
)

// Without GOGC in the environment kube-ipvs collects at 40% heap growth;
// an operator's GOGC, including "off", is left to Go's runtime.
func TestGCPercent(t *testing.T) {
	was := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(was) })

	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if gogc, chosen := setGCPercent(getenv); gogc != "40" || !chosen {
		t.Errorf("no GOGC: got %q (chosen %v), want 40 chosen", gogc, chosen)
	}
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("no GOGC: the runtime's GC percent is %d, want %d", got, defaultGCPercent)
	}
	for _, v := range []string{"100", "off", "200"} {
		env["GOGC"] = v
		if gogc, chosen := setGCPercent(getenv); gogc != v || chosen {
			t.Errorf("GOGC=%s: got %q (chosen %v), want it left alone", v, gogc, chosen)
		}
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GOGC=%s: kube-ipvs changed the GC percent to %d", v, got)
		}
	}
}
