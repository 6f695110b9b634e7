#!/usr/bin/env bash
# The e2e saga, notifications and push/webhook tests on the real cluster over
# SASL_SSL (TLS with the script's CA, SASL PLAIN or SCRAM-SHA-512), configured
# with TIDINGS_KAFKA_* variables only.
exec bash "$(dirname "$0")/e2e_on.sh" sasl_ssl
