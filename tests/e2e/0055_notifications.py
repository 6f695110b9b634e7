#!/usr/bin/python3
"""Notifications end to end with real processes: `tidings broker`, `users`,
`products`, `orders`, `payments` and `notifications` on free ports, talked
to only over HTTP (the stream read as EventSource reads it).

A user registers and signs in, opens GET /notifications/stream, signs in
again (the sign-in notification arrives on the open stream), orders (the
"Order received" then "Order confirmed" notifications arrive in order
within a bounded time), orders more than the stock ("Order rejected
(out_of_stock)"), opts in to new products and watches one, and the admin
creates a product, lowers a price, restocks a sold-out product and deletes
one: every row of SPEC section 2's rule table arrives live. Then the
stream is dropped, a notification is missed, and a reconnect with
Last-Event-ID gets exactly that one before live ones; a replay from 0 is
the inbox in seq order; seq has no gaps; another user's stream sees none
of it.
"""
import http.client as httpclient
import json
import os
import queue
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, http, expect, System  # noqa: E402

SERVICES = ["users", "products", "orders", "payments", "notifications"]
EVENT_WAIT_S = 30  # bound for one notification to arrive on a stream


class Stream:
    """GET /notifications/stream read as EventSource reads it, on a thread:
    events (id, event, data parsed as JSON) go to a queue."""

    def __init__(self, port, token, last_event_id=None):
        self.conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=None)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        # The token in the query, as a browser's EventSource must send it.
        self.conn.request("GET", "/notifications/stream?token=" + token, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.content_type = self.resp.getheader("Content-Type", "")
        self.events = queue.Queue()
        self.retry = None
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        ev = {"id": None, "event": None, "data": []}
        last_id = None
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\n").rstrip("\r")
                if line == "":
                    if ev["data"]:
                        last_id = ev["id"] if ev["id"] is not None else last_id
                        self.events.put({"id": last_id, "event": ev["event"],
                                         "data": json.loads("\n".join(ev["data"]))})
                    ev = {"id": None, "event": None, "data": []}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    ev["data"].append(value)
                elif name == "id":
                    ev["id"] = value
                elif name == "event":
                    ev["event"] = value
                elif name == "retry":
                    self.retry = int(value)
        except Exception:  # the stream was closed under the reader: it ends
            pass

    def next(self, timeout=EVENT_WAIT_S):
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def expect(self, title, what, timeout=EVENT_WAIT_S):
        """The next event: a notification titled title. Returns its data."""
        t0 = time.time()
        ev = self.next(timeout)
        if ev is None:
            raise AssertionError("%s: no notification on the stream within %d s (want %r)"
                                 % (what, timeout, title))
        if ev["event"] != "notification" or ev["data"].get("title") != title:
            raise AssertionError("%s: got %r, want %r" % (what, ev, title))
        if ev["id"] != str(ev["data"]["seq"]):
            raise AssertionError("%s: id %r is not the seq of %r" % (what, ev["id"], ev["data"]))
        log("ok   %s: %r (seq %s) after %.0f ms" % (what, title, ev["id"],
                                                      (time.time() - t0) * 1000))
        return ev["data"]

    def quiet(self, seconds):
        """True when nothing arrives for seconds."""
        ev = self.next(seconds)
        if ev is not None:
            raise AssertionError("unexpected notification: %r" % (ev,))
        return True

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def main():
    sysm = System("e2e-0055", SERVICES)
    streams = []
    ok = False
    try:
        sysm.start_all(SERVICES)
        log("all services ready")

        def url(svc, path):
            return sysm.url(svc, path)

        admin = sysm.admin_login()

        st, body = http("POST", url("products", "/products"), token=admin,
                        body={"title": "iPhone 15", "price": 1129, "quantity": 10})
        expect(st, 201, "POST /products", body)
        phone = body["productId"]

        # Register and sign in once; the inbox gets "Welcome" and a sign-in.
        email = "ann-%s@example.com" % uuid.uuid4().hex[:8]
        st, body = http("POST", url("users", "/users"),
                        body={"email": email, "password": "correct horse", "name": "Ann"})
        expect(st, 201, "POST /users", body)
        ann_id = body["userId"]
        st, body = http("POST", url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login", body)
        ann = body["token"]
        deadline = time.time() + EVENT_WAIT_S
        inbox = []
        while time.time() < deadline:
            st, body = http("GET", url("notifications", "/notifications"), token=ann)
            expect(st, 200, "GET /notifications", body)
            inbox = body["notifications"]
            if len(inbox) >= 2:
                break
            time.sleep(0.1)
        titles = [n["title"] for n in reversed(inbox)]
        assert titles == ["Welcome, Ann", "New sign-in to your account"], titles
        log("ok   the inbox has the welcome and the first sign-in")

        # A second user with a stream of her own, who must see nothing of Ann's.
        bob_email = "bob-%s@example.com" % uuid.uuid4().hex[:8]
        st, body = http("POST", url("users", "/users"),
                        body={"email": bob_email, "password": "correct horse", "name": "Bob"})
        expect(st, 201, "POST /users (bob)", body)
        st, body = http("POST", url("users", "/login"),
                        body={"email": bob_email, "password": "correct horse"})
        expect(st, 200, "POST /login (bob)", body)
        bob = body["token"]

        # The stream, opened live; then sign in again.
        bad = Stream(sysm.ports["notifications"], "not-a-token")
        assert bad.status == 401, bad.status
        s = Stream(sysm.ports["notifications"], ann)
        streams.append(s)
        assert s.status == 200 and s.content_type.startswith("text/event-stream"), \
            (s.status, s.content_type)
        st, body = http("POST", url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login again", body)
        t_login = time.time()
        n = s.expect("New sign-in to your account", "sign-in on the open stream")
        assert n["userId"] == ann_id and n["seq"] == 3, n
        log("     sign-in notification %.0f ms after the login answered"
            % ((time.time() - t_login) * 1000))

        # An order: received, then confirmed, in order.
        st, body = http("POST", url("orders", "/orders"), token=ann,
                        body={"productId": phone, "quantity": 2})
        expect(st, 202, "POST /orders", body)
        order = body["orderId"]
        t_order = time.time()
        n = s.expect("Order received", "order received")
        assert n["data"]["orderId"] == order and n["body"] == \
            "We received your order of 2 × iPhone 15.", n
        n = s.expect("Order confirmed", "order confirmed")
        assert n["data"]["orderId"] == order, n
        assert n["body"] == "Your order of 2 × iPhone 15 is confirmed: total 2,258.00.", n["body"]
        log("     both order notifications within %.0f ms of the order"
            % ((time.time() - t_order) * 1000))

        # More than the stock: rejected.
        st, body = http("POST", url("orders", "/orders"), token=ann,
                        body={"productId": phone, "quantity": 50})
        expect(st, 202, "POST /orders (too many)", body)
        s.expect("Order received", "big order received")
        n = s.expect("Order rejected (out_of_stock)", "big order rejected")
        assert "not enough stock" in n["body"], n

        # New products (opt-in), and watching the phone.
        st, body = http("PUT", url("notifications", "/preferences"), token=ann,
                        body={"newProducts": True})
        expect(st, 200, "PUT /preferences", body)
        st, body = http("PUT", url("notifications", "/preferences"), token=ann,
                        body={"muted": ["NoSuchEvent"]})
        expect(st, 400, "PUT /preferences (unknown type)", body)
        st, body = http("POST", url("products", "/products"), token=admin,
                        body={"title": "Desk Lamp", "price": 19.99, "quantity": 0})
        expect(st, 201, "POST /products (lamp)", body)
        lamp = body["productId"]
        n = s.expect("New in the shop: Desk Lamp", "new product")
        assert n["body"] == "Desk Lamp is now available for 19.99.", n["body"]
        for pid in (phone, lamp):
            st, body = http("POST", url("notifications", "/watches"), token=ann,
                            body={"productId": pid})
            expect(st, 201, "POST /watches", body)

        st, body = http("PATCH", url("products", "/products/" + phone), token=admin,
                        body={"price": 999})
        expect(st, 200, "PATCH price", body)
        n = s.expect("Price drop: iPhone 15", "price drop")
        assert n["body"] == "iPhone 15 now costs 999.00 instead of 1,129.00.", n["body"]
        st, body = http("PATCH", url("products", "/products/" + lamp), token=admin,
                        body={"quantity": 5})
        expect(st, 200, "PATCH restock", body)
        s.expect("Back in stock: Desk Lamp", "back in stock")
        st, body = http("DELETE", url("products", "/products/" + lamp), token=admin)
        expect(st, 204, "DELETE product", body)
        n = s.expect("No longer available: Desk Lamp", "deletion")

        # Dropped; a notification missed; back with Last-Event-ID.
        last_seen = n["seq"]
        s.close()
        streams.remove(s)
        st, body = http("POST", url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "POST /login (while away)", body)
        deadline = time.time() + EVENT_WAIT_S
        while time.time() < deadline:
            st, body = http("GET", url("notifications", "/notifications?limit=1"), token=ann)
            if body["notifications"] and body["notifications"][0]["seq"] > last_seen:
                break
            time.sleep(0.1)
        s = Stream(sysm.ports["notifications"], ann, last_event_id=last_seen)
        streams.append(s)
        n = s.expect("New sign-in to your account", "the missed one, replayed")
        assert n["seq"] == last_seen + 1, (n, last_seen)
        st, body = http("POST", url("orders", "/orders"), token=ann,
                        body={"productId": phone, "quantity": 1})
        expect(st, 202, "POST /orders (after reconnect)", body)
        n = s.expect("Order received", "live after the replay")
        assert n["seq"] == last_seen + 2, n
        n = s.expect("Order confirmed", "live after the replay")
        final_seq = n["seq"]

        # The inbox, and a replay of everything, agree; seq has no gaps.
        st, body = http("GET", url("notifications", "/notifications?limit=500"), token=ann)
        expect(st, 200, "GET /notifications", body)
        inbox = list(reversed(body["notifications"]))
        assert [n["seq"] for n in inbox] == list(range(1, final_seq + 1)), \
            [n["seq"] for n in inbox]
        assert body["unread"] == final_seq, body["unread"]
        everything = Stream(sysm.ports["notifications"], ann, last_event_id=0)
        streams.append(everything)
        for want in inbox:
            got = everything.expect(want["title"], "replay from 0, seq %d" % want["seq"], 10)
            assert got == want, (got, want)
        log("ok   a replay from 0 is the inbox, %d notifications" % len(inbox))
        types = {n["type"] for n in inbox}
        rules = {"UserRegisteredEvent", "UserLoggedInEvent", "OrderCreatedEvent",
                 "OrderApprovedEvent", "OrderRejectedEvent", "ProductCreatedEvent",
                 "ProductUpdatedEvent", "ProductDeletedEvent"}
        assert types == rules, types ^ rules
        log("ok   every event type of the rule table reached the stream and the inbox")

        # Bob saw none of it: his own stream, from 0, has only his.
        bs = Stream(sysm.ports["notifications"], bob, last_event_id=0)
        streams.append(bs)
        n = bs.expect("Welcome, Bob", "bob's own")
        bs.expect("New sign-in to your account", "bob's own")
        bs.quiet(1)
        log("ok   bob's stream holds only bob's")

        req = urllib.request.urlopen(url("notifications", "/metrics"), timeout=10)
        metrics = req.read().decode()
        for name in ("tidings_notifications_created_total", "tidings_notifications_streams_open",
                     "tidings_notifications_stream_writes_total",
                     "tidings_notifications_replayed_total"):
            assert name in metrics, name
        log("ok   /metrics has the notification series")
        ok = True
    finally:
        for st_ in streams:
            st_.close()
        sysm.finish(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
