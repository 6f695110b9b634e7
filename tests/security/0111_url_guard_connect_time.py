#!/usr/bin/python3
"""SPEC section 5: a webhook URL is checked again when connecting, on the
address actually connected, so DNS rebinding gains nothing. The test
build's resolver (TIDINGS_TEST_RESOLVE) answers rebind.test with a public
address the first time (registration: 201) and with 127.0.0.1 after that
(delivery), as a rebinding DNS server would. A listener on that loopback
port must never see a connection; the delivery fails for good with the
error class blocked_address, and its dead letter says so (and nothing
else of what the endpoint might have answered)."""
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import (account, http, expect, log, finish, login, wait_dead_letters,  # noqa: E402
                     wait_inbox, Listener, metrics)
from tdharness import System  # noqa: E402


def main():
    lst = Listener()
    sysm = System("sec-0111", ["users", "notifications"], {
        "TIDINGS_TEST_RESOLVE": "rebind.test=8.8.8.8,127.0.0.1",
        "TIDINGS_DELIVERY_MAX_ATTEMPTS": "2",
        "TIDINGS_DELIVERY_BACKOFF_MS": "100",
    }, admin=False)
    ok = False
    try:
        sysm.start_all(("users", "notifications"))
        _, email, password, token = account(sysm, "Rita")
        wait_inbox(sysm, token, 2)  # welcome and the first sign-in: not for the webhook

        url = "https://rebind.test:%d/hook" % lst.port
        st, hook = http("POST", sysm.url("notifications", "/webhooks"), token, {
            "url": url, "secret": "whsec-" + secrets.token_hex(8),
            "events": ["UserLoggedInEvent"]})
        expect(st, 201, "webhook to a name that is public at registration", hook)
        log("ok   %s registered (it resolved to a public address)" % url)

        login(sysm, email, password)
        dead = wait_dead_letters(sysm.brokers, hook["webhookId"])
        reason = dead[0]["headers"].get("tidings_dlt_reason", "")
        assert "blocked_address" in reason, reason
        assert dead[0]["headers"].get("tidings_dlt_attempts") == "1", dead[0]["headers"]
        assert not lst.connected(), "something connected to the loopback listener"
        log("ok   delivery refused at connect time: %r, nothing reached 127.0.0.1:%d"
            % (reason, lst.port))
        m = metrics(sysm, "notifications")
        assert 'tidings_deliveries_total{channel="webhook",result="failed"} 1' in m, m
        assert 'result="success"' not in m, m
        ok = True
    finally:
        finish(sysm, ok, [lst])
    return 0


if __name__ == "__main__":
    sys.exit(main())
