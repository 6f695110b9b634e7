#!/usr/bin/python3
"""SPEC section 5: posting a Web Push endpoint that another user registered
gets 409 conflict and the subscription never moves: it stays its owner's
(with the owner's keys), the owner can still remove it, the other user
cannot, and re-posting one's own endpoint stays fine (201)."""
import base64
import os
import secrets
import sys
import urllib.parse

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, http, expect, log, finish  # noqa: E402
from tdharness import System  # noqa: E402


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keys():
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint)
    return {"p256dh": b64e(pub), "auth": b64e(secrets.token_bytes(16))}


def main():
    sysm = System("sec-0112", ["users", "notifications"], admin=False)
    ok = False
    try:
        sysm.start_all(("users", "notifications"))
        _, _, _, alice = account(sysm, "Alice")
        _, _, _, eve = account(sysm, "Eve")
        nurl = lambda p: sysm.url("notifications", p)  # noqa: E731
        endpoint = "https://93.184.216.34/wpush/v2/" + secrets.token_hex(16)
        alice_keys = keys()

        st, sub = http("POST", nurl("/webpush/subscriptions"), alice,
                       {"endpoint": endpoint, "keys": alice_keys})
        expect(st, 201, "alice subscribes", sub)
        st, again = http("POST", nurl("/webpush/subscriptions"), alice,
                         {"endpoint": endpoint, "keys": alice_keys})
        expect(st, 201, "alice posts her own endpoint again", again)
        assert again["subscriptionId"] == sub["subscriptionId"], (sub, again)

        st, body = http("POST", nurl("/webpush/subscriptions"), eve,
                        {"endpoint": endpoint, "keys": keys()})
        expect(st, 409, "eve posts alice's endpoint", body)
        assert body["error"]["code"] == "conflict", body
        log("ok   another user's endpoint: 409 conflict")

        q = "/webpush/subscriptions?endpoint=" + urllib.parse.quote(endpoint, safe="")
        st, body = http("DELETE", nurl(q), eve)
        expect(st, 404, "eve deletes alice's endpoint", body)
        st, body = http("DELETE", nurl(q), alice)
        expect(st, 204, "alice still owns it and deletes it", body)
        log("ok   it stayed alice's")
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
