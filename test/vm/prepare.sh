#!/usr/bin/env bash
# prepare.sh installs what the real-kernel VM test bed needs and assembles, in a
# cache outside the repository, the Debian kernel and the guest root tree:
#
#   ${KIPVS_CACHE:-/var/cache/kube-ipvs}/vm/
#     current -> <key>         the tree test/vm/vm_test.go and shell.sh boot
#     <key>/vmlinuz            bookworm cloud kernel
#     <key>/rootfs/            busybox, the kernel modules below (+ depmod),
#                              ip, ipvsadm, ipset, iptables (nft; legacy), conntrack, libs
#     <key>/kernel-version     e.g. 6.1.0-56-cloud-amd64
#     <key>/packages.txt       the .debs it was built from, with versions
#     <key>/READY              written last: the tree is complete
#
# <key> is a hash of this file, so any change to the package or module lists
# (or to the assembly) builds a new tree; KIPVS_VM_REBUILD=1 forces one.
# It never touches the host's network configuration: it installs qemu and kmod,
# downloads .debs and unpacks them into the cache. Run as root. Idempotent.
set -euo pipefail

# What the host runs: qemu to boot the guest, kmod for depmod/modprobe -D.
HOST_PACKAGES=(qemu-system-x86 kmod)
HOST_COMMANDS=(qemu-system-x86_64 depmod modprobe dpkg-deb apt-get sha256sum)

# The kernel: the metapackage is resolved to the versioned image package.
KERNEL_META=linux-image-cloud-amd64

# Guest userland and every shared library it needs (the ELF closure is checked).
# busybox, not busybox-static: the static build's shell runs its own applets before
# anything in PATH, so `ip` in a shell script or the VM shell would not be iproute2.
GUEST_PACKAGES=(
	busybox iproute2 ipvsadm ipset iptables conntrack netbase
	libc6 zlib1g libbpf1 libbsd0 libmd0 libcap2 libelf1 libmnl0
	libnl-3-200 libnl-genl-3-200 libpopt0 libipset13
	libip4tc2 libip6tc2 libxtables12 libnftnl11 libnfnetlink0 libnetfilter-conntrack3
)
GUEST_PROGRAMS=(bin/ip sbin/ipvsadm usr/sbin/ipset usr/sbin/xtables-nft-multi usr/sbin/conntrack
	usr/sbin/xtables-legacy-multi)
# iptables is the nft backend (Debian 12's default); these names point at xtables-nft-multi.
XTABLES_NAMES=(iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore
	iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore)
# The legacy backend too, under its own names only (guest/backend_test.go runs the agent on both).
LEGACY_NAMES=(iptables-legacy iptables-legacy-save iptables-legacy-restore
	ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore)

# Modules /init loads in this order (modprobe pulls dependencies from modules.dep).
# bridge is the two-node bed's underlay (guest/bed.go; br_netfilter stays out,
# so bridged frames skip iptables); sctp lets pods open SCTP sockets (IPVS's
# SCTP support is built into ip_vs). ip_set_hash_netport is a type kube-ipvs
# does not use: the ipset contract's foreign set.
MODULES=(
	ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_sh ip_vs_dh
	ip_vs_mh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf
	dummy veth bridge sctp
	nf_conntrack nf_conntrack_netlink nf_nat
	ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet
	ip_set_hash_net ip_set_bitmap_port ip_set_hash_netport
	nf_tables nft_compat nft_chain_nat nft_nat nft_masq nft_ct nft_reject_inet
	x_tables xt_tcpudp xt_set xt_MASQUERADE xt_mark xt_comment xt_conntrack xt_addrtype
	xt_multiport xt_statistic xt_nat ipt_REJECT ip6t_REJECT
	virtio_pci virtio_net
)
# Loaded when the kernel has them (ip_vs_twos arrived in Linux 6.7).
OPTIONAL_MODULES=(ip_vs_twos)
# In the tree but not loaded by /init: the legacy iptables tables, which a
# test loads (modprobe) and unloads itself, so that the other tests see only nft.
ON_DEMAND_MODULES=(ip_tables iptable_filter iptable_nat iptable_mangle
	ip6_tables ip6table_filter ip6table_nat ip6table_mangle)

# Flannel's vxlan backend (guest/flannel.go, flanneld from test/tools/build.sh):
# vxlan (udp_tunnel, ip6_udp_tunnel) is loaded by /init; br_netfilter only
# goes into the tree, because flanneld (iptables mode) will not start without
# /proc/sys/net/bridge/bridge-nf-call-iptables, and the Flannel tests load
# and unload it themselves: the other tests keep bridged frames out of iptables.
MODULES+=(vxlan)
ON_DEMAND_MODULES+=(br_netfilter)

# What Calico's and Weave Net's rules use and kube-ipvs does not (the CNI
# fixture, test/fixtures/cni, in guest/cni_test.go): Calico's rpfilter match,
# Weave's physdev and state matches and its NFLOG target, which iptables-nft
# writes as nftables' log expression (nft_log, logging through nfnetlink_log).
MODULES+=(ipt_rpfilter xt_physdev xt_state nft_log nfnetlink_log)

