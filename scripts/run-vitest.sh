#!/usr/bin/env bash
# Runs one vitest suite (host or lab) and keeps its JSON report for the summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:?usage: run-vitest.sh host|lab}
mkdir -p test-results
config=vitest.config.ts
[ "$suite" = lab ] && config=test/lab/vitest.config.ts
exec node_modules/.bin/vitest run --config "$config" --reporter=default \
  --reporter=json --outputFile.json="test-results/$suite.json"
