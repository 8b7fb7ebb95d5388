#!/usr/bin/env bash
# What `make test` and `make demo` need from the machine, with the command that installs it.
# .ci/run installs all of it on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ "$(id -u)" = 0 ] || { echo "run as root: the tests and the demo create network namespaces and links" >&2; exit 1; }
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v pgrep >/dev/null || missing+=(procps)
command -v modprobe >/dev/null || missing+=(kmod)
if [ "${1:-}" = test ]; then
  command -v podman >/dev/null || missing+=(podman)
  for plugin in macvlan host-local static; do
    [ -x "/usr/lib/cni/$plugin" ] || { missing+=(containernetworking-plugins); break; }
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install with: apt-get install -y --no-install-recommends ${missing[*]}" >&2
  echo "(or run bash .ci/run once: it installs everything, including qemu and the kernel for the 802.1Q lab)" >&2
  exit 1
fi
