#!/usr/bin/env bash
# The e2e saga, notifications and push/webhook tests on the real cluster over PLAINTEXT.
exec bash "$(dirname "$0")/e2e_on.sh" plaintext
