#!/bin/sh
# Builds the benchmark programs optimized (RelWithDebInfo) and runs them one
# after the other, each printing its table and one JSON line; the JSON lines
# are also collected into $BUILD/bench-results.jsonl. Usage:
#   bench/run.sh [name...]        e.g. bench/run.sh hop_latency saga
# BUILD (default build-bench) is the build directory. Exits non-zero when a
# benchmark fails to run.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build-bench}
case $BUILD in /*) ;; *) BUILD=$SRC/$BUILD ;; esac

if [ $# -gt 0 ]; then
    NAMES="$*"
else
    NAMES=""
    for f in "$SRC"/bench/*.c; do
        n=${f##*/}
        NAMES="$NAMES ${n%.c}"
    done
fi

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
TARGETS=""
for n in $NAMES; do TARGETS="$TARGETS bench_$n"; done
# shellcheck disable=SC2086
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" --target $TARGETS >/dev/null

RESULTS=$BUILD/bench-results.jsonl
: >"$RESULTS"
for n in $NAMES; do
    echo "== bench_$n"
    OUT=$BUILD/bench-$n.out
    if ! "$BUILD/bench_$n" | tee "$OUT"; then
        echo "bench_$n failed" >&2
        exit 1
    fi
    tail -n 1 "$OUT" >>"$RESULTS"
    echo
done
echo "JSON lines: $RESULTS"
