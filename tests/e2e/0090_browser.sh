#!/usr/bin/env bash
# The shop in a real browser: `tidings run` on a fresh data dir with free
# ports, then headless Chromium (Debian's chromium, driven by playwright-core)
# runs browser.test.mjs: register, order, see APPROVED and the notification
# without a reload, an order over the payment limit REJECTED, a watched
# product's price drop, the admin's catalogue editor, and the order's causal
# chain on the event-flow page. Screenshots go to $TIDINGS_TEST_TMP/artifacts.
# Exits 77 (skipped) when chromium or node is missing.
set -euo pipefail

: "${TIDINGS_BIN:?TIDINGS_BIN must name the tidings binary}"
SRC=${TIDINGS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
E2E="$SRC/tests/e2e"
BASE=${TIDINGS_TEST_TMP:-/tmp}
TMP="$BASE/0090_browser"
ARTIFACTS="$BASE/artifacts"
CHROMIUM=${TIDINGS_CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
  echo "SKIP: $CHROMIUM is missing (apt-get install chromium); the browser test needs it"
  exit 77
fi
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is missing (apt-get install nodejs npm); the browser test needs it"
  exit 77
fi
if [ ! -d "$E2E/node_modules/playwright-core" ]; then
  echo "installing playwright-core into $E2E/node_modules"
  (cd "$E2E" && npm install --no-audit --no-fund --loglevel=error) || {
    echo "FAIL: npm install of playwright-core failed"
    exit 1
  }
fi

rm -rf "$TMP"
mkdir -p "$TMP" "$ARTIFACTS"
rm -f "$ARTIFACTS"/0090-*.png

# Six free loopback ports, one per service.
read -r P_WEB P_USERS P_PRODUCTS P_ORDERS P_PAYMENTS P_NOTIF < <(/usr/bin/python3 - <<'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
export TIDINGS_WEB_PORT=$P_WEB TIDINGS_USERS_PORT=$P_USERS TIDINGS_PRODUCTS_PORT=$P_PRODUCTS \
       TIDINGS_ORDERS_PORT=$P_ORDERS TIDINGS_PAYMENTS_PORT=$P_PAYMENTS \
       TIDINGS_NOTIFICATIONS_PORT=$P_NOTIF
export TIDINGS_ADMIN_PASSWORD="browser-test-admin-$$"
export TIDINGS_WEB_DIR="$SRC/web"
unset TIDINGS_BROKERS TIDINGS_DATA_DIR TIDINGS_SECRET TIDINGS_PAYMENT_LIMIT

"$TIDINGS_BIN" run --data "$TMP/data" >"$TMP/run.out" 2>&1 &
RUN_PID=$!

stop_run() {
  if kill -0 "$RUN_PID" 2>/dev/null; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
  wait "$RUN_PID" 2>/dev/null || true
  cp "$TMP/run.out" "$ARTIFACTS/0090-run.out" 2>/dev/null || true
}
trap stop_run EXIT

for _ in $(seq 1 1200); do
  if grep -q "Ctrl-C to stop" "$TMP/run.out"; then break; fi
  if ! kill -0 "$RUN_PID" 2>/dev/null; then
    echo "FAIL: tidings run exited before it was ready:"
    cat "$TMP/run.out"
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "Ctrl-C to stop" "$TMP/run.out"; then
  echo "FAIL: tidings run printed no summary within 120 s:"
  cat "$TMP/run.out"
  exit 1
fi
SHOP=$(sed -n 's/.*shop: *\(http[^ ]*\).*/\1/p' "$TMP/run.out" | head -1 | sed 's/\x1b\[[0-9;]*m//g')
echo "shop at $SHOP"

# A record that is no CloudEvent on the orders topic: its consumers
# dead-letter it, and the event-flow page shows it with a Redrive button.
/usr/bin/python3 - "$(cat "$TMP/data/brokers")" <<'EOF'
import sys
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1].split(","), acks="all")
p.send("tidings.orders", key=b"browser-poison", value=b"not a cloudevent").get(timeout=30)
p.close()
EOF

rc=0
SHOP_URL="$SHOP" ARTIFACTS="$ARTIFACTS" CHROMIUM="$CHROMIUM" \
  ADMIN_PASSWORD="$TIDINGS_ADMIN_PASSWORD" PAYMENT_LIMIT=5000 \
  timeout 240 node "$E2E/browser.test.mjs" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "--- tidings run output (last 60 lines) ---"
  tail -60 "$TMP/run.out"
fi
exit "$rc"
