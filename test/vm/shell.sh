#!/usr/bin/env bash
# shell.sh boots the kube-ipvs test VM (the same kernel, modules, tools and
# binaries as `go test -tags vmtest ./test/vm`) with a root shell on this terminal,
# to look around with ipvsadm, iptables-save, ipset, ip and conntrack, or to run
# /bin/guest.test -test.v by hand. Leave with `poweroff -f` (or Ctrl-A X).
#
#	sudo test/vm/prepare.sh   # once
#	test/vm/shell.sh
#
# KIPVS_VM_GUESTFWD and KIPVS_GUEST_* work as for the tests (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$here"
go test -c -tags vmtest -o "$tmp/vm.test" .
KIPVS_VM_SHELL=1 "$tmp/vm.test" -test.run '^TestVM$' -test.timeout 0
