#!/usr/bin/python3
"""The order saga with real processes: `tidings broker`, `users`, `products`,
`orders` and `payments` on free ports, talked to only over HTTP and Kafka.

Several users place 200 orders at once: some within stock and the payment
limit, some over the limit (payment declined, stock returned), some for more
than the stock, some for a product that does not exist. Every order must
reach APPROVED or REJECTED within a bounded wait; each product's stock must
equal its initial stock minus the quantities of its approved orders; each
approved order's total and payment must be quantity x price; and on Kafka,
each order's events must form exactly the saga's causal chain: one
correlation id (the orderId, also the key), each causation id naming the
event reacted to and published after it, one trace, one event per fact.

0041_saga_crash.py runs the same with a service killed (kill -9) and
restarted in the middle; `run(crash=...)` is shared with it, and with the
kafka tier, which runs it on a real cluster (tdharness: TIDINGS_TEST_KAFKA)
and kills a Kafka broker in the middle.
"""
import concurrent.futures
import json
import os
import random
import secrets
import shutil
import sys
import threading
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, http, expect, System  # noqa: E402

PREFIX = "tidings."
LIMIT_CENTS = 50000  # TIDINGS_PAYMENT_LIMIT=500.00
ORDER_COUNT = 200
SETTLE_S = 240  # bound for every order to be final (a killed consumer's
                # partitions come back after its session times out, 45 s)
SERVICES = ["users", "products", "orders", "payments"]


def cents(text):
    """"19.99" / "120" -> integer cents, without floating point."""
    whole, _, frac = str(text).partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def money_cents(value):
    """A JSON number as parsed (int or float) -> cents, exactly: the
    number's shortest repr has at most 2 decimals."""
    return cents(repr(value)) if isinstance(value, float) else int(value) * 100


# ---- Kafka -------------------------------------------------------------------


