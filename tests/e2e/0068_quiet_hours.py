#!/usr/bin/python3
"""Quiet hours end to end with real processes (`tidings broker`, users,
notifications), talked to only over HTTP.

A user with a push subscription and a webhook (receivers on loopback) sets
quiet hours that started a second ago and end a few seconds from now, in
UTC (times may carry seconds). A sign-in during the window reaches the
inbox at once and the webhook is not held, while its push is `held` in
GET /notifications/{id}. The notifications service is killed (SIGKILL)
and started again during the hold: the hold is in the persisted delivery
queue, so the push still goes out, not before the window ends, and its
status turns `sent`. A bad zone or time gets 400, and null clears the
window.
"""
import base64
import importlib.util
import json
import os
import secrets
import sys
import time
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tdharness import log, http, expect, System  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import ece_decrypt  # noqa: E402

_spec = importlib.util.spec_from_file_location("e2e_0066", os.path.join(HERE, "0066_push_webhooks.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
Receiver = _mod.Receiver  # the push service stand-in of the push test

SERVICES = ["users", "notifications"]
WAIT_S = 30
HOLD_S = 6


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hms(t):
    return time.strftime("%H:%M:%S", time.gmtime(t))


def main():
    sysm = System("e2e-0068", SERVICES, {"TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
                                         "TIDINGS_DELIVERY_BACKOFF_MS": "100"}, admin=False)
    rcv = Receiver()
    ok = False
    try:
        sysm.start_all(SERVICES)
        nurl = lambda path: sysm.url("notifications", path)  # noqa: E731

        email = "quinn-%s@example.com" % uuid.uuid4().hex[:8]
        st, body = http("POST", sysm.url("users", "/users"),
                        body={"email": email, "password": "correct horse", "name": "Quinn"})
        expect(st, 201, "POST /users", body)
        st, body = http("POST", sysm.url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login", body)
        token = body["token"]

        for bad in ({"start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus_Mons"},
                    {"start": "22:00", "end": "07:00", "timeZone": "../../etc/passwd"},
                    {"start": "24:00", "end": "07:00", "timeZone": "UTC"},
                    {"start": "07:00", "end": "07:00", "timeZone": "UTC"},
                    {"start": "22:00", "end": "07:00"}):
            st, body = http("PUT", nurl("/preferences"), token=token, body={"quietHours": bad})
            expect(st, 400, "PUT /preferences quietHours %r" % bad, body)
        st, body = http("PUT", nurl("/preferences"), token=token, body={"quietHours": {
            "start": "22:00", "end": "07:00", "timeZone": "Asia/Kathmandu"}})
        expect(st, 200, "PUT /preferences quietHours Kathmandu", body)
        assert body["quietHours"] == {"start": "22:00", "end": "07:00",
                                      "timeZone": "Asia/Kathmandu"}, body
        log("ok   bad zones and times get 400; a good window is kept")

        ua_key = ec.generate_private_key(ec.SECP256R1())
        ua_private = ua_key.private_numbers().private_value.to_bytes(32, "big")
        ua_public = ua_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        auth = secrets.token_bytes(16)
        st, body = http("POST", nurl("/webpush/subscriptions"), token=token, body={
            "endpoint": rcv.base + "/push", "keys": {"p256dh": b64e(ua_public), "auth": b64e(auth)}})
        expect(st, 201, "POST /webpush/subscriptions", body)
        st, body = http("POST", nurl("/webhooks"), token=token, body={
            "url": rcv.base + "/hook", "secret": "s" * 20, "events": ["UserLoggedInEvent"]})
        expect(st, 201, "POST /webhooks", body)

        # The window: from a second ago to HOLD_S from now.
        t0 = int(time.time())
        end = t0 + HOLD_S
        st, body = http("PUT", nurl("/preferences"), token=token, body={"quietHours": {
            "start": hms(t0 - 1), "end": hms(end), "timeZone": "UTC"}})
        expect(st, 200, "PUT /preferences quietHours now", body)
        st, body = http("POST", sysm.url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login in the window", body)
        deadline = time.time() + WAIT_S
        while True:
            st, body = http("GET", nurl("/notifications"), token=token)
            if len(body["notifications"]) >= 3:
                break
            assert time.time() < deadline, body
            time.sleep(0.05)
        n = body["notifications"][0]
        assert n["title"] == "New sign-in to your account" and n["seq"] == 3, n
        st, body = http("GET", nurl("/notifications/" + n["id"]), token=token)
        expect(st, 200, "GET /notifications/{id}", body)
        status = {d["channel"]: d["status"] for d in body["deliveries"]}
        assert time.time() < end, "the test itself was too slow for its window"
        assert status["push"] == "held", body
        assert status["webhook"] in ("pending", "sent"), body
        log("ok   in the window: the push is held, the webhook is not")

        # A crash during the hold loses nothing.
        sysm.kill9("notifications")
        sysm.start("notifications")
        sysm.wait_ready("notifications")
        log("     notifications killed and restarted during the hold")

        while True:
            _, headers, raw = rcv.next("/push", timeout=WAIT_S + HOLD_S)
            got = time.time()
            pushed = json.loads(ece_decrypt.decrypt(raw, ua_private, ua_public, auth))
            if pushed["id"] == n["id"]:
                break
        assert got >= end, "push at %.3f, before the window's end %d" % (got, end)
        deadline = time.time() + WAIT_S
        while True:
            st, body = http("GET", nurl("/notifications/" + n["id"]), token=token)
            expect(st, 200, "GET /notifications/{id}", body)
            push = [d for d in body["deliveries"] if d["channel"] == "push"][0]
            if push["status"] == "sent":
                break
            assert time.time() < deadline, body
            time.sleep(0.05)
        log("ok   the held push went out after the window (%.1f s after its end), status sent"
            % (got - end))

        st, body = http("PUT", nurl("/preferences"), token=token, body={"quietHours": None})
        expect(st, 200, "PUT /preferences quietHours null", body)
        assert body["quietHours"] is None, body
        ok = True
    finally:
        rcv.close()
        sysm.finish(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