die() {
	echo "prepare.sh: FAILED: $*" >&2
	exit 1
}
log() { echo "prepare.sh: $*" >&2; }

CACHE_ROOT="${KIPVS_CACHE:-/var/cache/kube-ipvs}/vm"
[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and writes $CACHE_ROOT)"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
KEY="$(sha256sum "$SELF" | cut -c1-16)"
OUT="$CACHE_ROOT/$KEY"
APT_UPDATED=0

apt_update_once() {
	if [[ $APT_UPDATED -eq 0 ]]; then
		log "apt-get update"
		apt-get update -qq || die "apt-get update"
		APT_UPDATED=1
	fi
}

install_host_tools() {
	local missing=0 c
	for c in "${HOST_COMMANDS[@]}"; do
		command -v "$c" >/dev/null || missing=1
	done
	[[ -r /usr/share/seabios/bios-256k.bin ]] || missing=1
	[[ $missing -eq 0 ]] && return
	apt_update_once
	log "installing ${HOST_PACKAGES[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${HOST_PACKAGES[@]}" >/dev/null || die "apt-get install ${HOST_PACKAGES[*]}"
	for c in "${HOST_COMMANDS[@]}"; do
		command -v "$c" >/dev/null || die "command $c still missing after install"
	done
}

# download_debs DIR: fetches the kernel and guest packages into DIR; prints the kernel package.
download_debs() {
	local dir=$1 kpkg
	apt_update_once
	kpkg="$(apt-cache depends "$KERNEL_META" | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)"
	[[ -n $kpkg ]] || die "cannot resolve $KERNEL_META to a linux-image package"
	log "downloading $kpkg and ${#GUEST_PACKAGES[@]} guest packages"
	(cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg" "${GUEST_PACKAGES[@]}") >&2 ||
		die "apt-get download"
	echo "$kpkg"
}

# extract_debs DEBDIR SYSROOT OUTDIR: unpacks every .deb and records "name version".
extract_debs() {
	local debs=$1 sys=$2 out=$3 deb
	mkdir -p "$sys"
	for deb in "$debs"/*.deb; do
		dpkg-deb -x "$deb" "$sys" || die "dpkg-deb -x $deb"
		# shellcheck disable=SC2016 # ${...} is dpkg-deb's format, not the shell's
		dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >>"$out/packages.txt"
	done
}

# install_modules SYSROOT ROOTFS KVER: copies MODULES and their dependencies, runs depmod.
install_modules() {
	local sys=$1 root=$2 kver=$3 m deps ko rel
	depmod -b "$sys" "$kver" || die "depmod on the full module tree"
	mkdir -p "$root/lib/modules/$kver" "$root/etc/kipvs"
	: >"$root/etc/kipvs/modules"
	for m in "${MODULES[@]}" "${OPTIONAL_MODULES[@]}" "${ON_DEMAND_MODULES[@]}"; do
		if ! deps="$(modprobe -d "$sys" -S "$kver" --show-depends "$m" 2>&1)"; then
			if [[ " ${OPTIONAL_MODULES[*]} " == *" $m "* ]]; then
				log "optional module $m not in $kver, skipped"
				continue
			fi
			die "module $m: $deps"
		fi
		[[ " ${ON_DEMAND_MODULES[*]} " == *" $m "* ]] || echo "$m" >>"$root/etc/kipvs/modules"
		# shellcheck disable=SC2013 # module paths hold no spaces
		for ko in $(awk '$1 == "insmod" {print $2}' <<<"$deps"); do
			rel="${ko#"$sys"/}"
			mkdir -p "$root/$(dirname "$rel")"
			cp "$ko" "$root/$rel"
		done
	done
	cp "$sys/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
	depmod -b "$root" "$kver" || die "depmod on the guest module tree"
	[[ -s $root/lib/modules/$kver/modules.dep ]] || die "empty modules.dep"
}

# install_userland SYSROOT ROOTFS: busybox applets, the programs, iptables names, /etc.
install_userland() {
	local sys=$1 root=$2 p n
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,run,tmp,root,var}
	cp "$sys/bin/busybox" "$root/bin/busybox"
	for p in $("$root/bin/busybox" --list-full); do
		[[ -e $root/$p || -L $root/$p ]] || ln -s /bin/busybox "$root/$p"
	done
	for p in "${GUEST_PROGRAMS[@]}"; do
		[[ -f $sys/$p ]] || die "program $p not in the downloaded packages"
		rm -f "$root/$p"
		cp "$sys/$p" "$root/$p"
		# The real program wins over a busybox applet of that name anywhere in PATH.
		for n in {bin,sbin,usr/bin,usr/sbin}/"$(basename "$p")"; do
			[[ $n != "$p" && $(readlink "$root/$n" || true) == /bin/busybox ]] && ln -sfn "/$p" "$root/$n"
		done
	done
	for n in "${XTABLES_NAMES[@]}"; do
		ln -sfn xtables-nft-multi "$root/usr/sbin/$n"
	done
	for n in "${LEGACY_NAMES[@]}"; do
		ln -sfn xtables-legacy-multi "$root/usr/sbin/$n"
	done
	mkdir -p "$root/usr/lib/x86_64-linux-gnu"
	cp -a "$sys/usr/lib/x86_64-linux-gnu/xtables" "$root/usr/lib/x86_64-linux-gnu/"
	cp -a "$sys/etc/iproute2" "$sys/etc/protocols" "$sys/etc/services" "$root/etc/"
	ln -sfn /run "$root/var/run"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files\nprotocols: files\nservices: files\n' \
		>"$root/etc/nsswitch.conf"
}

# install_libs SYSROOT ROOTFS: copies the shared-library closure of every ELF file
# in ROOTFS from SYSROOT, then checks each file resolves inside ROOTFS alone.
install_libs() {
	local sys=$1 root=$2 ld="lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" f lib libpath elfs out
	libpath="$sys/lib/x86_64-linux-gnu:$sys/usr/lib/x86_64-linux-gnu"
	mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu"
	cp "$sys/$ld" "$root/$ld"
	ln -sfn "/$ld" "$root/lib64/ld-linux-x86-64.so.2"
	elfs="$(find "$root" -path "$root/lib/modules" -prune -o -type f -print |
		while read -r f; do [[ $(head -c4 "$f" | tr -d '\0') == $'\x7fELF' ]] && echo "$f"; done)"
	elfs="$(grep -v -e "^$root/$ld\$" <<<"$elfs")"
	for f in $elfs; do
		out="$("$sys/$ld" --library-path "$libpath" --list "$f" 2>&1)" || die "ld.so --list $f: $out"
		if grep -q 'not found' <<<"$out"; then
			die "missing library for ${f#"$root"}: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
		fi
		# shellcheck disable=SC2013 # library paths hold no spaces
		for lib in $(awk '$2 == "=>" && $3 ~ /^\// && $1 !~ /ld-linux/ {print $3}' <<<"$out"); do
			[[ $lib == "$sys"/* ]] || die "${f#"$root"} resolved $lib outside the packages"
			mkdir -p "$root/$(dirname "${lib#"$sys"/}")"
			cp -L "$lib" "$root/${lib#"$sys"/}"
		done
	done
	for f in $elfs; do
		out="$(chroot "$root" "/$ld" --list "${f#"$root"}" 2>&1)" || die "in the guest tree, ${f#"$root"}: $out"
		if grep -q 'not found' <<<"$out"; then die "in the guest tree, ${f#"$root"}: $out"; fi
	done
	chroot "$root" /bin/busybox true || die "busybox does not run"
	out="$(chroot "$root" /bin/sh -c 'PATH=/usr/sbin:/usr/bin:/sbin:/bin; ip -V; iptables -V; iptables-legacy -V' 2>&1)" ||
		die "ip/iptables do not run in the guest tree: $out"
	[[ $out == *iproute2* && $out == *nf_tables* && $out == *legacy* ]] || die "ip or iptables is not the expected one: $out"
}

build_tree() {
	local tmp=$1 kpkg kver
	mkdir -p "$tmp/debs" "$tmp/out/rootfs"
	kpkg="$(download_debs "$tmp/debs")"
	kver="${kpkg#linux-image-}"
	extract_debs "$tmp/debs" "$tmp/sys" "$tmp/out"
	[[ -f $tmp/sys/boot/vmlinuz-$kver ]] || die "no vmlinuz-$kver in $kpkg"
	cp "$tmp/sys/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
	echo "$kver" >"$tmp/out/kernel-version"
	install_userland "$tmp/sys" "$tmp/out/rootfs"
	install_modules "$tmp/sys" "$tmp/out/rootfs" "$kver"
	install_libs "$tmp/sys" "$tmp/out/rootfs"
	date -u +%FT%TZ >"$tmp/out/READY"
}

main() {
	install_host_tools
	mkdir -p "$CACHE_ROOT"
	if [[ -f $OUT/READY && ${KIPVS_VM_REBUILD:-0} != 1 ]]; then
		ln -sfn "$KEY" "$CACHE_ROOT/current"
		log "cache hit: $OUT (kernel $(cat "$OUT/kernel-version"))"
		return
	fi
	local tmp
	tmp="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")"
	# shellcheck disable=SC2064 # expand now: tmp is local
	trap "rm -rf '$tmp'" EXIT
	build_tree "$tmp"
	rm -rf "$OUT"
	mv "$tmp/out" "$OUT"
	ln -sfn "$KEY" "$CACHE_ROOT/current"
	find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" ! -name '.build.*' -exec rm -rf {} +
	log "built $OUT: kernel $(cat "$OUT/kernel-version"), $(du -sh "$OUT/rootfs" | cut -f1) guest tree"
}

main "$@"
