#!/usr/bin/env bash
# Runs one vitest suite (host or lab) and keeps its JSON report for the summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's Node 24 (node_modules/.bin/node) runs vitest: node:sqlite and @kubernetes/client-node need it.
export PATH="$PWD/node_modules/.bin:$PATH"
suite=${1:?usage: run-vitest.sh host|lab}
mkdir -p test-results
config=vitest.config.ts
[ "$suite" = lab ] && config=test/lab/vitest.config.ts
exec node_modules/.bin/vitest run --config "$config" --reporter=default \
  --reporter=json --outputFile.json="test-results/$suite.json"
