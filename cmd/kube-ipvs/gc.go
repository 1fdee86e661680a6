package main

import (
	"runtime/debug"
	"strconv"
)

// defaultGCPercent is kube-ipvs' GOGC when the environment sets none: the
// heap may grow by 40 % of what survived the last collection before the
// next one, not double (Go's default, 100). kube-ipvs' heap is mostly
// what it keeps (its informer caches, desired state and mirror of the
// kernel), and it allocates little between full syncs, so collecting
// earlier costs little CPU and lowers its peak memory (README, "Scale",
// has what the benchmark measured).
const defaultGCPercent = 40

// setGCPercent applies defaultGCPercent unless GOGC is set, which Go's
// runtime has read already; it returns the GOGC in effect and whether
// kube-ipvs chose it.
func setGCPercent(getenv func(string) string) (gogc string, chosen bool) {
	if v := getenv("GOGC"); v != "" {
		return v, false
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent), true
}
