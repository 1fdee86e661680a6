#!/usr/bin/env bash
# demo.sh is `make demo`: on a fresh machine it installs and builds what the
# demo needs (both steps are cached), then runs the demo driver (main.go),
# which starts a real kube-apiserver, boots a VM with a real IPVS kernel, runs
# kube-ipvs with three pods and a Service, scales to five pods and back, and
# tears everything down. Run as root from anywhere in the repository.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
began=$SECONDS
step() { printf '\n==> host: %s\n' "$*"; }

# heartbeat CMD...: runs CMD, printing a line every 15 s while it runs.
heartbeat() {
	local start=$SECONDS pid rc
	"$@" &
	pid=$!
	# Background jobs of a script ignore Ctrl-C: pass it on.
	trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
	while ! wait_for "$pid" 15; do
		printf '    still working (%ds)\n' $((SECONDS - start))
	done
	wait "$pid" && rc=0 || rc=$?
	trap - INT TERM
	return "$rc"
}
# wait_for PID SECS: true once PID has ended, false after SECS if still running.
wait_for() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.2
	done
	! kill -0 "$1" 2>/dev/null
}

if [[ $(id -u) -ne 0 ]]; then
	echo "make demo: run as root (it installs qemu and the Debian kernel on first use)" >&2
	exit 1
fi

step "Preparing the VM image: a Debian kernel with IPVS, ipvsadm, iptables, ipset (test/vm/prepare.sh; cached after the first run)"
test/vm/prepare.sh

step "Building kube-apiserver and etcd (test/tools/build.sh; about 12 minutes the first time, cached afterwards)"
test/tools/build.sh

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
step "Compiling the demo driver (go build ./test/demo)"
heartbeat go build -o "$tmp/demo" ./test/demo

"$tmp/demo"
printf '    make demo took %ds in all\n' $((SECONDS - began))
