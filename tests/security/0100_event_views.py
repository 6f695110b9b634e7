#!/usr/bin/python3
"""SPEC section 5, personal data: the web service's event views.

Real processes (`tidings broker`, users, products, web). Alice and Bob
register and sign in (their emails, IPs and user agents go on the bus), the
admin creates a product. Then, with no token, GET /api/events and the live
stream /api/events/stream show product events only; Bob sees the product
events and his own, never Alice's; Alice sees her sign-in; the admin sees
everything; /api/trace/{id} is 401 without a token, 403 for a shopper and
200 for the admin; a bad token is 401 rather than a quiet anonymous view.
On the code before the fix the anonymous list printed Alice's email and IP.
"""
import http.client as httpclient
import json
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from tdharness import log, http, expect, System  # noqa: E402

SERVICES = ["users", "products", "web"]


def login(sysm, email, password):
    st, body = http("POST", sysm.url("users", "/login"), body={"email": email, "password": password})
    expect(st, 200, "login " + email, body)
    return body["token"], body["userId"]


def events(sysm, token=None, query="limit=500"):
    st, body = http("GET", sysm.url("web", "/api/events?" + query), token=token)
    return st, body


def raw_events(sysm, token=None):
    """The body as text, to look for personal data anywhere in it."""
    st, body = events(sysm, token)
    expect(st, 200, "GET /api/events", body)
    return body, json.dumps(body)


