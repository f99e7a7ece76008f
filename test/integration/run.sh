#!/bin/sh
# run.sh - run the pytest integration suite against a build tree.
#
# Environment: BW_SRC (source tree; default: the repository holding this
# script), BW_BUILD (build tree; default: $BW_SRC/build). Extra arguments go
# to pytest (e.g. -k relay, -x, -v). Exits with pytest's status, except that
# "no tests collected" (5) counts as a failure too.
set -u

here=$(cd "$(dirname "$0")" && pwd) || exit 1
: "${BW_SRC:=$(cd "$here/../.." && pwd)}"
: "${BW_BUILD:=$BW_SRC/build}"
: "${ASAN_OPTIONS:=detect_leaks=0:abort_on_error=1}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
# Keep the source tree clean (no __pycache__), e.g. for read-only distcheck trees.
PYTHONDONTWRITEBYTECODE=1
export BW_SRC BW_BUILD ASAN_OPTIONS UBSAN_OPTIONS PYTHONDONTWRITEBYTECODE

if [ ! -x "$BW_BUILD/mailctl/mailctl" ]; then
    echo "run.sh: $BW_BUILD/mailctl/mailctl not found: build first or set BW_BUILD" >&2
    exit 1
fi

/usr/bin/python3 -m pytest -q -p no:cacheprovider "$BW_SRC/test/integration" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run.sh: no tests were collected" >&2
    exit 1
fi
exit "$rc"
