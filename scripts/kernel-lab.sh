#!/bin/bash
# Kernel lab: run a command inside a qemu (TCG) guest booted from Debian's
# kernel, which has the 802.1Q, dummy, macvlan and veth modules this host lacks.
# The guest also has three virtio-net PCI NICs (eth0..eth2, MACs
# 52:54:00:be:00:01..03), each on its own empty qemu hub: no backend, so no
# frame ever leaves the guest. They stand in for physical NICs / cloud ENIs,
# which, unlike virtual links, the kernel returns to the host namespace when a
# pod's namespace dies.
#
#   scripts/kernel-lab.sh [--] CMD [ARG...]
#   scripts/kernel-lab.sh --check     exit 0 if the lab can run here, else say what is missing and exit 2
#
# The guest's root is the host's root over 9p (read-only) under a tmpfs
# overlay, so the guest sees the same files at the same paths and may write
# anywhere, but nothing it writes reaches the host, except in the repository's
# test-results/ and the directories in BERTH_LAB_RW, which are shared read-write
# at the same paths (for reports). /tmp, /run, /run/netns and /dev/shm are
# fresh tmpfs mounts. CMD runs as root in the repository root with
# HOME=/tmp; its stdout and stderr come out on this script's stdout, and this
# script exits with CMD's exit status.
#
# Environment:
#   BERTH_LAB_TIMEOUT  seconds before the guest is killed (default 600); exit 124
#   BERTH_LAB_MEM      guest memory (default 2G)
#   BERTH_LAB_KERNEL   kernel version to boot (default: newest /boot/vmlinuz-* with /lib/modules)
#   BERTH_LAB_RW       space-separated host directories to share read-write (created if missing)
#   BERTH_LAB_ENV      space-separated names of extra variables to pass into the guest
#                      (CI, FORCE_COLOR, NO_COLOR and every BERTH_* variable are passed anyway)
#   BERTH_LAB_VERBOSE  1 = print the guest's console (kernel and init messages) to stderr afterwards
#   BERTH_LAB_KEEP     1 = keep the run directory (console log, status) for inspection
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

die() {
	echo "kernel-lab: $*" >&2
	exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lab="$repo/scripts/lab"
timeout_s=${BERTH_LAB_TIMEOUT:-600}
mem=${BERTH_LAB_MEM:-2G}

check_only=0
case ${1:-} in
--) shift ;;
--check) check_only=1 ;;
esac
[[ $# -gt 0 ]] || die "usage: scripts/kernel-lab.sh [--] CMD [ARG...] | --check"
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "BERTH_LAB_TIMEOUT must be a whole number of seconds, got '$timeout_s'"
[[ $(id -u) == 0 ]] || die "must run as root (the guest exports the host root over 9p with security_model=none)"

command -v qemu-system-x86_64 >/dev/null ||
	die "qemu-system-x86_64 not found; install it: apt-get install -y --no-install-recommends qemu-system-x86"
busybox=$(command -v busybox || true)
[[ -n $busybox && $(LC_ALL=C ldd "$busybox" 2>&1) == *"not a dynamic executable"* ]] ||
	die "no statically linked busybox found (the initramfs has no libc); install it: apt-get install -y --no-install-recommends busybox-static"
command -v modprobe >/dev/null || die "modprobe not found; install it: apt-get install -y kmod"

# The kernel: newest /boot/vmlinuz-K that has its modules in /lib/modules/K.
kver=${BERTH_LAB_KERNEL:-}
if [[ -z $kver ]]; then
	for image in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
		candidate=${image#/boot/vmlinuz-}
		if [[ -d /lib/modules/$candidate/kernel ]]; then
			kver=$candidate
			break
		fi
	done
fi
[[ -n $kver && -r /boot/vmlinuz-$kver && -d /lib/modules/$kver/kernel ]] ||
	die "no kernel with modules found (/boot/vmlinuz-K and /lib/modules/K); install one: apt-get install -y --no-install-recommends linux-image-amd64"
for module in 8021q macvlan dummy veth virtio_net; do
	modprobe -S "$kver" --show-depends "$module" >/dev/null 2>&1 ||
		die "kernel $kver has no $module module; the lab needs Debian's linux-image-amd64 (apt-get install -y --no-install-recommends linux-image-amd64)"
done

if [[ $check_only == 1 ]]; then
	echo "kernel-lab: ready (kernel $kver)"
	exit 0
fi

# The initramfs: busybox, the modules needed to mount 9p and overlay, and the
# stage-1 init. Cached per kernel and per content of the init script.
build_initramfs() {
	local out=$1 tmp line path params name
	tmp=$(mktemp -d "$(dirname "$out")/build.XXXXXX")
	mkdir -p "$tmp"/{bin,dev,proc,sys,modules}
	cp "$busybox" "$tmp/bin/busybox"
	ln -s busybox "$tmp/bin/sh"
	for name in mount insmod mkdir sleep switch_root; do ln -s busybox "$tmp/bin/$name"; done
	cp "$lab/init" "$tmp/init"
	chmod 755 "$tmp/init"
	: >"$tmp/modules/order"
	for module in virtio_pci virtio_rng 9pnet_virtio 9p overlay; do
		modprobe -S "$kver" --show-depends "$module" || return 1
	done | while read -r kind path params; do
		[[ $kind == insmod ]] || continue # builtin
		name=$(basename "$path")
		name=${name%.xz}
		name=${name%.zst}
		name=${name%.gz}
		grep -q "^$name\( \|$\)" "$tmp/modules/order" && continue
		case $path in
		*.xz) xz -dc "$path" >"$tmp/modules/$name" ;;
		*.zst) zstd -qdc "$path" >"$tmp/modules/$name" ;;
		*.gz) gzip -dc "$path" >"$tmp/modules/$name" ;;
		*) cp "$path" "$tmp/modules/$name" ;;
		esac
		echo "$name $params" >>"$tmp/modules/order"
	done
	(cd "$tmp" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) >"$tmp.cpio"
	rm -rf "$tmp"
	mv "$tmp.cpio" "$out"
}