def read_topics(brokers, shorts, prefix=PREFIX):
    """Every record of the topics, from the beginning to the end offsets of
    now, as dicts."""
    topics = [prefix + s for s in shorts]
    c = KafkaConsumer(bootstrap_servers=brokers.split(","), enable_auto_commit=False,
                      group_id=None, consumer_timeout_ms=1000)
    try:
        parts = []
        for t in topics:
            ps = None
            deadline = time.time() + 20
            while not ps and time.time() < deadline:
                ps = c.partitions_for_topic(t)
                if not ps:
                    time.sleep(0.2)
            if not ps:
                raise RuntimeError("topic %s not found" % t)
            parts += [TopicPartition(t, p) for p in sorted(ps)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out = []
        deadline = time.time() + 60
        while any(c.position(tp) < end[tp] for tp in parts):
            if time.time() > deadline:
                raise RuntimeError("reading %s timed out" % topics)
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    if r.offset >= end[tp]:
                        continue
                    h = {k: (v.decode() if v is not None else None) for k, v in r.headers}
                    out.append({
                        "topic": r.topic[len(prefix):], "partition": r.partition,
                        "offset": r.offset, "key": r.key.decode() if r.key else None,
                        "headers": h, "id": h.get("ce_id"), "type": h.get("ce_type"),
                        "corr": h.get("ce_correlationid"), "cause": h.get("ce_causationid"),
                        "time": h.get("ce_time"), "trace": h.get("traceparent"),
                        "data": json.loads(r.value) if r.value else None,
                    })
        return out
    finally:
        c.close()


# Each saga, by the order's outcome: (type, topic, type of its cause).
CHAINS = {
    "APPROVED": [("OrderCreatedEvent", "orders", None),
                 ("ProductReservedEvent", "reservations", "OrderCreatedEvent"),
                 ("PaymentProcessedEvent", "payments", "ProductReservedEvent"),
                 ("OrderApprovedEvent", "orders", "PaymentProcessedEvent")],
    "limit_exceeded": [("OrderCreatedEvent", "orders", None),
                       ("ProductReservedEvent", "reservations", "OrderCreatedEvent"),
                       ("PaymentFailedEvent", "payments", "ProductReservedEvent"),
                       ("ProductReservationCancelledEvent", "reservations", "PaymentFailedEvent"),
                       ("OrderRejectedEvent", "orders", "PaymentFailedEvent")],
    "out_of_stock": [("OrderCreatedEvent", "orders", None),
                     ("ProductReservationFailedEvent", "reservations", "OrderCreatedEvent"),
                     ("OrderRejectedEvent", "orders", "ProductReservationFailedEvent")],
}
CHAINS["unknown_product"] = CHAINS["out_of_stock"]


def group_events(records):
    """orderId -> {ce_id: first record with that id}; and the count of
    records that repeat an id (an outbox re-publish after a crash)."""
    by_order = {}
    repeats = 0
    for r in records:
        evs = by_order.setdefault(r["corr"], {})
        if r["id"] in evs:
            repeats += 1
            if (evs[r["id"]]["data"], evs[r["id"]]["type"]) != (r["data"], r["type"]):
                raise AssertionError("ce_id %s reused for different content" % r["id"])
            continue
        evs[r["id"]] = r
    return by_order, repeats


def check_chain(order, evs):
    """The events of one order are exactly its saga, in causal order."""
    oid = order["orderId"]
    outcome = order["status"] if order["status"] == "APPROVED" else order["reason"]
    chain = CHAINS[outcome]
    by_type = {}
    for e in evs.values():
        if e["type"] in by_type:
            raise AssertionError("order %s: two %s events (%s, %s)"
                                 % (oid, e["type"], by_type[e["type"]]["id"], e["id"]))
        by_type[e["type"]] = e
    want = sorted(t for t, _, _ in chain)
    if sorted(by_type) != want:
        raise AssertionError("order %s (%s): events %s, expected %s"
                             % (oid, outcome, sorted(by_type), want))
    trace_ids = {e["trace"].split("-")[1] for e in evs.values()}
    if len(trace_ids) != 1:
        raise AssertionError("order %s: %d traces" % (oid, len(trace_ids)))
    for typ, topic, cause_type in chain:
        e = by_type[typ]
        if e["topic"] != topic or e["key"] != oid or e["corr"] != oid:
            raise AssertionError("order %s: %s on %s key %s corr %s"
                                 % (oid, typ, e["topic"], e["key"], e["corr"]))
        if e["data"].get("orderId") != oid:
            raise AssertionError("order %s: %s data names %s" % (oid, typ, e["data"]))
        if cause_type is None:
            if e["cause"] is not None:
                raise AssertionError("order %s: %s has a cause" % (oid, typ))
            continue
        cause = by_type[cause_type]
        if e["cause"] != cause["id"]:
            raise AssertionError("order %s: %s caused by %s, expected %s (%s)"
                                 % (oid, typ, e["cause"], cause["id"], cause_type))
        if e["trace"].split("-")[2] == cause["trace"].split("-")[2]:
            raise AssertionError("order %s: %s reuses its cause's span" % (oid, typ))
        # Published after its cause: later in the same partition, and never
        # stamped earlier.
        if e["topic"] == cause["topic"]:
            if e["partition"] != cause["partition"] or e["offset"] <= cause["offset"]:
                raise AssertionError("order %s: %s at %d/%d before its cause at %d/%d"
                                     % (oid, typ, e["partition"], e["offset"],
                                        cause["partition"], cause["offset"]))
        if e["time"] < cause["time"]:
            raise AssertionError("order %s: %s at %s before its cause at %s"
                                 % (oid, typ, e["time"], cause["time"]))
    return by_type


# ---- the run -----------------------------------------------------------------


def plan_orders(rng, products, ghost):
    """ORDER_COUNT (product index or ghost, quantity) pairs, shuffled."""
    plan = []
    per = (ORDER_COUNT - 8) // len(products)
    for i, p in enumerate(products):
        plan += [(i, rng.randint(1, p["maxq"])) for _ in range(per)]
    plan += [(0, 1000000)] * 4 + [(2, 999)] * 2  # more than the stock
    plan += [(ghost, 1)] * 2                     # no such product
    plan += [(0, 1)] * (ORDER_COUNT - len(plan))
    rng.shuffle(plan)
    return plan


def run(name, crash=None, services=SERVICES, check=None):
    """The whole scenario; crash is None or a list of (after_n_orders,
    what): a service to kill -9 and restart while orders are being placed,
    or a function of the System that does something worse. services may add
    to SERVICES; check(sysm, users, orders, placed) runs last, before the
    processes stop."""
    rng = random.Random(4040)
    sysm = System(name, services, {"TIDINGS_PAYMENT_LIMIT": "500.00", "TIDINGS_LOG_FORMAT": "json"})
    ok = False
    try:
        sysm.start_broker()
        log("broker at %s, data in %s" % (sysm.brokers, sysm.dir))
        for svc in services:
            sysm.start(svc)
        for svc in services:
            sysm.wait_ready(svc)
        log("services ready")

        st, body = http("POST", sysm.url("users", "/login"), body={
            "email": "admin@tidings.local", "password": sysm.admin_password})
        expect(st, 200, "admin login", body)
        admin = body["token"]
        assert body["role"] == "admin", body

        users = []
        for i in range(6):
            email = "buyer%d-%s@example.com" % (i, secrets.token_hex(3))
            st, body = http("POST", sysm.url("users", "/users"),
                            body={"email": email, "password": "correct horse %d" % i,
                                  "name": "Buyer %d" % i})
            expect(st, 201, "POST /users", body)
            st, body = http("POST", sysm.url("users", "/login"),
                            body={"email": email, "password": "correct horse %d" % i})
            expect(st, 200, "POST /login", body)
            users.append({"id": body["userId"], "token": body["token"]})

        products = [
            {"title": "Lamp", "price": "9.99", "stock": 120, "maxq": 4},
            {"title": "Chair", "price": "120", "stock": 200, "maxq": 6},  # 5+ over the limit
            {"title": "Pencil", "price": "0.5", "stock": 30, "maxq": 3},  # runs out
            {"title": "Desk", "price": "250", "stock": 60, "maxq": 3},    # 2 = the limit
        ]
        for p in products:
            st, body = http("POST", sysm.url("products", "/products"), token=admin,
                            body={"title": p["title"], "price": json.loads(p["price"]),
                                  "quantity": p["stock"]})
            expect(st, 201, "POST /products", body)
            p["id"] = body["productId"]
            p["cents"] = cents(p["price"])
        ghost = len(products)
        ghost_id = str(uuid.uuid4())
        plan = plan_orders(rng, products, ghost)

        # Place the orders from several threads at once.
        placed = []
        placed_lock = threading.Lock()
        kill_at = dict(crash or [])
        progress = threading.Condition()
        done_count = [0]

        # With a crash planned, orders trickle in (about 8 s for all), so
        # that each kill lands while the saga is busy.
        pace_s = 0.3 if crash else 0

        def place(i):
            time.sleep(pace_s)
            pidx, qty = plan[i]
            user = users[i % len(users)]
            pid = ghost_id if pidx == ghost else products[pidx]["id"]
            st, body = http("POST", sysm.url("orders", "/orders"), token=user["token"],
                            body={"productId": pid, "quantity": qty}, retry_s=120)
            expect(st, 202, "POST /orders", body)
            assert body["status"] == "PENDING", body
            with placed_lock:
                placed.append({"orderId": body["orderId"], "user": user, "pidx": pidx,
                               "qty": qty})
            with progress:
                done_count[0] += 1
                progress.notify_all()

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(place, i) for i in range(len(plan))]
            for n, svc in sorted(kill_at.items()):
                with progress:
                    progress.wait_for(lambda: done_count[0] >= n, timeout=120)
                if callable(svc):
                    svc(sysm)
                    continue
                log("kill -9 %s after %d orders" % (svc, done_count[0]))
                sysm.kill9(svc)
                time.sleep(0.5)
                sysm.start(svc)
                log("%s restarted" % svc)
            for f in futures:
                f.result()
        log("%d orders placed in %.1f s" % (len(placed), time.time() - t0))
        assert len(placed) == ORDER_COUNT
        for svc in (kill_at.values() if crash else []):
            if not callable(svc):
                sysm.wait_ready(svc, timeout=120)

        # Every order ends final within the bound. The orders service's own
        # lists are the truth: they also hold any order whose 202 was lost.
        deadline = time.time() + SETTLE_S
        while True:
            orders = {}
            for u in users:
                after = None
                while True:
                    path = "/orders?limit=500" + ("&after=" + after if after else "")
                    st, body = http("GET", sysm.url("orders", path), token=u["token"],
                                    retry_s=60)
                    expect(st, 200, "GET /orders", body)
                    for o in body["orders"]:
                        assert o["userId"] == u["id"], o
                        orders[o["orderId"]] = o
                    after = body["next"]
                    if after is None:
                        break
            pending = [o for o in orders.values() if o["status"] == "PENDING"]
            if not pending:
                break
            if time.time() > deadline:
                raise AssertionError("%d orders still PENDING after %d s, e.g. %s"
                                     % (len(pending), SETTLE_S, pending[0]))
            time.sleep(0.5)
        log("all %d orders final after %.1f s" % (len(orders), time.time() - t0))
        for p in placed:
            assert p["orderId"] in orders, "placed order %s missing" % p["orderId"]
        if not crash:
            assert len(orders) == ORDER_COUNT, len(orders)

        # Outcomes follow the rules, and stock is conserved.
        pid_index = {p["id"]: i for i, p in enumerate(products)}
        approved_qty = [0] * len(products)
        outcomes = {}
        for o in orders.values():
            key = o["status"] if o["status"] == "APPROVED" else o.get("reason")
            outcomes[key] = outcomes.get(key, 0) + 1
            pidx = pid_index.get(o["productId"], ghost)
            if pidx == ghost:
                assert o["status"] == "REJECTED" and o["reason"] == "unknown_product", o
                continue
            amount = o["quantity"] * products[pidx]["cents"]
            if o["status"] == "APPROVED":
                approved_qty[pidx] += o["quantity"]
                assert money_cents(o["total"]) == amount, o
                assert amount <= LIMIT_CENTS, o
                assert "reason" not in o, o
            else:
                assert o["status"] == "REJECTED", o
                assert o["reason"] in ("limit_exceeded", "out_of_stock"), o
                assert "total" not in o, o
                if o["reason"] == "limit_exceeded":
                    assert amount > LIMIT_CENTS, o
                if o["quantity"] > products[pidx]["stock"]:
                    assert o["reason"] == "out_of_stock", o
        log("outcomes: %s" % outcomes)
        for k in ("APPROVED", "limit_exceeded", "out_of_stock", "unknown_product"):
            assert outcomes.get(k, 0) > 0, "no %s order in %s" % (k, outcomes)
        for i, p in enumerate(products):
            st, body = http("GET", sysm.url("products", "/products/" + p["id"]), retry_s=60)
            expect(st, 200, "GET /products/{id}", body)
            want = p["stock"] - approved_qty[i]
            assert body["quantity"] == want, \
                "%s: stock %s, expected %d - %d" % (p["title"], body["quantity"], p["stock"],
                                                   approved_qty[i])
            assert want >= 0
        log("stock conserved: %s" % [(p["title"], p["stock"] - q)
                                      for p, q in zip(products, approved_qty)])

        # Payments: approved ones processed with the total, declined ones
        # failed, and nobody else's visible.
        other = users[0]
        for o in orders.values():
            st, body = http("GET", sysm.url("payments", "/payments/" + o["orderId"]),
                            token=admin, retry_s=60)
            if o["status"] == "APPROVED":
                expect(st, 200, "GET /payments", body)
                assert body["status"] == "PROCESSED", body
                assert money_cents(body["amount"]) == money_cents(o["total"]), (body, o)
            elif o["reason"] == "limit_exceeded":
                expect(st, 200, "GET /payments", body)
                assert body["status"] == "FAILED", body
            else:
                expect(st, 404, "GET /payments (never charged)", body)
            if o["userId"] != other["id"]:
                st, body = http("GET", sysm.url("payments", "/payments/" + o["orderId"]),
                                token=other["token"])
                expect(st, 404, "someone else's payment", body)
                st, body = http("GET", sysm.url("orders", "/orders/" + o["orderId"]),
                                token=other["token"])
                expect(st, 404, "someone else's order", body)

        # Kafka: each order's saga, complete, causal, one correlation id.
        deadline = time.time() + 60
        while True:
            records = read_topics(sysm.reader_brokers, ["orders", "reservations", "payments"],
                                  sysm.prefix)
            by_order, repeats = group_events(records)
            try:
                for o in orders.values():
                    check_chain(o, by_order.get(o["orderId"], {}))
                break
            except AssertionError:
                # The last events may still be in an outbox: wait, bounded.
                if time.time() > deadline:
                    raise
                time.sleep(1)
        stray = set(by_order) - set(orders)
        assert not stray, "events for orders nobody placed: %s" % sorted(stray)[:3]
        log("%d saga events on Kafka in causal order (%d re-published copies)"
            % (sum(len(v) for v in by_order.values()), repeats))
        dlt = read_topics(sysm.reader_brokers, ["orders.DLT", "reservations.DLT", "payments.DLT"],
                          sysm.prefix)
        assert not dlt, "dead-lettered: %s" % [(r["type"], r["headers"].get(
            "tidings_dlt_reason")) for r in dlt]
        if check:
            check(sysm, users, orders, placed)
        ok = True
    finally:
        codes = sysm.stop()
        # A graceful stop exits 0 (leak checkers and sanitizers included).
        for name, code in codes.items():
            if code != 0:
                log("%s exited %s after SIGTERM" % (name, code))
                if name in ("orders", "payments"):
                    ok = False
        if ok:
            shutil.rmtree(sysm.dir, ignore_errors=True)
        else:
            for name in ["broker"] + list(services):
                sys.stderr.write("---- %s log (%s):%s\n" % (name, sysm.dir, sysm.tail(name)))
    if not ok:
        raise AssertionError("a saga service did not stop cleanly (see its log above)")


if __name__ == "__main__":
    run("0040_saga")
    log("PASS")
