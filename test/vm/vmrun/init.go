package vmrun

import (
	"fmt"
	"sort"
	"strings"
)

// Markers /init prints on the console (ttyS0); the host reads the run from them.
const (
	markInit     = "KIPVS-INIT-START"    // /init runs: the kernel booted
	markModFail  = "KIPVS-MODPROBE-FAIL" // followed by the modules that failed
	markFatal    = "KIPVS-FATAL"         // followed by what went wrong
	markListed   = "KIPVS-TEST"          // followed by the name of a test the guest will run
	markTests    = "KIPVS-TESTS-START"   // the guest test binary starts
	markGuestEnd = "KIPVS-GUEST-EXIT"    // followed by rc=N: the guest tests ended
)

// HostCommandPrefix starts a console line by which a guest test asks the host
// driver to act (see Config.HostCommand): "KIPVS-HOST: stop-apiserver".
// The guest has no other channel to the host.
const HostCommandPrefix = "KIPVS-HOST:"

// Where the e2e driver and the demo put the guest's kubeconfigs for the
// host's kube-apiserver (guest.AdminKubeconfig, guest.AgentKubeconfig).
const (
	GuestAdminKubeconfig = "/etc/kipvs/api/admin.kubeconfig" // system:masters
	GuestAgentKubeconfig = "/etc/kipvs/api/agent.kubeconfig" // the kube-ipvs ServiceAccount's token
	// GuestServiceAccount holds what kubelet would mount into a kube-ipvs
	// pod at /var/run/secrets/kubernetes.io/serviceaccount: "token" (of
	// the kube-ipvs ServiceAccount) and "ca.crt" (the apiserver's CA).
	// It is not at that path because /init mounts a tmpfs on /run.
	GuestServiceAccount = "/etc/kipvs/api/serviceaccount"
)

// GuestKubeProxy is where the e2e driver puts upstream kube-proxy (built
// static by test/tools/build.sh) in the guest (guest.KubeProxyBin).
const GuestKubeProxy = "/bin/kube-proxy"

// GuestFwdIP is where the guest reaches the host port forwarded by
// Config.GuestFwd (KIPVS_VM_GUESTFWD).
const GuestFwdIP = "10.0.2.100"

// initScript is the guest's /init (busybox sh, PID 1). It reads its settings from
// /etc/kipvs/env, loads the modules listed in /etc/kipvs/modules (written by
// prepare.sh), then runs /bin/guest.test with its output on ttyS1, or a shell.
const initScript = `#!/bin/sh
# /init of the kube-ipvs test VM, written by test/vm/vmrun.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
up() { cut -d' ' -f1 /proc/uptime; }
echo "` + markInit + ` uptime=$(up)"
. /etc/kipvs/env

halt() {
	sync
	poweroff -f
	sleep 10
	echo o >/proc/sysrq-trigger
}
fatal() {
	echo "` + markFatal + ` $*"
	dmesg | tail -n 30
	halt
}

failed=""
if ! modprobe -a $(cat /etc/kipvs/modules); then
	for m in $(cat /etc/kipvs/modules); do
		modprobe "$m" || failed="$failed $m"
	done
fi
if [ -n "$failed" ]; then
	echo "` + markModFail + `$failed"
	fatal "modprobe failed:$failed"
fi
ip link set lo up || fatal "cannot bring lo up"
hostname kipvs-vm
if [ -n "$KIPVS_GUESTFWD_ADDR" ]; then
	ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || fatal "cannot set up eth0 for guestfwd"
fi
echo "modules loaded, uptime=$(up)"

if [ "$KIPVS_MODE" = shell ]; then
	echo
	echo "kube-ipvs test VM (kernel $(uname -r)): ipvsadm, iptables (nft; -legacy on demand), ipset, ip, conntrack."
	echo "Guest tests: /bin/guest.test -test.v [-test.run REGEX]. Leave: poweroff -f (or Ctrl-A X)."
	setsid cttyhack sh
	halt
fi

[ -x /bin/guest.test ] || fatal "/bin/guest.test is missing"
stty -F /dev/ttyS1 raw -echo || fatal "no /dev/ttyS1 for the test output"
/bin/guest.test -test.list "${KIPVS_RUN:-.}" | grep -Ev "${KIPVS_SKIP:-^$}" | sed -n 's/^Test/` + markListed + ` Test/p'
echo "` + markTests + ` uptime=$(up)"
set -- -test.v=test2json -test.timeout="$KIPVS_GUEST_TIMEOUT"
[ -n "$KIPVS_RUN" ] && set -- "$@" -test.run="$KIPVS_RUN"
[ -n "$KIPVS_SKIP" ] && set -- "$@" -test.skip="$KIPVS_SKIP"
cd /tmp && /bin/guest.test "$@" >/dev/ttyS1 2>&1 </dev/null
rc=$?
echo "` + markGuestEnd + ` rc=$rc uptime=$(up)"
[ "$rc" = 0 ] || dmesg | tail -n 40
halt
`

// envFile renders /etc/kipvs/env: shell exports, values single-quoted.
func envFile(vars map[string]string) []byte {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(vars[k], "'", `'\''`))
	}
	return []byte(b.String())
}
