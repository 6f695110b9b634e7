#!/usr/bin/python3
"""SPEC section 5: Web Push endpoints and webhook URLs must be https to a
public address. Every spelling of a loopback, private, shared, link-local,
unique-local, multicast, broadcast, unspecified, reserved or cloud-metadata
host that libcurl accepts (decimal, hex, octal, short IPv4, IPv6 literals,
IPv4-mapped, NAT64 and 6to4 forms), and names that resolve to such an
address, are refused with 400 invalid_argument at registration, for
webhooks and push subscriptions alike; a public literal and a name that
resolves to a public address are accepted (201). The service runs with
TIDINGS_ALLOW_HTTP_ENDPOINTS=1, the most permissive setting there is,
which allows plain http to loopback and nothing more.

Names resolve through the test build's resolver (TIDINGS_TEST_RESOLVE,
names under .test only), so no real DNS is needed."""
import base64
import os
import secrets
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, http, expect, log, finish  # noqa: E402
from tdharness import System  # noqa: E402

REFUSED = [
    "https://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "https://2130706433/",            # decimal
    "https://0x7f000001/",            # hex
    "https://0177.0.0.1/",            # octal
    "https://127.1/",                 # short
    "https://0x7f.1/",
    "https://127.0.0.1./",
    "https://%31%32%37.0.0.1/",
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[fd00::1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[64:ff9b::7f00:1]/",     # NAT64 of loopback
    "https://[2002:7f00:1::1]/",      # 6to4 of loopback
    "https://10.0.0.1/",
    "https://012.0.0.1/",
    "https://172.16.0.1/",
    "https://192.168.1.1/",
    "https://3232235777/",            # 192.168.1.1
    "https://100.64.0.1/",            # RFC 6598
    "https://169.254.169.254/latest/meta-data/",
    "https://2852039166/",            # 169.254.169.254
    "https://[fd00:ec2::254]/",
    "https://169.254.10.1/",
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://255.255.255.255/",
    "https://0.0.0.0/",
    "https://0/",
    "https://[::]/",
    "https://240.0.0.1/",
    "https://localhost/",
    "https://api.localhost/",
    "https://4294967296/",
    "https://inside.test/hook",       # resolves to 10.1.2.3
    "https://meta.test/hook",         # resolves to 169.254.169.254
    "https://v6local.test/hook",      # resolves to fd00::1
    "https://loop.test/hook",         # resolves to 127.0.0.1
    "http://10.0.0.1/hook",           # http: loopback only, even in test mode
    "http://8.8.8.8/hook",
    "http://public.test/hook",
    "ftp://8.8.8.8/hook",
    "https://user:pw@8.8.8.8/hook",
]
ACCEPTED_HOOKS = ["https://93.184.216.34/hook", "https://public.test:8443/hook"]
ACCEPTED_PUSH = ["https://93.184.216.34/push/1", "https://public.test/wpush/v2/x"]


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    sysm = System("sec-0110", ["users", "notifications"], {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_TEST_RESOLVE": ";".join([
            "public.test=93.184.216.34", "inside.test=10.1.2.3", "meta.test=169.254.169.254",
            "v6local.test=fd00::1", "loop.test=127.0.0.1"]),
    }, admin=False)
    ok = False
    try:
        sysm.start_broker()
        for svc in ("users", "notifications"):
            sysm.start(svc)
        for svc in ("users", "notifications"):
            sysm.wait_ready(svc)
        _, _, _, token = account(sysm, "Mallory")
        nurl = lambda p: sysm.url("notifications", p)  # noqa: E731
        key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint)
        keys = {"p256dh": b64e(key), "auth": b64e(secrets.token_bytes(16))}

        accepted = []
        for url in REFUSED:
            st, body = http("POST", nurl("/webhooks"), token, {
                "url": url, "secret": "whsec-" + secrets.token_hex(8),
                "events": ["UserLoggedInEvent"]})
            if st != 400:
                accepted.append(("webhook", url, st))
            else:
                assert body["error"]["code"] == "invalid_argument", body
            st, body = http("POST", nurl("/webpush/subscriptions"), token,
                            {"endpoint": url, "keys": keys})
            if st != 400:
                accepted.append(("push", url, st))
        assert not accepted, "not refused: %s" % accepted
        log("ok   %d private, loopback and metadata URLs refused for webhooks and push"
            % len(REFUSED))

        for url in ACCEPTED_HOOKS:
            st, body = http("POST", nurl("/webhooks"), token, {
                "url": url, "secret": "whsec-" + secrets.token_hex(8),
                "events": ["UserLoggedInEvent"]})
            expect(st, 201, "webhook " + url, body)
        for url in ACCEPTED_PUSH:
            st, body = http("POST", nurl("/webpush/subscriptions"), token,
                            {"endpoint": url, "keys": keys})
            expect(st, 201, "push " + url, body)
        # Test mode: plain http to loopback, and only there.
        st, body = http("POST", nurl("/webhooks"), token, {
            "url": "http://127.0.0.1:9/hook", "secret": "whsec-" + secrets.token_hex(8),
            "events": ["UserLoggedInEvent"]})
        expect(st, 201, "http loopback webhook in test mode", body)
        st, hooks = http("GET", nurl("/webhooks"), token)
        expect(st, 200, "GET /webhooks", hooks)
        assert len(hooks["webhooks"]) == len(ACCEPTED_HOOKS) + 1, hooks
        log("ok   public https URLs (literal and resolved) accepted")
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
