#!/usr/bin/python3
"""Threads end to end with real processes (`tidings broker`, users,
products, orders, payments, notifications), talked to only over HTTP.

A shopper with a push subscription (a key pair made here, as a browser
makes it; the push service is a receiver on loopback) and an open stream
places an order. Its "Order received" and "Order confirmed" form one
thread, order:<orderId>: the second `replaces` the first, both arrive on
the stream (so a client can update the card in place), the inbox keeps
both, and `?collapse=thread` lists one card per thread with `unread`
counting the cards. Each push carries the thread as its RFC 8030 Topic
(base64url of the first 24 bytes of SHA-256 of the thread, 32 characters),
the type's Urgency and TTL, and decrypts to the notification with its
thread. GET /notifications/{id} answers one with its deliveries (the
push sent, to the endpoint's host). With the push channel switched off in
the preferences (malformed channel preferences get 400), a new
notification still reaches the stream but queues no push. A bad collapse
gets 400.
"""
import base64
import hashlib
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


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The stream reader of the notifications test and the push receiver of
# the push test, not copied.
Stream = load("e2e_0055", "0055_notifications.py").Stream
Receiver = load("e2e_0066", "0066_push_webhooks.py").Receiver

SERVICES = ["users", "products", "orders", "payments", "notifications"]
WAIT_S = 30


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def topic_of(thread):
    return b64e(hashlib.sha256(thread.encode()).digest()[:24])


