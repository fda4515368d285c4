#!/usr/bin/env bash
# Runs the unit then the e2e project and prints one closing line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-results
rc=0
for project in unit e2e; do
  npx vitest run --project "$project" --reporter=default --reporter=json --outputFile=".test-results/$project.json" || rc=1
done
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, skipped = 0;
  for (const p of ["unit", "e2e"]) {
    const f = `.test-results/${p}.json`;
    if (!fs.existsSync(f)) { failed++; console.log(`${p}: no results (the runner crashed)`); continue; }
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + (r.numTodoTests || 0);
    if (r.numTotalTestSuites > 0 && r.numFailedTestSuites > 0 && r.numFailedTests === 0) failed++;
  }
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  if (passed === 0) process.exitCode = 1;
'
summary_rc=$?
[ "$rc" -eq 0 ] && [ "$summary_rc" -eq 0 ]
