# shellcheck shell=bash
# KTAP results of the host check scripts (series-check.sh, kernel-checks.sh),
# which scripts/test.sh counts by their last line. Source it after common.sh.
#   result 0|1 DESCRIPTION   "ok N - ..." or "not ok N - ...", counted
#   diag                     its input as KTAP diagnostics ("# " lines)
#   ktap_summary NAME        "NAME: N passed, N failed"; fails if one failed
passed=0 failed=0 n=0
result() {
    n=$((n + 1))
    if [ "$1" = 0 ]; then passed=$((passed + 1)); echo "ok $n - $2"
    else failed=$((failed + 1)); echo "not ok $n - $2"; fi
}
diag() { sed 's/^/# /'; }
ktap_summary() {
    echo "$1: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}
