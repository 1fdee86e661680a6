#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd used by the tier-3 tests
# (test/controlplane), the real kube-proxy that the e2e VM runs in IPVS
# mode (test/vm/e2e, guest.StartKubeProxy) and the real flanneld that it
# runs beside kube-ipvs (guest.StartFlannel) into a cache outside the
# repository:
#
#   ${KIPVS_CACHE:-/var/cache/kube-ipvs}/bin/{kube-apiserver,etcd,kube-proxy,flanneld}
#
# kube-apiserver and etcd run on the host and are built as Go builds them by
# default; kube-proxy runs in the VM, whose initramfs has no libc for a Go
# program, so it is linked statically (CGO_ENABLED=0), which compiles its
# dependency graph a second time. flanneld comes from its own module,
# flannel/ (github.com/flannel-io/flannel at the version its go.mod pins;
# flannel/doc.go says why it is separate), and is linked statically with
# cgo (its amd64 udp backend is C), which needs gcc and a static libc.
#
# The build is keyed by a hash of both modules' go.mod, go.sum and Go
# sources, this script and the Go version, and is skipped when nothing
# changed and all four binaries are there. The first build compiles ~2000
# packages for the host programs (about 10 minutes on 2 cores), ~850 more
# for the static kube-proxy (about 9 minutes) and ~750 for flanneld
# (about 1 minute with the others cached); it prints a progress line every
# 100 packages and a heartbeat every 30 s.
#
# Usage: test/tools/build.sh [-f]     (-f: rebuild even if up to date)
# Env:   KIPVS_CACHE   cache root (default /var/cache/kube-ipvs)
#        PROGRESS_EVERY  packages between progress lines (default 100)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KIPVS_CACHE:-/var/cache/kube-ipvs}"
bin="$cache/bin"
every="${PROGRESS_EVERY:-100}"
force=0
[[ "${1:-}" == "-f" ]] && force=1

log() { printf '[tools] %s\n' "$*" >&2; }

if ! mkdir -p "$bin" 2>/dev/null || [[ ! -w "$bin" ]]; then
	log "cannot write $bin; set KIPVS_CACHE to a writable directory (e.g. KIPVS_CACHE=\$HOME/.cache/kube-ipvs)"
	exit 1
fi

cd "$here"

# One build at a time: parallel test packages may all call this script.
exec 9>"$cache/.build.lock"
if ! flock -n 9; then
	log "another build holds $cache/.build.lock; waiting for it"
	flock 9
fi

key="$(
	{
		go version
		sha256sum build.sh go.mod go.sum flannel/go.mod flannel/go.sum
		find . -name '*.go' -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
	} | sha256sum | cut -d' ' -f1
)"
stamp="$bin/.tools-hash"

