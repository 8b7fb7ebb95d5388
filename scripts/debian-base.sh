#!/usr/bin/env bash
# A Debian root file system made locally with debootstrap (no registry), as a tarball `podman import`
# takes; the image test builds the Containerfile FROM it, and the demo set-up test runs `make demo`
# in it as on a fresh machine. Cached: the first run takes minutes, the next print the path at once.
#   scripts/debian-base.sh [SUITE]      prints the tarball's path
# The mirror is the first Debian one in this machine's apt sources (BERTH_DEBIAN_MIRROR overrides);
# the cache dir is BERTH_CACHE_DIR (default /var/cache/berth).
set -euo pipefail
suite=${1:-bookworm}
arch=$(dpkg --print-architecture)
cache=${BERTH_CACHE_DIR:-/var/cache/berth}
tarball=$cache/debian-$suite-minbase-$arch.tar
[ -s "$tarball" ] && { echo "$tarball"; exit 0; }

mirror=${BERTH_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *\(\S*debian\)\/*$/\1/p' | head -n1)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\?\(\S*debian\)\/* .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)
fi
[ -n "$mirror" ] || { echo "debian-base.sh: no Debian mirror in /etc/apt/sources*; set BERTH_DEBIAN_MIRROR" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-base.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

mkdir -p "$cache"
work=$(mktemp -d "$cache/.debootstrap.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "debian-base.sh: debootstrap --variant=minbase $suite from $mirror (once; cached in $tarball)" >&2
debootstrap --variant=minbase "$suite" "$work/root" "$mirror" > "$work/log" 2>&1 || {
  tail -n 20 "$work/log" >&2; echo "debian-base.sh: debootstrap failed (log above)" >&2; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" --numeric-owner -cf "$tarball.tmp" .
mv -f "$tarball.tmp" "$tarball"
echo "$tarball"
