#!/usr/bin/env bash
# `make bench`: plugin start-up and ADD/DEL against the reference plugins, then ipamd load.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench: run as root (it creates links and network namespaces)" >&2; exit 1; }
node_modules/.bin/bun scripts/bench-plugins.ts
echo
node_modules/.bin/bun scripts/bench-ipamd.ts
echo
node_modules/.bin/bun scripts/bench-cluster-daemons.ts
