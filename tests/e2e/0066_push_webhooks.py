#!/usr/bin/python3
"""Web Push and webhooks end to end with real processes: `tidings broker`,
`users` and `notifications` (with TIDINGS_ALLOW_HTTP_ENDPOINTS=1 so the
receivers may be plain http on loopback), talked to only over HTTP.

A python receiver on 127.0.0.1 plays both a webhook endpoint and a push
service. A user registers, signs in, registers a webhook for
UserLoggedInEvent and a push subscription (a P-256 key pair and auth
secret made here, as a browser makes them), and signs in again: the
webhook receives that sign-in's notification with a valid
X-Tidings-Signature (HMAC-SHA256 of timestamp "." body, checked here; the
same signature over a tampered body fails), X-Tidings-Event-Id = the
notification id, and the push service receives an aes128gcm message that
decrypts (RFC 8291, tests/integration/ece_decrypt.py) to the same
notification, with a VAPID token (RFC 8292, es256_verify.py) signed by the
key GET /webpush/vapid-public-key publishes. The webhook list never shows
the secret, and /metrics counts the successful deliveries.
"""
import base64
import hashlib
import hmac
import json
import os
import queue
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, expect, System  # noqa: E402

SRC = os.environ.get("TIDINGS_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICES = ["users", "notifications"]
WAIT_S = 30
SUBJECT = "mailto:e2e@tidings.local"

sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import ece_decrypt  # noqa: E402
import es256_verify  # noqa: E402


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def http(method, url, token=None, body=None):
    """(status, parsed JSON or None, raw text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    else:
        status = r.status
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(raw) if raw else None, text
    except ValueError:
        return status, None, text


class Receiver:
    """A webhook endpoint and a push service stand-in: every POST is
    answered 201 and queued as (path, headers, body)."""

    def __init__(self):
        got = self.got = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                got.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def next(self, path, timeout=WAIT_S):
        """The next request to path (others are kept for later)."""
        deadline = time.time() + timeout
        kept = []
        try:
            while time.time() < deadline:
                try:
                    item = self.got.get(timeout=max(0.01, deadline - time.time()))
                except queue.Empty:
                    break
                if item[0] == path:
                    return item
                kept.append(item)
        finally:
            for item in kept:
                self.got.put(item)
        raise AssertionError("no request to %s within %d s" % (path, timeout))

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def signature_ok(secret, timestamp, body, signature):
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + mac, signature)


def main():
    sysm = System("e2e-0066", SERVICES, {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_VAPID_SUBJECT": SUBJECT,
        "TIDINGS_DELIVERY_BACKOFF_MS": "100",
    }, admin=False)
    rcv = Receiver()
    ok = False
    try:
        sysm.start_all(SERVICES)
        log("broker, users and notifications ready")

        email = "push-%s@example.com" % secrets.token_hex(4)
        password = "pw-" + secrets.token_hex(8)
        st, user, raw = http("POST", sysm.url("users", "/users"), body={
            "email": email, "password": password, "name": "Pia"})
        expect(st, 201, "register", raw)
        st, login, raw = http("POST", sysm.url("users", "/login"),
                              body={"email": email, "password": password})
        expect(st, 200, "login", raw)
        token = login["token"]
        nurl = lambda path: sysm.url("notifications", path)  # noqa: E731

        # The channels below must see only the second sign-in, so wait
        # until the service has made the notifications of the registration
        # and the first sign-in (the consumer runs behind the requests).
        deadline = time.time() + WAIT_S
        while True:
            st, inbox, raw = http("GET", nurl("/notifications"), token)
            expect(st, 200, "GET /notifications", raw)
            if len(inbox["notifications"]) >= 2:
                break
            if time.time() > deadline:
                raise AssertionError("no welcome and sign-in notifications: %s" % raw)
            time.sleep(0.05)
        assert [x["seq"] for x in inbox["notifications"]] == [2, 1], raw

        # The VAPID key: public, no auth.
        st, vk, raw = http("GET", nurl("/webpush/vapid-public-key"))
        expect(st, 200, "vapid public key", raw)
        vapid_public = vk["publicKey"]
        assert len(ece_decrypt.b64d(vapid_public)) == 65, vapid_public

        # A webhook for sign-ins; the secret is never shown again.
        hook_secret = "whsec-" + secrets.token_hex(16)
        st, hook, raw = http("POST", nurl("/webhooks"), token, {
            "url": rcv.base + "/hook", "secret": hook_secret, "events": ["UserLoggedInEvent"]})
        expect(st, 201, "POST /webhooks", raw)
        assert hook_secret not in raw, raw
        st, hooks, raw = http("GET", nurl("/webhooks"), token)
        expect(st, 200, "GET /webhooks", raw)
        assert [h["webhookId"] for h in hooks["webhooks"]] == [hook["webhookId"]], hooks
        assert hook_secret not in raw, raw
        st, _, raw = http("POST", nurl("/webhooks"), token, {
            "url": rcv.base + "/hook", "secret": hook_secret, "events": ["NoSuchEvent"]})
        expect(st, 400, "POST /webhooks with an unknown event type", raw)
        log("ok   webhook registered, secret never answered")

        # A push subscription as a browser makes it.
        ua_key = ec.generate_private_key(ec.SECP256R1())
        ua_private = ua_key.private_numbers().private_value.to_bytes(32, "big")
        ua_public = ua_key.public_key().public_bytes(Encoding.X962,
                                                     PublicFormat.UncompressedPoint)
        auth = secrets.token_bytes(16)
        st, _, raw = http("POST", nurl("/webpush/subscriptions"), token, {
            "endpoint": rcv.base + "/push", "expirationTime": None,
            "keys": {"p256dh": b64e(ua_public), "auth": b64e(auth)}})
        expect(st, 201, "POST /webpush/subscriptions", raw)
        log("ok   push subscription registered")

        # Sign in again: its notification reaches both.
        t0 = int(time.time())
        st, _, raw = http("POST", sysm.url("users", "/login"),
                          body={"email": email, "password": password})
        expect(st, 200, "second login", raw)

        _, headers, body = rcv.next("/hook")
        n = json.loads(body)
        assert n["type"] == "UserLoggedInEvent", n
        assert n["userId"] == user["userId"], n
        assert n["title"] == "New sign-in to your account", n
        assert headers.get("x-tidings-event-id") == n["id"], headers
        ts = headers.get("x-tidings-timestamp", "")
        assert ts.isdigit() and t0 - 1 <= int(ts) <= time.time() + 1, ts
        sig = headers.get("x-tidings-signature", "")
        assert signature_ok(hook_secret, ts, body, sig), "bad signature %r" % sig
        tampered = bytearray(body)
        tampered[len(tampered) // 2] ^= 1
        assert not signature_ok(hook_secret, ts, bytes(tampered), sig), "tampered body verified"
        assert not signature_ok("another-secret-of-length", ts, body, sig)
        assert not signature_ok(hook_secret, str(int(ts) + 1), body, sig)
        log("ok   webhook got the sign-in notification %s, signature valid" % n["id"])

        _, headers, body = rcv.next("/push")
        assert headers.get("content-encoding") == "aes128gcm", headers
        assert headers.get("ttl") == "86400", headers
        plain = ece_decrypt.decrypt(body, ua_private, ua_public, auth)
        assert json.loads(plain) == n, (plain, n)
        scheme, _, params = headers.get("authorization", "").partition(" ")
        assert scheme == "vapid", headers
        params = dict(p.strip().split("=", 1) for p in params.split(","))
        assert params["k"] == vapid_public, params
        es256_verify.verify(params["t"], params["k"], rcv.base, SUBJECT)
        log("ok   push message decrypts to the same notification, VAPID verified")

        # The inbox has it too, and the metrics count both deliveries.
        st, inbox, raw = http("GET", nurl("/notifications"), token)
        expect(st, 200, "inbox", raw)
        assert n["id"] in [x["id"] for x in inbox["notifications"]], inbox
        deadline = time.time() + WAIT_S
        while True:
            with urllib.request.urlopen(nurl("/metrics"), timeout=10) as r:
                metrics = r.read().decode()
            want = ['tidings_deliveries_total{channel="webhook",result="success"} 1',
                    'tidings_deliveries_total{channel="webpush",result="success"} 1']
            if all(w in metrics for w in want):
                break
            if time.time() > deadline:
                raise AssertionError("metrics lack %r:\n%s" % (want, metrics))
            time.sleep(0.1)
        log("ok   /metrics counts the deliveries")
        ok = True
    finally:
        rcv.close()
        sysm.finish(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
