#!/usr/bin/python3
"""SPEC section 5: a reader too slow to take its frames is disconnected; it
reconnects with Last-Event-ID and misses nothing.

Real processes (broker, users, products, orders, payments, notifications).
A shopper holds two notification streams: one reads everything, the other
(a small receive window) reads nothing while 1000 orders make 2000
notifications. The reading stream gets all of them live, in seq order.
The other is cut by the server (it reads, at the end, whole frames in
order and then the end of the stream, well short of 2000); reconnecting
with the Last-Event-ID of its last whole frame it gets exactly the rest,
so that both streams saw the same 2000 notifications, none twice. On the
code before the change the reader that did not read was never cut (its
queue could reach 1 MiB and the kernel's buffers grew without bound).
"""
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, http, expect, System  # noqa: E402
from streamhelp import RawStream  # noqa: E402

SERVICES = ["users", "products", "orders", "payments", "notifications"]
ORDERS = 1000
WANT = 2 * ORDERS  # "Order received" and "Order confirmed"


def seqs(stream):
    return [int(e["id"]) for e in stream.notifications()]


def main():
    sysm = System("0154-slow-reader", SERVICES)
    streams = []
    try:
        sysm.start_broker()
        for s in SERVICES:
            sysm.start(s)
        for s in SERVICES:
            sysm.wait_ready(s)
        email = "slow.%d@example.com" % int(time.time() * 1000)
        st, body = http("POST", sysm.url("users", "/users"),
                        body={"email": email, "password": "correct horse", "name": "Slow"})
        expect(st, 201, "register", body)
        st, body = http("POST", sysm.url("users", "/login"),
                        body={"email": email, "password": "correct horse"})
        expect(st, 200, "login", body)
        token = body["token"]
        admin = sysm.admin_login()
        st, body = http("POST", sysm.url("products", "/products"), token=admin,
                        body={"title": "Bulk Bolt", "price": 1, "quantity": 100000})
        expect(st, 201, "product", body)
        product = body["productId"]

        # The welcome and the sign-in first, so the streams, which start
        # live (no Last-Event-ID), see only the orders' notifications.
        deadline = time.time() + 60
        while True:
            st, body = http("GET", sysm.url("notifications", "/notifications"), token=token)
            if st == 200 and len(body["notifications"]) >= 2:
                break
            assert time.time() < deadline, "no welcome and sign-in notifications: %s" % body
            time.sleep(0.2)

        # Both streams start live (no Last-Event-ID): from now on.
        nport = sysm.ports["notifications"]
        fast = RawStream(nport, "/notifications/stream", token)
        slow = RawStream(nport, "/notifications/stream", token, rcvbuf=4096)
        streams += [fast, slow]
        assert fast.read_status() == 200 and slow.read_status() == 200

        errors = []

        def place(n):
            for _ in range(n):
                st, body = http("POST", sysm.url("orders", "/orders"), token=token,
                                body={"productId": product, "quantity": 1})
                if st != 202:
                    errors.append((st, body))

        workers = [threading.Thread(target=place, args=(ORDERS // 4,)) for _ in range(4)]
        for w in workers:
            w.start()
        deadline = time.time() + 180
        while len(fast.notifications()) < WANT and time.time() < deadline:
            fast.pump(0.2)
            assert not fast.ended, "the stream that reads was ended"
        for w in workers:
            w.join()
        assert not errors, errors[:3]
        got = seqs(fast)
        assert len(got) == WANT, "the reading stream got %d of %d" % (len(got), WANT)
        assert got == list(range(got[0], got[0] + WANT)), "the reading stream lost or reordered"
        log("the reading stream got all %d notifications live" % WANT)

        # The other one: cut by the server, whole frames in order up to there.
        assert slow.wait_end(30), "the reader that does not read was never disconnected"
        part = seqs(slow)
        assert len(part) < WANT, "the slow reader got everything: it was never cut"
        assert part == got[:len(part)], "the slow reader's frames are not a prefix"
        log("the slow reader was cut after %d of %d" % (len(part), WANT))

        last = part[-1] if part else got[0] - 1
        again = RawStream(nport, "/notifications/stream", token, last_id=last)
        streams.append(again)
        assert again.read_status() == 200
        deadline = time.time() + 60
        while len(again.notifications()) < WANT - len(part) and time.time() < deadline:
            again.pump(0.2)
        again.pump(0.5)
        rest = seqs(again)
        assert part + rest == got, "after the reconnect: %d + %d frames, %s" % (
            len(part), len(rest), "gap or duplicate" if len(part) + len(rest) == WANT else
            "missing")
        for e in again.notifications()[:3]:
            assert json.loads(e["data"])["userId"], e
        log("reconnected with Last-Event-ID %d: the other %d, nothing lost or twice"
            % (last, len(rest)))
    finally:
        for s in streams:
            s.close()
        sysm.stop()
    log("ok")


if __name__ == "__main__":
    main()
