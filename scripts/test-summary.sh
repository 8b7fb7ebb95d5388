#!/usr/bin/env bash
# One closing line over every suite that ran: "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
node -e '
const fs = require("fs");
let passed = 0, failed = 0, skipped = 0;
for (const suite of ["host", "lab"]) {
  const file = `test-results/${suite}.json`;
  if (!fs.existsSync(file)) continue;
  const r = JSON.parse(fs.readFileSync(file, "utf8"));
  passed += r.numPassedTests; failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
  console.log(`${suite}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
'