init_hash=$(cat "$lab/init" "$busybox" | sha256sum | cut -c1-12)
cache="${XDG_CACHE_HOME:-/var/tmp}/berth-lab/$kver"
initramfs="$cache/initramfs-$init_hash.cpio"
if [[ ! -s $initramfs ]]; then
	mkdir -p "$cache"
	rm -f "$cache"/initramfs-*.cpio
	build_initramfs "$initramfs" || die "building the initramfs in $cache failed"
fi

# The run directory: io/ is exported to the guest read-write (stage-2 script,
# command, status); the console log stays on the host side only.
run=$(mktemp -d "${TMPDIR:-/tmp}/berth-lab.XXXXXX")
cleanup() { [[ ${BERTH_LAB_KEEP:-0} == 1 ]] && echo "kernel-lab: run directory kept: $run" >&2 || rm -rf "$run"; }
trap cleanup EXIT
mkdir "$run/io"
cp "$lab/stage2.sh" "$run/io/stage2.sh"

rw_args=()
: >"$run/io/rw-mounts"
for dir in "$repo/test-results" ${BERTH_LAB_RW:-}; do
	[[ $dir == /* ]] || die "BERTH_LAB_RW entries must be absolute paths, got '$dir'"
	mkdir -p "$dir" || die "cannot create $dir (BERTH_LAB_RW)"
	dir=$(cd "$dir" && pwd -P)
	tag="rw$((${#rw_args[@]} / 2))"
	rw_args+=(-virtfs "local,path=$dir,mount_tag=$tag,security_model=none,multidevs=remap")
	printf '%s %s\n' "$tag" "$dir" >>"$run/io/rw-mounts"
done

# The guest mounts fresh tmpfs on /tmp, /run and /dev/shm, hiding a repository that lives
# there (CI clones may): share it on its own, overlaid like the root, at the same path.
repo_args=()
: >"$run/io/repo-mount"
case "$(cd "$repo" && pwd -P)/" in
/tmp/* | /run/* | /var/run/* | /dev/shm/*)
	repo_args=(-virtfs "local,path=$(cd "$repo" && pwd -P),mount_tag=repo,security_model=none,readonly=on,multidevs=remap")
	printf '%s\n' "$repo" >"$run/io/repo-mount"
	;;
esac

# Isolated NICs: hub N has only the guest's NIC on it (no user/tap/socket backend);
# romfile= skips the PXE option ROM nobody boots from.
nic_args=()
for n in 1 2 3; do
	nic_args+=(-netdev "hubport,id=nic$n,hubid=$n" -device "virtio-net-pci,netdev=nic$n,mac=52:54:00:be:00:0$n,romfile=")
done

passed_env=(CI FORCE_COLOR NO_COLOR ${BERTH_LAB_ENV:-})
for name in $(compgen -v BERTH_); do
	[[ $name == BERTH_LAB_* ]] || passed_env+=("$name")
done
{
	echo "# generated by scripts/kernel-lab.sh"
	for name in "${passed_env[@]}"; do
		[[ -n ${!name+set} ]] && printf 'export %s=%q\n' "$name" "${!name}"
	done
	printf 'cd %q || exit 126\n' "$repo"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$run/io/cmd.sh"

start=$EPOCHREALTIME
set +e
# stdin is /dev/null so qemu leaves the terminal alone; serial 0 is the guest
# console (to a log), serial 1 carries the command's output to our stdout.
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg -cpu max -smp 2 -m "$mem" \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-kernel "/boot/vmlinuz-$kver" -initrd "$initramfs" \
	-append "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off random.trust_cpu=on" \
	-nic none \
	"${nic_args[@]}" \
	-device virtio-rng-pci \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$run/io,mount_tag=labio,security_model=none,multidevs=remap" \
	"${repo_args[@]}" \
	"${rw_args[@]}" \
	-serial "file:$run/console.log" \
	-chardev stdio,id=cmdout,signal=off -serial chardev:cmdout \
	</dev/null 2>"$run/qemu.err"
qemu_status=$?
# An empty hub is the point (see nic_args): drop qemu's warning about it.
grep -v '^qemu-system-x86_64: warning: hub [0-9]* is not connected to host network$' "$run/qemu.err" >&2 || true
set -e
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

if [[ ${BERTH_LAB_VERBOSE:-0} == 1 ]]; then
	echo "---- kernel-lab: guest console ----" >&2
	cat "$run/console.log" >&2
	[[ -f $run/io/timing ]] && cat "$run/io/timing" >&2
	echo "---- kernel-lab: guest ran ${elapsed}s in total (qemu exit $qemu_status) ----" >&2
fi

if [[ -s $run/io/status ]]; then
	exit "$(cat "$run/io/status")"
fi
if [[ $qemu_status == 124 || $qemu_status == 137 ]]; then
	echo "kernel-lab: guest did not finish within ${timeout_s}s (BERTH_LAB_TIMEOUT); last console lines:" >&2
	status=124
else
	echo "kernel-lab: guest stopped without reporting the command's status (qemu exit $qemu_status); last console lines:" >&2
	status=125
fi
if [[ -s $run/console.log ]]; then tail -n 40 "$run/console.log" >&2; else echo "(console empty)" >&2; fi
exit "$status"
