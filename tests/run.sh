#!/usr/bin/env bash
# run.sh - run every unit test binary and every bats file, then print the
# closing "N passed, N failed, N skipped" line; exit non-zero on any failure.
#   tests/run.sh BUILD_TESTS_DIR [BATS_FILE...]
set -u
bindir=$1; shift
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
for t in "$bindir"/test_*; do
	[ -x "$t" ] || continue
	echo "# unit: $(basename "$t")"
	"$t" >"$log" 2>&1; rc=$?
	cat "$log" >>"$log.all"; cat "$log"
	if [ $rc -ne 0 ] && ! grep -q '^not ok' "$log"; then
		echo "not ok - $(basename "$t") exited $rc"; echo "not ok - $(basename "$t") exited $rc" >>"$log.all"
	fi
done
if [ $# -gt 0 ]; then
	if command -v bats >/dev/null; then
		echo "# bats: $*"
		bats --tap "$@" 2>&1 | tee -a "$log.all"
	else
		echo "not ok - bats is not installed" | tee -a "$log.all"
	fi
fi
touch "$log.all"
skipped=$(grep -c '^ok .*# skip' "$log.all")
passed=$(( $(grep -c '^ok ' "$log.all") - skipped ))
failed=$(grep -c '^not ok' "$log.all")
rm -f "$log.all"
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
