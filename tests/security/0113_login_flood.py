#!/usr/bin/python3
"""SPEC section 5: password hashing never runs on HTTP threads. A flood of
concurrent wrong logins (argon2id, 64 MiB each) saturates the users
service's hashing pool: while it lasts, /healthz answers every probe in
under 100 ms, and logins beyond what the pool holds get 503 unavailable
with Retry-After at once. Then the per-address limit: failed logins from
one IP count up to 100 within 15 minutes (503s do not count), and every
login after that from that address, even with the right password, gets
429 rate_limited with Retry-After.

The flood runs in a child process of its own (48 threads, two logins each,
all for unknown emails, so the per-email limit never applies), so the
probes are not held up by the client side."""
import http.client
import json
import multiprocessing
import os
import secrets
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, http as jhttp, expect, log, finish  # noqa: E402
from tdharness import System  # noqa: E402

THREADS = 48
EACH = 2
HEALTHZ_BOUND_MS = 100  # the SPEC's


def post_login(port, email, password):
    """(status, Retry-After header, error code)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("POST", "/login", json.dumps({"email": email, "password": password}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        code = None
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            pass
        return r.status, r.getheader("Retry-After"), code
    finally:
        c.close()


def flood(port, out):
    results = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def one():
        start.wait()
        for _ in range(EACH):
            res = post_login(port, "nobody-%s@example.com" % secrets.token_hex(6), "wrong-pass")
            with lock:
                results.append(res)

    ts = [threading.Thread(target=one) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(results)


def probe(port):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    finally:
        c.close()
    return (time.monotonic() - t0) * 1000


def main():
    sysm = System("sec-0113", ["users"], admin=False)
    ok = False
    try:
        sysm.start_broker()
        sysm.start("users")
        sysm.wait_ready("users")
        port = sysm.ports["users"]
        _, email, password, _ = account(sysm, "Olga")  # one success: clears its own failure

        out = multiprocessing.Queue()
        child = multiprocessing.Process(target=flood, args=(port, out))
        child.start()
        probes = []
        time.sleep(0.3)  # the flood is under way
        while child.is_alive() and out.empty():
            probes.append(probe(port))
            time.sleep(0.05)
        results = out.get(timeout=300)
        child.join()
        assert len(probes) >= 5, "only %d probes during the flood" % len(probes)
        worst = max(probes)
        log("/healthz during the flood: %d probes, median %.1f ms, max %.1f ms"
            % (len(probes), sorted(probes)[len(probes) // 2], worst))
        assert worst < HEALTHZ_BOUND_MS, "a /healthz probe took %.1f ms: %s" % (worst, probes)

        statuses = [s for s, _, _ in results]
        unavailable = [(s, ra, code) for s, ra, code in results if s == 503]
        failed = statuses.count(401)
        log("flood: %d x 401, %d x 503, others %s" % (
            failed, len(unavailable), sorted(set(statuses) - {401, 503})))
        assert unavailable, "the pool never answered 503: %s" % statuses
        for s, ra, code in unavailable:
            assert code == "unavailable" and ra and ra.isdigit() and int(ra) >= 1, (s, ra, code)
        assert set(statuses) <= {401, 503, 429}, statuses
        log("ok   a saturated pool answers 503 unavailable with Retry-After")

        # The per-address limit: 100 failures, then 429 for every login.
        limited = None
        for _ in range(200):
            s, ra, code = post_login(port, "nobody-%s@example.com" % secrets.token_hex(6),
                                     "wrong-pass")
            if s == 401:
                failed += 1
            elif s == 429:
                limited = (s, ra, code)
                break
            elif s != 503:
                raise AssertionError("login: HTTP %d %s" % (s, code))
        assert limited, "no 429 after %d failed logins from one address" % failed
        assert failed == 100, "429 after %d failed logins, want after 100" % failed
        assert limited[2] == "rate_limited" and limited[1] and int(limited[1]) >= 1, limited
        s, ra, code = post_login(port, email, password)
        assert s == 429 and code == "rate_limited" and ra, (s, ra, code)
        log("ok   after 100 failed logins from one address, every login gets 429 (Retry-After %s)"
            % ra)
        st, body = jhttp("GET", sysm.url("users", "/healthz"))
        expect(st, 200, "/healthz", body)
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
