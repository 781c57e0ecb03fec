#!/usr/bin/env bash
# tests/build/test_leaks_counted.sh LEAK_PROBE LSAN_SUPP — make check counts
# leaks (scripts/check): a leak in a passing criterion test body, under the
# project's LeakSanitizer suppressions and log_path, leaves exactly one
# report naming the test body, while the test itself still "passes". If a
# suppression ever matches criterion's frames again, or reports stop going
# to files, this fails.
set -euo pipefail
PROBE=${1:?usage: test_leaks_counted.sh LEAK_PROBE LSAN_SUPP}
SUPP=${2:?usage: test_leaks_counted.sh LEAK_PROBE LSAN_SUPP}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Its own log_path, so the deliberate report never reaches make check's.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$dir/san"
export LSAN_OPTIONS="suppressions=$SUPP:print_suppressions=0:log_path=$dir/san"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$dir/san"
rc=0
out=$("$PROBE" --jobs 1 2>&1) || rc=$?
fail=0
if ! grep -q "Passing: 1 | Failing: 0" <<<"$out"; then
  echo "FAIL: the probe test did not pass as criterion counts it:"; echo "$out"; fail=1
fi
reports=$(grep -l "ERROR: LeakSanitizer" "$dir"/san.* 2>/dev/null || true)
n=$(grep -c . <<<"$reports" || true)
if [ "$n" -ne 1 ]; then
  echo "FAIL: $n LeakSanitizer report files, expected 1 (criterion rc=$rc)"; fail=1
elif ! grep -q "77 byte(s) leaked" $reports || ! grep -q "leaks_77_bytes_and_passes" $reports; then
  echo "FAIL: the report does not show the probe's 77-byte leak:"; cat $reports; fail=1
fi
[ $fail -eq 0 ] && echo "leak in a passing criterion test: 1 report, 77 bytes, criterion rc=$rc"
exit $fail
