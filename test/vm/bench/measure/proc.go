package measure

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture the VM runs (Debian's amd64 kernel).
const ClockTicks = 100

// CPUTime reads the CPU a process used from the text of /proc/PID/stat:
// utime+stime+cutime+cstime (fields 14-17), so the programs it ran and
// waited for (iptables-restore, ipset) count too.
func CPUTime(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("no command name in /proc/PID/stat %.80q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 15 {
		return 0, fmt.Errorf("short /proc/PID/stat %.80q", stat)
	}
	var ticks int64
	for _, s := range f[11:15] { // field 3 (state) is f[0]: 14..17 are f[11..14]
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/stat field %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / ClockTicks, nil
}

// PeakRSS reads VmHWM, the peak resident set size, from the text of
// /proc/PID/status, in bytes.
func PeakRSS(status []byte) (int64, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmHWM line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM line %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmHWM in /proc/PID/status")
}

// Idle rule: a process is idle from the start of the first window of
// IdleWindow in which it used at most IdleCPU of CPU (5% of one CPU).
const (
	IdleWindow = 2 * time.Second
	IdleCPU    = 100 * time.Millisecond
)

// IdleDetector applies the idle rule to CPU samples taken every few
// hundred milliseconds (Add, in time order).
type IdleDetector struct {
	times []time.Time
	cpu   []time.Duration
}

// Add records that the process had used cpu at t. Once there is an idle
// window, it returns its start and the CPU used by then.
func (d *IdleDetector) Add(t time.Time, cpu time.Duration) (time.Time, time.Duration, bool) {
	d.times = append(d.times, t)
	d.cpu = append(d.cpu, cpu)
	last := len(d.times) - 1
	for len(d.times) > 1 && t.Sub(d.times[0]) >= IdleWindow {
		// The earliest window [times[0], t] is long enough: idle, or slide on.
		if d.cpu[last]-d.cpu[0] <= IdleCPU {
			return d.times[0], d.cpu[0], true
		}
		// Drop the first sample unless the window without it is too short.
		if t.Sub(d.times[1]) < IdleWindow {
			break
		}
		d.times, d.cpu = d.times[1:], d.cpu[1:]
		last--
	}
	return time.Time{}, 0, false
}
