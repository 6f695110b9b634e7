#!/usr/bin/env bash
# The ctest fixture that stops the kafka tier's cluster (FIXTURES_CLEANUP
# kafka_cluster) after the last kafka/ test, if 0000_cluster_start started it.
set -euo pipefail
: "${KAFKA_DIR:?KAFKA_DIR names the cluster folder (tests/CMakeLists.txt sets it)}"
marker=$KAFKA_DIR/.started-by-ctest
if [ -f "$marker" ]; then
    "$TIDINGS_SRC/scripts/kafka.sh" stop
    rm -f "$marker"
else
    echo "the cluster was running before this ctest run: left running"
fi