class Stream:
    """GET /api/events/stream on a thread; collects the raw text."""

    def __init__(self, port, token=None, after=0):
        q = {"after": str(after)}
        if token:
            q["token"] = token
        self.conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=None)
        self.conn.request("GET", "/api/events/stream?" + urllib.parse.urlencode(q),
                          headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.text = ""
        self.lock = threading.Lock()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                chunk = self.resp.fp.read1(65536)
                if not chunk:
                    return
                with self.lock:
                    self.text += chunk.decode("utf-8", "replace")
        except (OSError, ValueError):
            return

    def get(self):
        with self.lock:
            return self.text

    def close(self):
        try:
            self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def main():
    sysm = System("0100-event-views", SERVICES)
    try:
        sysm.start_broker()
        for s in SERVICES:
            sysm.start(s)
        for s in SERVICES:
            sysm.wait_ready(s)

        stamp = str(int(time.time() * 1000))
        alice_email = "alice.%s@example.com" % stamp
        bob_email = "bob.%s@example.com" % stamp
        for email, name in ((alice_email, "Alice Secret"), (bob_email, "Bob Private")):
            st, body = http("POST", sysm.url("users", "/users"),
                            body={"email": email, "password": "correct horse", "name": name})
            expect(st, 201, "register " + email, body)
        alice_token, alice_id = login(sysm, alice_email, "correct horse")
        bob_token, bob_id = login(sysm, bob_email, "correct horse")
        admin_token, _ = login(sysm, "admin@tidings.local", sysm.admin_password)
        st, body = http("POST", sysm.url("products", "/products"), token=admin_token,
                        body={"title": "Public Kettle", "price": 19.99, "quantity": 3})
        expect(st, 201, "create product", body)

        # Streams open before the wait, so they see the events live too.
        streams = {who: Stream(sysm.ports["web"], tok) for who, tok in
                   (("anon", None), ("bob", bob_token), ("admin", admin_token))}
        for who, s in streams.items():
            expect(s.status, 200, "stream of " + who, None)

        # The admin sees everything once the web reader has caught up. The
        # events are keyed by user, so Alice's and Bob's come on different
        # partitions: wait for both (and the product) before any view is
        # checked.
        def caught_up():
            text = raw_events(sysm, admin_token)[1]
            return all(s in text for s in (alice_email, bob_email, "Public Kettle"))
        wait_for("the admin's view to hold Alice's and Bob's events and the product", caught_up)
        body, text = raw_events(sysm, admin_token)
        types = {e.get("type") for e in body["events"]}
        for t in ("UserRegisteredEvent", "UserLoggedInEvent", "ProductCreatedEvent"):
            assert t in types, "admin misses %s: %s" % (t, types)

        # Anonymous: product events only, and nothing personal anywhere.
        body, text = raw_events(sysm)
        assert body["events"], "a visitor sees no product events at all"
        for e in body["events"]:
            assert e["topic"] == "products", "a visitor sees a %s event on %s" % (
                e.get("type"), e["topic"])
        for secret in (alice_email, bob_email, "Alice Secret", alice_id, '"ip"'):
            assert secret not in text, "a visitor sees %r" % secret
        log("anonymous list: %d product events, no personal data" % len(body["events"]))

        # Paging forward from 0 as a visitor: still products only.
        st, page = events(sysm, None, "after=0&limit=2")
        expect(st, 200, "anonymous page", page)
        assert all(e["topic"] == "products" for e in page["events"]), page

        # Bob: products and his own, never Alice's.
        body, text = raw_events(sysm, bob_token)
        assert bob_email in text, "Bob does not see his own events"
        for secret in (alice_email, "Alice Secret", alice_id):
            assert secret not in text, "Bob sees Alice's %r" % secret
        for e in body["events"]:
            if e["topic"] != "products":
                assert (e.get("data") or {}).get("userId", e.get("key")) == bob_id, e
        # Alice: her own sign-in, with her IP.
        body, text = raw_events(sysm, alice_token)
        mine = [e for e in body["events"] if e.get("type") == "UserLoggedInEvent"]
        assert mine and all(e["data"]["userId"] == alice_id for e in mine), mine
        assert bob_email not in text, "Alice sees Bob's email"

        # A token that does not verify is refused, not treated as anonymous.
        st, body = events(sysm, "not-a-token")
        expect(st, 401, "bad token on /api/events", body)
        s = Stream(sysm.ports["web"], "not-a-token")
        expect(s.status, 401, "bad token on the stream", None)
        s.close()

        # Traces are for admins.
        st, body = http("GET", sysm.url("web", "/api/trace/" + alice_id))
        expect(st, 401, "anonymous trace", body)
        st, body = http("GET", sysm.url("web", "/api/trace/" + alice_id), token=bob_token)
        expect(st, 403, "shopper trace", body)
        st, body = http("GET", sysm.url("web", "/api/trace/" + alice_id), token=admin_token)
        expect(st, 200, "admin trace", body)

        # The streams (replay from 0, then live): the same rules.
        wait_for("the admin stream to carry Alice's email",
                 lambda: alice_email in streams["admin"].get())
        # One more public and one more private event while they listen.
        st, body = http("POST", sysm.url("products", "/products"), token=admin_token,
                        body={"title": "Late Lamp", "price": 5, "quantity": 1})
        expect(st, 201, "second product", body)
        login(sysm, alice_email, "correct horse")
        wait_for("the visitor stream to carry the new product",
                 lambda: "Late Lamp" in streams["anon"].get())
        wait_for("Bob's stream to carry the new product", lambda: "Late Lamp" in
                 streams["bob"].get())
        time.sleep(1.0)  # Alice's second sign-in has reached the web reader by now
        wait_for("the admin stream to carry the new product",
                 lambda: "Late Lamp" in streams["admin"].get())
        for who in ("anon", "bob"):
            text = streams[who].get()
            for secret in (alice_email, "Alice Secret", alice_id):
                assert secret not in text, "%s's stream carries %r" % (who, secret)
        assert bob_email in streams["bob"].get(), "Bob's stream lacks his own events"
        assert bob_email not in streams["anon"].get(), "the visitor's stream carries Bob's email"
        for s in streams.values():
            s.close()
        log("streams filtered per viewer")
    finally:
        codes = sysm.stop()
        log("exit codes: %s" % codes)
    print("PASS 0100_event_views")


if __name__ == "__main__":
    main()
