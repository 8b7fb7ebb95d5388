# shellcheck shell=bash
# What scripts/demo.sh and scripts/demo-cluster.sh share, sourced first: the repository root as the working
# directory, the checks for root and the project's Node 24, and `fail`, `step` and `say` for their output.
# DEMO (the make target the messages name) is set before sourcing.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)

fail() { echo "make $DEMO: $*" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

[ "$(id -u)" = 0 ] || fail "run as root: the demo creates network namespaces and links (sudo make $DEMO)"
export PATH="$root/node_modules/.bin:$PATH" # ipamd runs on the project's Node 24
[ -x node_modules/.bin/node ] || fail "node_modules/.bin/node (Node.js 24) is missing: run npm ci"
