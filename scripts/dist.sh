#!/usr/bin/env bash
# `make dist`: the release tarball of what `make build` made, for one architecture:
#   release/berth-<version>-linux-<arch>.tar.gz (+ .sha256 beside it), holding berth-<version>/ with
#   bin/ (berth and its plugin links), ipamd/ (the daemon bundle), conf/ (CNI examples, ipamd and
#   systemd configs, Kubernetes manifests), scripts/ (install-cni.sh, uninstall-cni.sh), docs/,
#   LICENSE, README.md and SHA256SUMS (every file in the tree). Files are owned by root and dated
#   by the commit, so one commit gives the same tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x dist/bin/berth ] && [ -f dist/ipamd/ipamd.mjs ] || { echo "dist.sh: dist/ is not built: run make build" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
name=berth-$version
out=${BERTH_RELEASE_DIR:-release}
stamp=$(git log -1 --format=%ct 2>/dev/null || date +%s)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/scripts"
cp -a dist/bin dist/ipamd "$root/"
cp -a conf docs LICENSE README.md "$root/"
cp -a api/API.md "$root/docs/API.md"
cp -a scripts/install-cni.sh scripts/uninstall-cni.sh "$root/scripts/"
(cd "$root" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum > SHA256SUMS)

mkdir -p "$out"
tarball=$out/$name-linux-$arch.tar.gz
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$stamp" -cf - "$name" | gzip -n > "$tarball.tmp"
mv -f "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$(basename "$tarball")" > "$(basename "$tarball").sha256")
echo "$tarball"
