#!/usr/bin/python3
"""Dead letters inspected and redriven through real processes (SPEC
sections 1 and 3, `tidings dlt`).

The payments service starts with a bug (the test fault
consumer.handler_rejects: its first handled event is rejected for good), so
the first order's ProductReservedEvent is dead-lettered and the order stays
PENDING. `tidings dlt list --json` shows it with its reason, original place,
type and key. Payments is then "fixed" (restarted without the fault), and
`tidings dlt redrive --dry-run` publishes nothing; `tidings dlt redrive`
republishes it with tidings_redriven_from (kcat shows the headers), payments
processes it again and the order is APPROVED with exactly one payment. A
second redrive is refused and says when the first was. A dead letter of an
event payments had processed (another consumer's dead letter, made by hand)
is redriven too and changes nothing: still one payment. Without the
consumer side the redriven copy would be a duplicate and the order would
stay PENDING; without the refusal the second redrive would publish again.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, http, expect, wait_for, System, BIN  # noqa: E402

SERVICES = ["users", "products", "orders", "payments", "web"]
WAIT_S = 120


def read_all(brokers, topic):
    """Every record of topic up to its end offsets of now."""
    c = KafkaConsumer(bootstrap_servers=brokers.split(","), enable_auto_commit=False,
                      group_id=None, consumer_timeout_ms=1000)
    try:
        ps = c.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in sorted(ps)]
        if not parts:
            return []
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out = []
        deadline = time.time() + 60
        while any(c.position(tp) < end[tp] for tp in parts):
            if time.time() > deadline:
                raise RuntimeError("reading %s timed out" % topic)
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    if r.offset < end[tp]:
                        out.append(r)
        return out
    finally:
        c.close()


def hdr(rec, name):
    for k, v in rec.headers:
        if k == name:
            return v.decode() if v is not None else None
    return None


def main():
    sysm = System("0043_dlt_redrive", SERVICES)
    ok = False
    try:
        sysm.start_broker()
        brokers = sysm.brokers

        def tidings(*args):
            p = subprocess.run([BIN, *args, "--brokers", brokers], env=sysm.env,
                               capture_output=True, text=True, timeout=120)
            log("tidings %s -> %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
            return p.returncode, p.stdout, p.stderr

        for svc in SERVICES:
            if svc == "payments":
                sysm.env["TIDINGS_FAULT"] = "consumer.handler_rejects:1:error"
            sysm.start(svc)
            sysm.env.pop("TIDINGS_FAULT", None)
        for svc in SERVICES:
            sysm.wait_ready(svc)
        st, body = http("POST", sysm.url("users", "/login"), body={
            "email": "admin@tidings.local", "password": sysm.admin_password})
        expect(st, 200, "admin login", body)
        admin = body["token"]
        st, body = http("POST", sysm.url("products", "/products"), token=admin,
                        body={"title": "Kettle", "price": 20, "quantity": 100})
        expect(st, 201, "POST /products", body)
        pid = body["productId"]
        st, body = http("POST", sysm.url("users", "/users"), body={
            "email": "dlt-buyer@example.com", "password": "correct horse", "name": "Dee"})
        expect(st, 201, "POST /users", body)
        st, body = http("POST", sysm.url("users", "/login"), body={
            "email": "dlt-buyer@example.com", "password": "correct horse"})
        expect(st, 200, "POST /login", body)
        token = body["token"]

        def order(oid):
            st, body = http("GET", sysm.url("orders", "/orders/" + oid), token=token, retry_s=30)
            expect(st, 200, "GET /orders/" + oid, body)
            return body

        # Order A: its reservation is dead-lettered by the buggy payments.
        st, body = http("POST", sysm.url("orders", "/orders"), token=token,
                        body={"productId": pid, "quantity": 1})
        expect(st, 202, "POST /orders A", body)
        a = body["orderId"]

        def dead_letters():
            rc, out, _ = tidings("dlt", "list", "--json")
            assert rc == 0, rc
            return [d for d in json.loads(out) if d["key"] == a] or None
        dl = wait_for("order A's dead letter", dead_letters, WAIT_S, 0.2)
        assert len(dl) == 1, dl
        d = dl[0]
        assert d["dltTopic"] == "tidings.reservations.DLT", d
        assert d["originalTopic"] == "tidings.reservations", d
        assert d["type"] == "ProductReservedEvent", d
        assert "injected fault" in d["reason"], d
        assert isinstance(d["originalPartition"], int) and isinstance(d["originalOffset"], int), d
        assert d["time"], d
        ref = d["ref"]
        assert ref == "%s:%d:%d" % (d["dltTopic"], d["partition"], d["offset"]), d
        assert order(a)["status"] == "PENDING"
        rc, out, _ = tidings("dlt", "list")
        assert rc == 0 and ref in out and "ProductReservedEvent" in out, out
        rc, out, _ = tidings("dlt", "show", ref, "--json")
        assert rc == 0, rc
        whole = json.loads(out)
        assert any(h["name"] == "tidings_dlt_reason" for h in whole["headers"]), whole
        assert json.loads(whole["value"])["orderId"] == a, whole

        # Order B goes through: the bug bit once.
        st, body = http("POST", sysm.url("orders", "/orders"), token=token,
                        body={"productId": pid, "quantity": 2})
        expect(st, 202, "POST /orders B", body)
        b = body["orderId"]
        wait_for("order B approved", lambda: order(b)["status"] == "APPROVED", WAIT_S, 0.2)

        # The fix: a new payments release (no fault).
        sysm.procs["payments"].terminate()
        sysm.procs["payments"].wait(timeout=30)
        sysm.start("payments")
        sysm.wait_ready("payments")

        def redriven_copies(r):
            return [x for x in read_all(brokers, "tidings.reservations")
                    if hdr(x, "tidings_redriven_from") == r]

        rc, out, _ = tidings("dlt", "redrive", ref, "--dry-run")
        assert rc == 0 and "dry run" in out, out
        assert redriven_copies(ref) == [], "a dry run published"
        assert order(a)["status"] == "PENDING"

        rc, out, _ = tidings("dlt", "redrive", ref, "--json")
        assert rc == 0, rc
        res = json.loads(out.splitlines()[0])
        assert res["result"] == "redriven" and res["topic"] == "tidings.reservations", res
        wait_for("order A approved", lambda: order(a)["status"] == "APPROVED", WAIT_S, 0.2)

        copies = redriven_copies(ref)
        assert len(copies) == 1, copies
        c = copies[0]
        assert c.partition == d["originalPartition"], (c.partition, d)
        assert not any(k.startswith("tidings_dlt_") for k, _ in c.headers), c.headers
        assert hdr(c, "ce_id") == d["id"], (c.headers, d)

        # kcat, an independent client, shows the redriven record's headers.
        k = subprocess.run(["kcat", "-b", brokers, "-C", "-t", "tidings.reservations", "-p",
                            str(c.partition), "-o", str(c.offset), "-c", "1", "-e", "-J"],
                           capture_output=True, text=True, timeout=60)
        assert k.returncode == 0, k.stderr
        kj = json.loads(k.stdout.strip().splitlines()[0])
        kh = kj["headers"]
        pairs = dict(zip(kh[0::2], kh[1::2]))
        assert pairs.get("tidings_redriven_from") == ref, kj
        assert pairs.get("ce_id") == d["id"] and "tidings_dlt_reason" not in pairs, kj
        log("kcat: %s" % k.stdout.strip())

        # Exactly one effect: one payment for A.
        pays = [x for x in read_all(brokers, "tidings.payments")
                if json.loads(x.value).get("orderId") == a]
        assert len({hdr(x, "ce_id") for x in pays}) == 1, pays
        st, body = http("GET", sysm.url("payments", "/payments/" + a), token=token)
        expect(st, 200, "GET /payments A", body)

        # A second redrive is refused and says when the first was.
        rc, out, err = tidings("dlt", "redrive", ref)
        assert rc == 1, rc
        assert "redriven already at" in err and re.search(r"\d{4}-\d\d-\d\dT", err), err
        assert len(redriven_copies(ref)) == 1

        # A dead letter of an event that payments had processed (B's
        # reservation, dead-lettered by some other consumer): redriving it
        # changes nothing.
        res_b = [x for x in read_all(brokers, "tidings.reservations")
                 if json.loads(x.value).get("orderId") == b
                 and hdr(x, "ce_type") == "ProductReservedEvent"]
        assert len(res_b) >= 1, res_b
        rb = res_b[0]
        prod = KafkaProducer(bootstrap_servers=brokers.split(","), acks="all")
        md = prod.send("tidings.reservations.DLT", key=rb.key, value=rb.value,
                       headers=list(rb.headers) + [
                           ("tidings_dlt_reason", b"some other consumer failed"),
                           ("tidings_dlt_original_topic", b"tidings.reservations"),
                           ("tidings_dlt_original_partition", str(rb.partition).encode()),
                           ("tidings_dlt_original_offset", str(rb.offset).encode())],
                       ).get(timeout=20)
        prod.close()
        ref_b = "reservations.DLT:%d:%d" % (md.partition, md.offset)  # the short form

        def duplicates():
            with urllib.request.urlopen(sysm.url("payments", "/metrics"), timeout=10) as r:
                text = r.read().decode()
            for line in text.splitlines():
                if (line.startswith("tidings_events_consumed_total{")
                        and 'type="ProductReservedEvent"' in line
                        and 'result="duplicate"' in line):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0
        before = duplicates()
        # This one through the web service, as the event-flow page's button
        # does: admins only.
        st, body = http("GET", sysm.url("web", "/api/dlt"))
        expect(st, 401, "GET /api/dlt anonymous", body)
        st, body = http("GET", sysm.url("web", "/api/dlt"), token=token)
        expect(st, 403, "GET /api/dlt customer", body)
        st, body = http("POST", sysm.url("web", "/api/dlt/redrive"), token=token,
                        body={"ref": ref_b})
        expect(st, 403, "POST /api/dlt/redrive customer", body)
        full_b = "tidings." + ref_b
        st, body = http("GET", sysm.url("web", "/api/dlt"), token=admin)
        expect(st, 200, "GET /api/dlt", body)
        listed = {x["ref"]: x for x in body["deadLetters"]}
        assert ref in listed and full_b in listed, listed.keys()
        assert listed[full_b]["reason"] == "some other consumer failed", listed[full_b]
        st, body = http("POST", sysm.url("web", "/api/dlt/redrive"), token=admin,
                        body={"ref": ref_b, "dryRun": True})
        expect(st, 200, "POST /api/dlt/redrive dry run", body)
        assert body["result"] == "would_redrive" and body["offset"] is None, body
        assert redriven_copies(full_b) == []
        st, body = http("POST", sysm.url("web", "/api/dlt/redrive"), token=admin,
                        body={"ref": ref_b})
        expect(st, 200, "POST /api/dlt/redrive", body)
        assert body["result"] == "redriven", body
        st, body = http("POST", sysm.url("web", "/api/dlt/redrive"), token=admin,
                        body={"ref": ref_b})
        expect(st, 409, "POST /api/dlt/redrive again", body)
        assert "redriven already at" in body["error"]["message"], body
        st, body = http("POST", sysm.url("web", "/api/dlt/redrive"), token=admin,
                        body={"ref": "nonsense"})
        expect(st, 400, "POST /api/dlt/redrive bad ref", body)
        with urllib.request.urlopen(sysm.url("web", "/metrics"), timeout=10) as r:
            metrics = r.read().decode()
        assert 'tidings_dlt_redriven_total{topic="tidings.reservations"} 1' in metrics, \
            [m for m in metrics.splitlines() if "dlt" in m]
        assert len(redriven_copies(full_b)) == 1
        wait_for("payments to see B's redriven copy", lambda: duplicates() > before, WAIT_S,
                 0.2)
        pays_b = [x for x in read_all(brokers, "tidings.payments")
                  if json.loads(x.value).get("orderId") == b]
        assert len({hdr(x, "ce_id") for x in pays_b}) == 1, pays_b
        assert order(b)["status"] == "APPROVED"

        # Every dead letter of the topic at once: both were redriven, so
        # both are refused, and nothing is published.
        rc, out, _ = tidings("dlt", "redrive", "--topic", "reservations", "--all", "--json")
        assert rc == 1, rc
        results = [json.loads(line) for line in out.splitlines()]
        assert sorted(r["ref"] for r in results) == sorted([ref, full_b]), results
        assert all(r["result"] == "refused" and r["redrivenAt"] for r in results), results
        assert len(redriven_copies(ref)) == 1 and len(redriven_copies(full_b)) == 1
        ok = True
    finally:
        codes = sysm.stop()
        if not ok:
            for svc in SERVICES:
                log("%s log:%s" % (svc, sysm.tail(svc, 30)))
        log("exit codes %s" % codes)


if __name__ == "__main__":
    main()
    log("PASS")
