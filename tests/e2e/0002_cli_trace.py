#!/usr/bin/python3
"""End-to-end: `tidings trace` over an order saga written by an independent
Kafka client (python3-kafka).

A fake saga (OrderCreated -> ProductReserved -> PaymentProcessed ->
OrderApproved, correlation id = orderId, each caused by the one before) is
written out of order onto its SPEC topics, together with unrelated events, a
duplicate publication and a dead-letter copy. Tracing the order id, or the
ce_id of an event in the middle, prints exactly the saga as a causal chain
with growing indentation and delays; --json gives the same tree; an unknown
id exits 1."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

from kafka import KafkaProducer

BIN = os.environ["TIDINGS_BIN"]
TMP = os.path.join(os.environ.get("TIDINGS_TEST_TMP", "/tmp"), "e2e-0002-cli-%d" % os.getpid())
PROCS = []
FAILURES = []
T0 = 1790000000000  # ms since the epoch: a fixed time makes the delays exact

# indentation, time, service, type, topic, partition, offset, delay, id
LINE = re.compile(r"^( *)(\S+Z)  (\S+)  (\S+)  (\S+) (\d+)@(\d+)(?:  ([+-]\d+) ms)?  id=(\S+)")


def check(cond, what, detail=""):
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what + (": " + str(detail) if detail else ""))
        FAILURES.append(what)
    return cond


def env():
    e = dict(os.environ)
    for k in ("TIDINGS_BROKERS", "TIDINGS_DATA_DIR", "TIDINGS_TOPIC_PREFIX"):
        e.pop(k, None)
    e["TIDINGS_LOG_LEVEL"] = "warn"
    return e


def run(args, timeout=60):
    p = subprocess.run([BIN] + args, env=env(), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def start_broker(data):
    p = subprocess.Popen([BIN, "broker", "--data", data], env=env(), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    PROCS.append(p)
    q = queue.Queue()
    threading.Thread(target=lambda: q.put(p.stdout.readline().strip()), daemon=True).start()
    try:
        return p, q.get(timeout=60)
    except queue.Empty:
        return p, None


def fmt_time(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def event(etype, service, topic, key, data, at_ms, corr=None, cause=None):
    eid = str(uuid.uuid4())
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", eid.encode()),
        ("ce_source", ("/tidings/" + service).encode()),
        ("ce_type", etype.encode()),
        ("ce_time", fmt_time(at_ms).encode()),
        ("ce_subject", key.encode()),
        ("content-type", b"application/json"),
        ("ce_correlationid", (corr or key).encode()),
        ("traceparent", ("00-%s-%s-01" % (uuid.uuid4().hex, uuid.uuid4().hex[:16])).encode()),
    ]
    if cause:
        headers.append(("ce_causationid", cause["id"].encode()))
    return {"id": eid, "type": etype, "service": service, "topic": topic, "key": key,
            "data": data, "headers": headers, "at": at_ms, "cause": cause}


def produce(brokers, events):
    prod = KafkaProducer(bootstrap_servers=brokers.split(","), acks="all", max_block_ms=20000)
    try:
        for e in events:
            prod.send("tidings." + e["topic"], key=e["key"].encode(),
                      value=json.dumps(e["data"]).encode(),
                      headers=e["headers"] + e.get("extra", [])).get(timeout=20)
    finally:
        prod.close(timeout=10)


def event_lines(out):
    return [l for l in out.splitlines() if LINE.match(l)]


def check_chain(out, saga, what):
    """The text output is exactly the saga, in causal order, each line one
    level deeper than the one before, with the right fields."""
    lines = out.splitlines()
    check(len(lines) >= 1 and lines[0].startswith("correlation %s: 4 events, span 40 ms"
                                                  % saga[0]["key"]),
          what + ": header with correlation id and span", lines[:1])
    evl = event_lines(out)
    if not check(len(evl) == 4, what + ": exactly 4 events", out):
        return
    prev_indent = -1
    for l, e in zip(evl, saga):
        m = LINE.match(l)
        indent, time_, svc, etype, topic, part, off, delay, eid = m.groups()
        check(etype == e["type"] and eid == e["id"], what + ": %s in causal order" % e["type"], l)
        check(len(indent) > prev_indent, what + ": %s indented deeper" % e["type"], l)
        prev_indent = len(indent)
        check(svc == e["service"] and topic == e["topic"] and time_ == fmt_time(e["at"]),
              what + ": %s service, topic, time" % e["type"], l)
        want_delay = None if not e["cause"] else "+%d" % (e["at"] - e["cause"]["at"])
        check(delay == want_delay, what + ": %s delay from its cause" % e["type"], (l, want_delay))


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    data = os.path.join(TMP, "data")
    os.makedirs(TMP)
    broker, brokers = start_broker(data)
    if not check(brokers, "broker started", brokers):
        return

    order_id, user_id, product_id = (str(uuid.uuid4()) for _ in range(3))
    created = event("OrderCreatedEvent", "orders", "orders", order_id,
                    {"orderId": order_id, "userId": user_id, "productId": product_id,
                     "quantity": 1, "createdAt": fmt_time(T0)}, T0)
    reserved = event("ProductReservedEvent", "products", "reservations", order_id,
                     {"orderId": order_id, "userId": user_id, "productId": product_id,
                      "quantity": 1, "unitPrice": 19.99}, T0 + 12, order_id, created)
    paid = event("PaymentProcessedEvent", "payments", "payments", order_id,
                 {"paymentId": str(uuid.uuid4()), "orderId": order_id, "userId": user_id,
                  "amount": 19.99}, T0 + 25, order_id, reserved)
    approved = event("OrderApprovedEvent", "orders", "orders", order_id,
                     {"orderId": order_id, "userId": user_id, "productId": product_id,
                      "quantity": 1, "total": 19.99}, T0 + 40, order_id, paid)
    saga = [created, reserved, paid, approved]

    # Unrelated: another user's rejected order, a product and a registration.
    other_order, other_user = str(uuid.uuid4()), str(uuid.uuid4())
    o_created = event("OrderCreatedEvent", "orders", "orders", other_order,
                      {"orderId": other_order, "userId": other_user, "productId": product_id,
                       "quantity": 99, "createdAt": fmt_time(T0 + 5)}, T0 + 5)
    o_failed = event("ProductReservationFailedEvent", "products", "reservations", other_order,
                     {"orderId": other_order, "userId": other_user, "productId": product_id,
                      "quantity": 99, "reason": "out_of_stock"}, T0 + 9, other_order, o_created)
    o_rejected = event("OrderRejectedEvent", "orders", "orders", other_order,
                       {"orderId": other_order, "userId": other_user, "productId": product_id,
                        "quantity": 99, "reason": "out_of_stock"}, T0 + 14, other_order, o_failed)
    registered = event("UserRegisteredEvent", "users", "users", other_user,
                       {"userId": other_user, "email": "x@example.com", "name": "X",
                        "registeredAt": fmt_time(T0 - 1000)}, T0 - 1000, str(uuid.uuid4()))
    dup_reserved = dict(reserved)  # an outbox may publish an event twice
    dead_paid = dict(paid, topic="payments.DLT",
                     extra=[("tidings_dlt_reason", b"field 'amount' is wrong"),
                            ("tidings_dlt_original_topic", b"tidings.payments"),
                            ("tidings_dlt_original_partition", b"0"),
                            ("tidings_dlt_original_offset", b"0")])

    # Out of causal order, so that only ce_causationid can give the order.
    produce(brokers, [approved, o_rejected, paid, registered, reserved, o_created, created,
                      o_failed, dup_reserved, dead_paid])

    # --- by order id ---
    rc, out, err = run(["trace", order_id, "--data", data])
    check(rc == 0, "trace by order id exits 0", (rc, err))
    check_chain(out, saga, "by order id")
    check(other_order not in out and "UserRegisteredEvent" not in out,
          "unrelated events are left out", out)
    check("dead-lettered to payments.DLT: field 'amount' is wrong" in out,
          "the dead-letter copy annotates its event", out)
    check("published 2x" in out, "the duplicate is shown once, counted", out)

    # --- by the ce_id of the middle event: the same chain ---
    rc, out2, err = run(["trace", "--data", data, reserved["id"]])
    check(rc == 0, "trace by event id exits 0", (rc, err))
    check_chain(out2, saga, "by event id")
    check(out2 == out, "event id and order id give the same output", (out, out2))

    # --- JSON ---
    rc, out, err = run(["trace", order_id, "--json", "--data", data])
    doc = {}
    try:
        doc = json.loads(out)
    except ValueError:
        check(False, "trace --json parses", out)
    groups = doc.get("groups", [])
    check(rc == 0 and len(groups) == 1 and groups[0]["correlationid"] == order_id and
          groups[0]["count"] == 4 and groups[0]["spanMs"] == 40, "trace --json group", doc)
    evs = groups[0]["events"] if groups else []
    check([e["id"] for e in evs] == [e["id"] for e in saga] and
          [e["depth"] for e in evs] == [0, 1, 2, 3] and
          [e["parent"] for e in evs] == [None] + [e["id"] for e in saga[:3]] and
          [e["delayMs"] for e in evs] == [None, 12, 13, 15] and
          [e["topic"] for e in evs] == ["orders", "reservations", "payments", "orders"] and
          evs[2].get("dlt", {}).get("topic") == "payments.DLT" and evs[1]["copies"] == 2 and
          evs[0]["data"] == created["data"], "trace --json events", evs)

    # --- by a user id: the events keyed by it, not the orders that merely
    # carry it in their data ---
    rc, out, err = run(["trace", other_user, "--data", data])
    types = [LINE.match(l).group(4) for l in event_lines(out)]
    check(rc == 0 and types == ["UserRegisteredEvent"], "trace by user id", (rc, out, err))

    # --- by the correlation id of the other order: its three events ---
    rc, out, err = run(["trace", other_order, "--data", data])
    types = [LINE.match(l).group(4) for l in event_lines(out)]
    check(rc == 0 and types == ["OrderCreatedEvent", "ProductReservationFailedEvent",
                                "OrderRejectedEvent"], "trace of another order", (rc, out, err))

    # --- errors ---
    unknown = str(uuid.uuid4())
    rc, out, err = run(["trace", unknown, "--data", data])
    check(rc == 1 and ("no events match " + unknown) in err and out == "",
          "an unknown id exits 1 with a message", (rc, out, err))
    rc, _, err = run(["trace", "--data", data])
    check(rc == 2, "trace without an id exits 2", (rc, err))
    rc, _, err = run(["trace", "a", "b", "--data", data])
    check(rc == 2, "trace with two ids exits 2", (rc, err))
    rc, out, _ = run(["trace", "--help"])
    check(rc == 0 and "ce_causationid" in out, "trace --help", out)

    broker.send_signal(signal.SIGTERM)
    check(broker.wait(timeout=20) == 0, "broker stops with exit 0")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        import traceback
        traceback.print_exc()
        FAILURES.append("exception: %r" % e)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
    if FAILURES:
        print("%d check(s) failed: %s" % (len(FAILURES), ", ".join(FAILURES)))
        sys.exit(1)
    shutil.rmtree(TMP, ignore_errors=True)
    print("all checks passed")
