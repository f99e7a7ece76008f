#!/bin/sh
# test.sh - the project's one test command (README, .ci/run): installs the
# dependencies, builds with -Werror and AddressSanitizer + UBSan in
# build-test/, runs the source checks, the libcheck units and the pytest
# integration suite once, and ends with the line "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
sh scripts/deps.sh || exit 1

passed=0
failed=0
if sh scripts/lint.sh; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    autoreconf -fi >/dev/null 2>&1 || { autoreconf -fi; echo "0 passed, 1 failed"; exit 1; }
fi
mkdir -p build-test
cd build-test || exit 1
if [ ! -f Makefile ] || [ ../configure -nt Makefile ]; then
    ../configure -q --enable-werror --enable-sanitizers || { echo "configure failed"; echo "$passed passed, $((failed + 1)) failed"; exit 1; }
fi
if ! make -j2 -s >make.out 2>&1; then
    cat make.out
    echo "build failed"
    echo "$passed passed, $((failed + 1)) failed"
    exit 1
fi
# Unit programs first (fast), then the integration suite; one at a time.
make -s check VERBOSE=1 >check.out 2>&1
status=$?
cat check.out

# Totals: every libcheck case and every pytest case counts once.
for log in test/unit/*.log; do
    [ -f "$log" ] || continue
    line=$(grep -Eo 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    if [ -z "$line" ]; then failed=$((failed + 1)); continue; fi
    n=$(echo "$line" | sed -E 's/Checks: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
    e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
    passed=$((passed + n - f - e))
    failed=$((failed + f + e))
done
ilog=test/integration/run.sh.log
if [ -f "$ilog" ]; then
    summary=$(grep -E '^=*.*[0-9]+ (passed|failed|error)' "$ilog" | tail -n 1)
    p=$(echo "$summary" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+'); p=${p:-0}
    f=$(echo "$summary" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+'); f=${f:-0}
    e=$(echo "$summary" | grep -Eo '[0-9]+ errors?' | grep -Eo '[0-9]+'); e=${e:-0}
    passed=$((passed + p))
    failed=$((failed + f + e))
    [ -z "$summary" ] && failed=$((failed + 1))
else
    failed=$((failed + 1))
fi
[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