def main():
    sysm = System("e2e-0067", SERVICES, {"TIDINGS_ALLOW_HTTP_ENDPOINTS": "1"})
    rcv = Receiver()
    streams = []
    ok = False
    try:
        sysm.start_all(SERVICES)
        log("all services ready")
        url = sysm.url
        nurl = lambda path: url("notifications", path)  # noqa: E731

        admin = sysm.admin_login()
        st, body = http("POST", url("products", "/products"), token=admin,
                        body={"title": "Kettle", "price": 25, "quantity": 10})
        expect(st, 201, "POST /products", body)
        kettle = body["productId"]

        email = "tess-%s@example.com" % uuid.uuid4().hex[:8]
        st, body = http("POST", url("users", "/users"),
                        body={"email": email, "password": "correct horse", "name": "Tess"})
        expect(st, 201, "POST /users", body)
        st, body = http("POST", url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login", body)
        tess = body["token"]
        # Welcome and the sign-in first: both of the account thread.
        deadline = time.time() + WAIT_S
        while True:
            st, body = http("GET", nurl("/notifications"), token=tess)
            expect(st, 200, "GET /notifications", body)
            if len(body["notifications"]) >= 2:
                break
            assert time.time() < deadline, body
            time.sleep(0.05)
        signin, welcome = body["notifications"]
        assert welcome["thread"] == "account" and welcome["replaces"] is None, welcome
        assert signin["thread"] == "account" and signin["replaces"] == welcome["id"], signin

        ua_key = ec.generate_private_key(ec.SECP256R1())
        ua_private = ua_key.private_numbers().private_value.to_bytes(32, "big")
        ua_public = ua_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        auth = secrets.token_bytes(16)
        st, body = http("POST", nurl("/webpush/subscriptions"), token=tess, body={
            "endpoint": rcv.base + "/push", "keys": {"p256dh": b64e(ua_public), "auth": b64e(auth)}})
        expect(st, 201, "POST /webpush/subscriptions", body)
        s = Stream(sysm.ports["notifications"], tess)
        streams.append(s)
        assert s.status == 200, s.status

        st, body = http("POST", url("orders", "/orders"), token=tess,
                        body={"productId": kettle, "quantity": 1})
        expect(st, 202, "POST /orders", body)
        order = body["orderId"]
        thread = "order:" + order

        # The stream sends both, the second naming the first it replaces.
        received = s.expect("Order received", "order received on the stream")
        confirmed = s.expect("Order confirmed", "order confirmed on the stream")
        assert received["thread"] == thread and received["replaces"] is None, received
        assert confirmed["thread"] == thread and confirmed["replaces"] == received["id"], confirmed
        log("ok   one thread %s: confirmed replaces received on the stream" % thread)

        # The pushes carry the thread as Topic, with the type's Urgency and TTL.
        want = {"Order received": ("normal", "3600"), "Order confirmed": ("high", "86400")}
        for title in ("Order received", "Order confirmed"):
            _, headers, raw = rcv.next("/push")
            n = json.loads(ece_decrypt.decrypt(raw, ua_private, ua_public, auth))
            assert n["title"] == title, n
            assert n["thread"] == thread, n
            assert headers.get("topic") == topic_of(thread), (headers, topic_of(thread))
            assert len(headers["topic"]) <= 32, headers
            assert (headers.get("urgency"), headers.get("ttl")) == want[title], headers
        log("ok   both pushes: Topic %s, Urgency and TTL per type" % topic_of(thread))

        # The inbox keeps both; collapsed it shows one card per thread.
        st, body = http("GET", nurl("/notifications"), token=tess)
        expect(st, 200, "GET /notifications", body)
        assert [n["seq"] for n in body["notifications"]] == [4, 3, 2, 1], body
        assert body["unread"] == 4, body
        st, body = http("GET", nurl("/notifications?collapse=thread"), token=tess)
        expect(st, 200, "GET /notifications?collapse=thread", body)
        cards = body["notifications"]
        assert [(n["thread"], n["title"]) for n in cards] == [
            (thread, "Order confirmed"), ("account", "New sign-in to your account")], cards
        assert body["unread"] == 2, body
        st, body = http("POST", nurl("/notifications/%s/read" % confirmed["id"]), token=tess)
        expect(st, 200, "read the order card", body)
        st, body = http("GET", nurl("/notifications?collapse=thread"), token=tess)
        expect(st, 200, "GET /notifications?collapse=thread", body)
        assert body["unread"] == 1, body
        log("ok   inbox keeps both; collapse=thread shows one card per thread, unread counts cards")

        # Delivery status: the push of each, sent once, to the endpoint's host.
        for n in (received, confirmed):
            deadline = time.time() + WAIT_S
            while True:
                st, body = http("GET", nurl("/notifications/" + n["id"]), token=tess)
                expect(st, 200, "GET /notifications/{id}", body)
                assert body["id"] == n["id"] and body["thread"] == thread, body
                ds = body["deliveries"]
                assert len(ds) == 1 and ds[0]["channel"] == "push", ds
                assert ds[0]["target"] == "127.0.0.1", ds
                if ds[0]["status"] == "sent":
                    break
                assert ds[0]["status"] == "pending" and time.time() < deadline, ds
                time.sleep(0.05)
            assert ds[0]["attempts"] == 1 and ds[0]["lastError"] is None, ds
        st, body = http("GET", nurl("/notifications/" + received["id"]))
        expect(st, 401, "GET /notifications/{id} without a token", body)
        log("ok   GET /notifications/{id}: the push of each is sent, to 127.0.0.1, 1 attempt")

        # Per-channel preferences: bad ones are refused whole; push off
        # means no push, while the inbox and the stream still get it.
        for bad in ({"channels": {"sms": {"enabled": True}}},
                    {"channels": {"push": {"enabled": "no"}}},
                    {"channels": {"push": {"muted": ["NoSuchEvent"]}}},
                    {"channels": {"push": {"enabled": False}}, "colour": 1}):
            st, body = http("PUT", nurl("/preferences"), token=tess, body=bad)
            expect(st, 400, "PUT /preferences %r" % bad, body)
            assert body["error"]["code"] == "invalid_argument", body
        st, body = http("GET", nurl("/preferences"), token=tess)
        assert body["channels"]["push"] == {"enabled": True, "muted": []}, body
        assert body["channels"]["email"] == {"enabled": False, "muted": []}, body
        st, body = http("PUT", nurl("/preferences"), token=tess,
                        body={"channels": {"push": {"enabled": False}}})
        expect(st, 200, "PUT /preferences push off", body)
        assert body["channels"]["push"]["enabled"] is False, body
        assert body["channels"]["webhook"]["enabled"] is True, body
        st, body = http("POST", url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login again", body)
        quiet = s.expect("New sign-in to your account", "sign-in with push off, on the stream")
        st, body = http("GET", nurl("/notifications/" + quiet["id"]), token=tess)
        expect(st, 200, "GET /notifications/{id}", body)
        assert body["deliveries"] == [], body
        log("ok   push switched off: the sign-in reached the stream and no push was queued")
        st, body = http("GET", nurl("/notifications?collapse=order"), token=tess)
        expect(st, 400, "GET /notifications?collapse=order", body)
        ok = True
    finally:
        for st_ in streams:
            st_.close()
        rcv.close()
        sysm.finish(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
