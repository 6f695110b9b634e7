#!/usr/bin/env bash
# The ctest fixture that brings up the kafka tier's cluster (FIXTURES_SETUP
# kafka_cluster, see tests/CMakeLists.txt): scripts/kafka.sh start, once per
# ctest run, before any kafka/ test. A cluster that already runs (`make
# kafka`) is used as it is and left running by 9999_cluster_stop; one
# started here is stopped there. Prints how long fetching and starting took.
set -euo pipefail
: "${KAFKA_DIR:?KAFKA_DIR names the cluster folder (tests/CMakeLists.txt sets it)}"
mkdir -p "$KAFKA_DIR"
marker=$KAFKA_DIR/.started-by-ctest
kafka=$TIDINGS_SRC/scripts/kafka.sh
if "$kafka" status >/dev/null 2>&1; then
    echo "the cluster of $KAFKA_DIR already runs: using it, and leaving it running"
    rm -f "$marker"
    exit 0
fi
t0=$(date +%s%3N)
"$kafka" fetch
t1=$(date +%s%3N)
touch "$marker"
# On a busy 2-core machine three JVMs can take minutes to form the
# quorum (seen: 139 s at load 24); the test's own ctest timeout is 600 s.
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-400} "$kafka" start
t2=$(date +%s%3N)
awk -v a="$t0" -v b="$t1" -v c="$t2" \
    'BEGIN { printf "kafka tier cluster: fetch %.1f s, start %.1f s\n", (b - a) / 1000, (c - b) / 1000 }'
