#!/usr/bin/env bash
# usage: e2e_on.sh plaintext|sasl_ssl
# The e2e saga, notifications and push/webhook tests (tests/e2e) on the
# kafka tier's real cluster, over one listener: tdharness reads
# TIDINGS_TEST_KAFKA and gives each run topics of its own. Over sasl_ssl
# the services get the security settings from TIDINGS_KAFKA_* variables
# only. Not a test itself (the kafka glob takes files starting with digits).
set -euo pipefail
listener=$1
export TIDINGS_TEST_KAFKA=$listener
for t in 0040_saga 0055_notifications 0066_push_webhooks; do
    echo "==== $t over $listener"
    /usr/bin/python3 "$TIDINGS_SRC/tests/e2e/$t.py"
done
