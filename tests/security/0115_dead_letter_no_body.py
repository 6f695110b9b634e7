#!/usr/bin/python3
"""SPEC section 5: what an endpoint answers is never echoed back to the
user or onto a topic beyond its status code. Two webhook receivers answer
with text an internal host might send (400 and 500 with a marker in the
body); after the last try each delivery goes to notifications.DLT whose
reason names the status (http_400, http_500) and nothing of the body: no
header of the dead letter, no line of the service's log, no API answer
and no metric carries the marker."""
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import (account, http, expect, log, finish, login, wait_inbox,  # noqa: E402
                     wait_dead_letters, Receiver, metrics)
from tdharness import System  # noqa: E402

MARKER = "INTERNAL-" + secrets.token_hex(8)


def answer(path):
    status = 400 if path.startswith("/bad") else 500
    return status, ("<html>db01.internal %s password=hunter2</html>" % MARKER).encode()


def main():
    rcv = Receiver(answer)
    sysm = System("sec-0115", ["users", "notifications"], {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_DELIVERY_MAX_ATTEMPTS": "2",
        "TIDINGS_DELIVERY_BACKOFF_MS": "100",
        "TIDINGS_LOG_LEVEL": "debug",
    }, admin=False)
    ok = False
    try:
        sysm.start_all(("users", "notifications"))
        _, email, password, token = account(sysm, "Nia")
        wait_inbox(sysm, token, 2)
        hooks = {}
        for path, status in (("/bad", "http_400"), ("/err", "http_500")):
            st, hook = http("POST", sysm.url("notifications", "/webhooks"), token, {
                "url": rcv.base + path, "secret": "whsec-" + secrets.token_hex(8),
                "events": ["UserLoggedInEvent"]})
            expect(st, 201, "webhook " + path, hook)
            hooks[hook["webhookId"]] = status
        login(sysm, email, password)

        for hook_id, status in hooks.items():
            dead = wait_dead_letters(sysm.brokers, hook_id)
            h = dead[0]["headers"]
            reason = h.get("tidings_dlt_reason", "")
            assert reason.endswith(": " + status), reason
            for k, v in h.items():
                assert MARKER not in (v or "") and "hunter2" not in (v or ""), (k, v)
            log("ok   dead letter of %s: %r" % (hook_id, reason))

        for path in ("/webhooks", "/notifications"):
            st, body = http("GET", sysm.url("notifications", path), token)
            expect(st, 200, path, body)
            assert MARKER not in repr(body), body
        assert MARKER not in metrics(sysm, "notifications")
        with open(os.path.join(sysm.dir, "notifications.log"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        assert MARKER not in text and "hunter2" not in text, "the log carries the answer"
        assert "http_400" in text and "http_500" in text, "the log names no status"
        log("ok   the endpoints' answers appear nowhere, their status codes do")
        ok = True
    finally:
        finish(sysm, ok, [rcv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
