#!/usr/bin/python3
"""Safe retries through real processes (SPEC section 2, "Safe retries"):
50 clients place orders with an Idempotency-Key each and retry with the same
key until they get an answer, while the orders service is killed with
kill -9 and started again. Afterwards there is exactly one order per key,
every repeat of a key (also those after the restart) got the first answer
byte for byte, and the same key with another body gets 422
idempotency_key_mismatch. Without the feature every retry that reached the
service would have placed another order.
"""
import concurrent.futures
import http.client as httpclient
import json
import os
import secrets
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, http, expect, System  # noqa: E402

CLIENTS = 50
ORDERS_PER_CLIENT = 4
SERVICES = ["users", "products", "orders"]


def post_raw(port, path, token, body, key):
    """(status, raw body bytes) or None when no answer came (refused,
    reset: the service is down or died mid-request)."""
    try:
        c = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if token:
            headers["Authorization"] = "Bearer " + token
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, raw
    except (ConnectionError, OSError, httpclient.HTTPException):
        return None


def main():
    sysm = System("0042_idempotent_orders", SERVICES)
    ok = False
    try:
        sysm.start_all(SERVICES)
        st, body = http("POST", sysm.url("users", "/login"), body={
            "email": "admin@tidings.local", "password": sysm.admin_password})
        expect(st, 200, "admin login", body)
        admin = body["token"]
        st, body = http("POST", sysm.url("products", "/products"), token=admin,
                        body={"title": "Mug", "price": 3, "quantity": 100000})
        expect(st, 201, "POST /products", body)
        pid = body["productId"]
        users = []
        for i in range(5):
            email = "retry%d-%s@example.com" % (i, secrets.token_hex(3))
            st, body = http("POST", sysm.url("users", "/users"),
                            body={"email": email, "password": "correct horse", "name": "R%d" % i})
            expect(st, 201, "POST /users", body)
            st, body = http("POST", sysm.url("users", "/login"),
                            body={"email": email, "password": "correct horse"})
            expect(st, 200, "POST /login", body)
            users.append({"id": body["userId"], "token": body["token"]})

        # A registration (its password hashed on another thread) is kept
        # with its key too: the repeat gets the first 201, not 409 "taken".
        reg = json.dumps({"email": "keyed-%s@example.com" % secrets.token_hex(3),
                          "password": "correct horse", "name": "Keyed"})
        r1 = post_raw(sysm.ports["users"], "/users", "", reg, "register-1")
        r2 = post_raw(sysm.ports["users"], "/users", "", reg, "register-1")
        assert r1 is not None and r1[0] == 201, r1
        assert r2 == r1, (r1, r2)

        port = sysm.ports["orders"]
        answers = {}  # key -> list of (status, raw) of every answer
        lock = threading.Lock()
        progress = threading.Condition()
        got = [0]
        lost = [0]  # tries that got no answer (the kill)

        def client(c):
            user = users[c % len(users)]
            for n in range(ORDERS_PER_CLIENT):
                key = "order-%d-%d-%s" % (c, n, uuid.uuid4())
                body = json.dumps({"productId": pid, "quantity": 1 + (c + n) % 3})
                mine = []
                deadline = time.time() + 180
                # Retry until a 202: no answer (down, died mid-request), 5xx,
                # or 409 (the first try still running) all mean "try again".
                while True:
                    a = post_raw(port, "/orders", user["token"], body, key)
                    if a is None:
                        with lock:
                            lost[0] += 1
                    else:
                        mine.append(a)
                        if a[0] == 202:
                            break
                        if a[0] not in (409, 500, 503):
                            raise AssertionError("key %s: HTTP %d %r" % (key, a[0], a[1]))
                    if time.time() > deadline:
                        raise AssertionError("key %s: no 202 within 180 s: %r" % (key, mine))
                    time.sleep(0.05)
                # One more repeat at once: the same answer.
                a = post_raw(port, "/orders", user["token"], body, key)
                if a is not None:
                    mine.append(a)
                with lock:
                    answers[key] = {"user": user, "body": body, "answers": mine}
                with progress:
                    got[0] += 1
                    progress.notify_all()

        with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            futures = [pool.submit(client, c) for c in range(CLIENTS)]
            with progress:
                progress.wait_for(lambda: got[0] >= CLIENTS, timeout=120)
            log("kill -9 orders after %d keys answered" % got[0])
            sysm.kill9("orders")
            time.sleep(0.5)
            sysm.start("orders")
            for f in futures:
                f.result()
        sysm.wait_ready("orders", timeout=120)
        log("%d keys answered; %d tries got no answer" % (len(answers), lost[0]))
        assert len(answers) == CLIENTS * ORDERS_PER_CLIENT

        # After the restart every key still gets its first answer, byte for byte.
        for key, a in answers.items():
            again = post_raw(port, "/orders", a["user"]["token"], a["body"], key)
            assert again is not None, key
            a["answers"].append(again)
            first = next(x for x in a["answers"] if x[0] == 202)
            for x in a["answers"][a["answers"].index(first):]:
                if x != first:
                    raise AssertionError("key %s: answer %r differs from the first %r"
                                         % (key, x, first))
            a["orderId"] = json.loads(first[1])["orderId"]

        # Exactly one order per key: every order of these users is one of the
        # keys' orders, and no two keys share one.
        by_key = {a["orderId"] for a in answers.values()}
        assert len(by_key) == len(answers), "two keys got one order"
        total = 0
        for u in users:
            st, body = http("GET", sysm.url("orders", "/orders?limit=500"), token=u["token"])
            expect(st, 200, "GET /orders", body)
            for o in body["orders"]:
                if o["orderId"] not in by_key:
                    raise AssertionError("order %s belongs to no key (a retry placed it "
                                         "twice)" % o["orderId"])
            total += len(body["orders"])
        assert total == len(answers), "%d orders for %d keys" % (total, len(answers))

        # The same key with another body: 422, and no order.
        key, a = next(iter(answers.items()))
        other = json.dumps({"productId": pid, "quantity": 7})
        st, raw = post_raw(port, "/orders", a["user"]["token"], other, key)
        assert st == 422, (st, raw)
        assert json.loads(raw)["error"]["code"] == "idempotency_key_mismatch", raw
        st, body = http("GET", sysm.url("orders", "/orders?limit=500"), token=a["user"]["token"])
        assert sum(1 for o in body["orders"] if o["quantity"] == 7) == 0, body
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
