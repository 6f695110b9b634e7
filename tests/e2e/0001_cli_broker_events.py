#!/usr/bin/python3
"""End-to-end: `tidings broker` and `tidings events`, checked with an
independent Kafka client (python3-kafka).

The broker prints its bootstrap list and leaves it in <data>/brokers; records
written by python (valid CloudEvents and garbage) come back decoded from
`tidings events`, readable and as JSON; a live `tidings events` sees a record
written after it started; the error paths exit with the documented codes; and
SIGTERM stops the broker cleanly, removing the brokers file."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

from kafka import KafkaProducer

BIN = os.environ["TIDINGS_BIN"]
TMP = os.path.join(os.environ.get("TIDINGS_TEST_TMP", "/tmp"), "e2e-0001-cli-%d" % os.getpid())
PROCS = []
FAILURES = []


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
    e["TIDINGS_LOG_LEVEL"] = "info"
    return e


def run(args, timeout=60):
    """Runs tidings to completion: (exit code, stdout, stderr)."""
    p = subprocess.run([BIN] + args, env=env(), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


class Proc:
    """A long-running tidings process whose output lines are collected by
    threads, so that waiting for a line has a timeout."""

    def __init__(self, args):
        self.p = subprocess.Popen([BIN] + args, env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        PROCS.append(self.p)
        self.out = queue.Queue()
        self.err_lines = []
        threading.Thread(target=self._pump, args=(self.p.stdout, self.out.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.p.stderr, self.err_lines.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, put):
        for line in stream:
            put(line.rstrip("\n"))

    def line(self, timeout):
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_stderr(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in l for l in list(self.err_lines)):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, sig, timeout=20):
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


def cloudevent(etype, service, key, data, corr=None, cause=None):
    eid = str(uuid.uuid4())
    now = time.time()
    ce_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (int(now * 1000) % 1000)
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", eid.encode()),
        ("ce_source", ("/tidings/" + service).encode()),
        ("ce_type", etype.encode()),
        ("ce_time", ce_time.encode()),
        ("ce_subject", key.encode()),
        ("content-type", b"application/json"),
        ("ce_correlationid", (corr or key).encode()),
        ("traceparent", ("00-%s-%s-01" % (uuid.uuid4().hex, uuid.uuid4().hex[:16])).encode()),
    ]
    if cause:
        headers.append(("ce_causationid", cause.encode()))
    return {"id": eid, "type": etype, "key": key, "data": data, "headers": headers,
            "source": "/tidings/" + service, "time": ce_time, "corr": corr or key, "cause": cause}


def produce(brokers, topic, records):
    prod = KafkaProducer(bootstrap_servers=brokers.split(","), acks="all", max_block_ms=20000)
    try:
        for r in records:
            prod.send(topic, key=r["key_bytes"], value=r["value_bytes"],
                      headers=r["headers"]).get(timeout=20)
    finally:
        prod.close(timeout=10)


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    data = os.path.join(TMP, "data")
    os.makedirs(TMP)

    # --- the command line around the subcommands ---
    rc, out, _ = run(["help"])
    check(rc == 0 and "tidings events" in out and "tidings trace" in out, "tidings help", out)
    rc, out, _ = run(["version"])
    check(rc == 0 and out.startswith("tidings "), "tidings version", out)
    rc, _, err = run(["no-such-command"])
    check(rc == 2 and "unknown command" in err, "unknown command exits 2", (rc, err))
    rc, out, _ = run(["broker", "--help"])
    check(rc == 0 and "--count" in out, "broker --help", out)
    rc, out, _ = run(["events", "--help"])
    check(rc == 0 and "--from-beginning" in out and "--follow" in out, "events --help", out)
    for bad in ("0", "17", "x", "3x"):
        rc, _, err = run(["broker", "--count", bad, "--data", data])
        check(rc == 2 and "--count" in err, "broker --count %s exits 2" % bad, (rc, err))
    rc, _, err = run(["events", "--data", os.path.join(TMP, "empty")])
    check(rc == 1 and "no Kafka brokers" in err, "events without any broker exits 1", (rc, err))
    rc, _, err = run(["events", "--no-such-flag"])
    check(rc == 2, "events with an unknown flag exits 2", (rc, err))

    # --- the broker ---
    broker = Proc(["broker", "--count", "3", "--data", data])
    brokers = broker.line(60)
    if not check(brokers is not None and brokers.count(",") == 2 and "127.0.0.1:" in brokers,
                 "broker prints a bootstrap list of 3", (brokers, broker.err_lines)):
        return
    with open(os.path.join(data, "brokers")) as f:
        check(f.read().strip() == brokers, "broker writes <data>/brokers")
    check(broker.wait_stderr("embedded broker ready", 10), "broker logs that it is ready")

    # --- records from an independent client ---
    order_id = str(uuid.uuid4())
    user_id = str(uuid.uuid4())
    created = cloudevent("OrderCreatedEvent", "orders", order_id,
                         {"orderId": order_id, "userId": user_id, "productId": str(uuid.uuid4()),
                          "quantity": 2, "createdAt": "2026-01-01T00:00:00.000Z"})
    approved = cloudevent("OrderApprovedEvent", "orders", order_id,
                          {"orderId": order_id, "userId": user_id, "productId": "p",
                           "quantity": 2, "total": 19.99}, cause=created["id"])
    for e in (created, approved):
        e["key_bytes"] = e["key"].encode()
        e["value_bytes"] = json.dumps(e["data"]).encode()
    garbage = {"key_bytes": b"junk-key", "value_bytes": b"\xff\x00 not json\n", "headers": []}
    wrong_version = dict(created)
    wrong_version["headers"] = [(k, b"0.3" if k == "ce_specversion" else v)
                                for k, v in created["headers"]]
    produce(brokers, "tidings.orders", [created, approved, garbage, wrong_version])

    # --- readable lines ---
    rc, out, err = run(["events", "--topic", "orders", "--from-beginning", "--data", data], 60)
    lines = out.splitlines()
    check(rc == 0 and len(lines) == 4, "events --from-beginning prints the 4 records and exits",
          (rc, out, err))
    by_id = {}
    for l in lines:
        for e in (created, approved):
            if "id=" + e["id"] in l and "INVALID" not in l:
                by_id[e["id"]] = l
    for e in (created, approved):
        l = by_id.get(e["id"], "")
        check(e["type"] in l and ("key=" + order_id) in l and l.startswith(e["time"]) and
              " orders " in l and '"orderId":"%s"' % order_id in l,
              "readable line of %s" % e["type"], l)
    bad = [l for l in lines if "INVALID" in l]
    check(len(bad) == 2, "both invalid records are flagged INVALID", lines)
    check(any("junk-key" in l and "ce_specversion" in l for l in bad) or
          any("junk-key" in l and "missing" in l for l in bad),
          "the garbage record shows its key and the reason", bad)
    check(any("0.3" in l for l in bad), "the wrong specversion is the reason", bad)
    check(all("\n" not in l and "\x00" not in l for l in lines), "one line per record")

    # --- JSON lines ---
    rc, out, err = run(["events", "--topic", "orders", "--from-beginning", "--json",
                        "--data", data], 60)
    objs = []
    try:
        objs = [json.loads(l) for l in out.splitlines()]
    except ValueError as e:
        check(False, "--json lines parse", (e, out))
    check(rc == 0 and len(objs) == 4, "events --json prints 4 objects", (rc, out, err))
    keys = {"time", "topic", "partition", "offset", "key", "id", "type", "source", "subject",
            "correlationid", "causationid", "traceparent", "data"}
    for e in (created, approved):
        o = next((o for o in objs if o.get("id") == e["id"] and "error" not in o), None)
        if not check(o is not None, "JSON object for %s" % e["type"], objs):
            continue
        hdr = dict(e["headers"])
        check(keys <= set(o) and o["topic"] == "orders" and o["key"] == order_id and
              o["type"] == e["type"] and o["source"] == e["source"] and
              o["subject"] == order_id and o["correlationid"] == order_id and
              o["causationid"] == e["cause"] and o["time"] == e["time"] and
              o["traceparent"] == hdr["traceparent"].decode() and o["data"] == e["data"] and
              isinstance(o["partition"], int) and isinstance(o["offset"], int),
              "JSON fields of %s" % e["type"], o)
    errs = [o for o in objs if "error" in o]
    check(len(errs) == 2 and all(o["error"] for o in errs), "invalid records carry error", errs)
    junk = next((o for o in errs if o.get("key") == "junk-key"), None)
    check(junk is not None and junk["id"] is None and junk["data"] is None and
          "not json" in junk.get("value", ""), "garbage record as JSON", junk)
    wrong = next((o for o in errs if o.get("id") == created["id"]), None)
    check(wrong is not None and wrong["type"] == "OrderCreatedEvent" and
          wrong["data"] == created["data"], "a bad envelope still shows its headers", wrong)

    # All topics by default, and a short .DLT name.
    rc, out, _ = run(["events", "--from-beginning", "--data", data], 60)
    check(rc == 0 and len(out.splitlines()) == 4, "events without --topic reads every topic", out)
    rc, out, err = run(["events", "--topic", "orders.DLT", "--from-beginning", "--data", data])
    check(rc == 0 and out == "", "events --topic orders.DLT (empty) exits 0", (rc, out, err))
    rc, out, err = run(["events", "--topic", "orders", "--from-beginning", "--brokers", brokers,
                        "--data", os.path.join(TMP, "empty")], 60)
    check(rc == 0 and len(out.splitlines()) == 4, "--brokers instead of the data dir", (rc, err))

    # Unknown topic.
    rc, out, err = run(["events", "--topic", "nosuch", "--from-beginning", "--data", data])
    check(rc == 1 and "unknown topic" in err and "nosuch" in err, "unknown topic exits 1",
          (rc, err))

    # --- live: only what comes after the start, until SIGINT ---
    live = Proc(["events", "--topic", "orders", "--json", "--data", data])
    check(live.wait_stderr("following live", 30), "live events starts", live.err_lines)
    later = cloudevent("OrderRejectedEvent", "orders", order_id,
                       {"orderId": order_id, "userId": user_id, "productId": "p", "quantity": 2,
                        "reason": "limit_exceeded"}, cause=created["id"])
    later["key_bytes"] = order_id.encode()
    later["value_bytes"] = json.dumps(later["data"]).encode()
    produce(brokers, "tidings.orders", [later])
    l = live.line(30)
    got = json.loads(l) if l else {}
    check(got.get("id") == later["id"] and got.get("type") == "OrderRejectedEvent",
          "live events shows a new event and not the history", l)
    check(live.line(1) is None, "live events shows nothing else")
    check(live.stop(signal.SIGINT) == 0, "SIGINT ends events with exit 0")

    # --- stopping the broker ---
    rc = broker.stop(signal.SIGTERM)
    check(rc == 0, "SIGTERM stops the broker with exit 0", rc)
    check(not os.path.exists(os.path.join(data, "brokers")), "the broker removes <data>/brokers")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is a failure, with the processes cleaned up below
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