# The stamp is written after all four binaries are in place, so a cache
# that lacks one of them (say, from before flanneld was added) rebuilds.
if [[ $force -eq 0 && -x "$bin/kube-apiserver" && -x "$bin/etcd" && -x "$bin/kube-proxy" &&
	-x "$bin/flanneld" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
	log "up to date in $bin (key ${key:0:12})"
	exit 0
fi

# Build-time version stamping, as upstream's hack/lib/version.sh does, so
# /version and the compatibility-version logic see v1.37.x, not v0.0.0-master.
export GOFLAGS="-mod=readonly -buildvcs=false"
kver="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
major="${kver#v}"; major="${major%%.*}"
minor="${kver#v*.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
ldflags="-s -w"
ldflags+=" -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor"
ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"

log "downloading modules (first run only fetches anything)"
go mod download
(cd flannel && go mod download)

# The host's programs are built as go builds by default; kube-proxy, for the
# VM, statically. Each `go list` runs with the CGO_ENABLED its build uses.
host_pkgs=(./kube-apiserver ./etcd)
vm_pkgs=(./kube-proxy)
host_total="$(go list -deps "${host_pkgs[@]}" | wc -l)"
vm_total="$(CGO_ENABLED=0 go list -deps "${vm_pkgs[@]}" | wc -l)"
# flanneld: static, with cgo (see flannel/doc.go), version-stamped as
# upstream's Makefile does.
flannel_pkg=github.com/flannel-io/flannel
fver="$(cd flannel && go list -m -f '{{.Version}}' "$flannel_pkg")"
flannel_tags=netgo,osusergo
flannel_ldflags="-s -w -linkmode external -extldflags -static -X $flannel_pkg/pkg/version.Version=$fver"
flannel_total="$(cd flannel && CGO_ENABLED=1 go list -tags "$flannel_tags" -deps "$flannel_pkg" | wc -l)"
total=$((host_total + vm_total + flannel_total))
log "building kube-apiserver $kver and etcd ($host_total packages), kube-proxy $kver static ($vm_total packages) and flanneld $fver static ($flannel_total packages) into $bin (cached packages are not listed)"

tmp="$(mktemp -d "$cache/build.XXXXXX")"
hb_pid=""
cleanup() {
	[[ -n "$hb_pid" ]] && kill "$hb_pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

start="$(date +%s)"
echo 0 >"$tmp/count"
(
	while sleep 30; do
		n=0; [[ -f "$tmp/count" ]] && n="$(cat "$tmp/count")"
		printf '[tools] still building… %ds (%s/%s packages compiled so far)\n' \
			$(($(date +%s) - start)) "$n" "$total" >&2
	done
) &
hb_pid=$!

# compile CGO PACKAGE...: `CGO_ENABLED=CGO go build -v` of the packages into
# $tmp (CGO empty: as the environment has it). go build -v names each
# package as it compiles it, on stderr; the running count (over both builds)
# goes to $tmp/count for the heartbeat.
compile() {
	local cgo=$1
	shift
	local -a env=()
	if [[ -n $cgo ]]; then env=(env "CGO_ENABLED=$cgo"); fi
	"${env[@]}" go build -v -ldflags "$ldflags" -o "$tmp/" "$@" 2>&1 |
		awk -v every="$every" -v total="$total" -v start="$start" -v cnt="$tmp/count" -v base="$(cat "$tmp/count")" -v pkgs="$*" '
			BEGIN { n = base }
			/^(#|go: |.*\.go:[0-9]+)/ { print > "/dev/stderr"; fflush("/dev/stderr"); next }
			{
				n++; print n > cnt; close(cnt)
				if (n % every == 0) {
					printf "[tools] %d/%d packages compiled, %ds\n", n, total, systime() - start > "/dev/stderr"
					fflush("/dev/stderr")
				}
			}
			END { printf "[tools] %d packages compiled, %s linked\n", n, pkgs > "/dev/stderr" }
		'
	return "${PIPESTATUS[0]}"
}

set +e
compile "" "${host_pkgs[@]}"
rc=$?
[[ $rc -eq 0 ]] && { compile 0 "${vm_pkgs[@]}"; rc=$?; }
if [[ $rc -eq 0 ]]; then
	(
		cd flannel
		export GOFLAGS="$GOFLAGS -tags=$flannel_tags"
		ldflags=$flannel_ldflags
		compile 1 "$flannel_pkg"
	)
	rc=$?
fi
set -e
if [[ $rc -ne 0 ]]; then
	log "go build failed (exit $rc)"
	exit "$rc"
fi
# The VM has no dynamic loader for it: make sure the link was static.
if ! go version -m "$tmp/kube-proxy" | grep -q 'CGO_ENABLED=0'; then
	log "kube-proxy was not built with CGO_ENABLED=0:"
	go version -m "$tmp/kube-proxy" >&2
	exit 1
fi
# flanneld is built with cgo: make sure the link was static all the same
# (no program interpreter).
if [[ ! -x "$tmp/flannel" ]] || readelf -lW "$tmp/flannel" | grep -q 'INTERP'; then
	log "flanneld was not linked statically (or not at all): $tmp/flannel"
	exit 1
fi

mv -f "$tmp/kube-apiserver" "$bin/kube-apiserver"
mv -f "$tmp/etcd" "$bin/etcd"
mv -f "$tmp/kube-proxy" "$bin/kube-proxy"
mv -f "$tmp/flannel" "$bin/flanneld"
printf '%s\n' "$key" >"$stamp"
log "built in $(($(date +%s) - start))s: $bin/kube-apiserver $bin/etcd $bin/kube-proxy $bin/flanneld"
