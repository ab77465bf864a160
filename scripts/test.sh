#!/bin/bash
# make test: every suite under runc, then the suites that run containers again under
# each runtime of OTHER_RUNTIMES; at the end (pass or fail), the tests that did not
# run because a tool was missing, as the harness logged them (CRIKIT_SKIPPED_LOG;
# see tests/src/skip.rs). CRIKIT_REQUIRE=crictl,criu,... makes those tests fail
# instead.
#
# env: CARGO, OTHER_RUNTIMES (default crun), RUNTIME_SUITES (cargo test's --test flags)
set -uo pipefail
CARGO=${CARGO:-cargo}
OTHER_RUNTIMES=${OTHER_RUNTIMES-crun}
: "${RUNTIME_SUITES:?names the suites to run again under OTHER_RUNTIMES (--test flags); make test sets it}"
LOG=$(mktemp /tmp/crikit-skipped.XXXXXX)
export CRIKIT_SKIPPED_LOG=$LOG
report() {
  local n
  n=$(grep -c '^SKIPPED' "$LOG" 2>/dev/null || true)
  if [ "${n:-0}" -gt 0 ]; then
    echo "== $n tests did not run (CRIKIT_REQUIRE=TOOL,... makes them fail instead):"
    sort "$LOG"
  else
    echo "== every test ran${CRIKIT_REQUIRE:+ (required: $CRIKIT_REQUIRE)}"
  fi
  rm -f "$LOG"
}
trap report EXIT

"$CARGO" test --workspace --locked || exit 1
for r in $OTHER_RUNTIMES; do
  echo "== the runtime suites under $r"
  # shellcheck disable=SC2086
  CRIKIT_TEST_RUNTIME=$r "$CARGO" test --workspace --locked $RUNTIME_SUITES || exit 1
done
