#!/usr/bin/env bash
# Installs the Debian packages that `make demo`, `make test` or everything (.ci/run) need and
# that are missing, from the one list in scripts/packages.txt.
#   scripts/install-deps.sh demo|test|all
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: install-deps.sh demo|test|all}
[ "$(id -u)" = 0 ] || { echo "run as root: the tests and the demo create network namespaces and links" >&2; exit 1; }

missing=()
while read -r package needed_by _; do
  [ -n "$package" ] || continue
  [ "$target" = all ] || [[ ",$needed_by," == *",$target,"* ]] || continue
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' && continue
  command -v "$package" >/dev/null 2>&1 && continue
  missing+=("$package")
done < <(sed 's/#.*//' scripts/packages.txt)

[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} (scripts/packages.txt says what needs each)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
