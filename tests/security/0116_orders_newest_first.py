#!/usr/bin/python3
"""SPEC section 2 (a contract bug the review found): GET /orders lists the
caller's orders newest first, and createdAt never increases down the list,
even for orders placed at the same instant. 300 orders are placed from 12
client threads at once; the whole list (paged) must have createdAt in
non-increasing order, and its seq order must be the order of creation."""
import concurrent.futures
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, http, expect, log, finish  # noqa: E402
from tdharness import System  # noqa: E402

ORDERS = 300
CLIENTS = 12


def main():
    sysm = System("sec-0116", ["users", "orders"], admin=False)
    ok = False
    try:
        sysm.start_all(("users", "orders"))
        _, _, _, token = account(sysm, "Ola")
        product = str(uuid.uuid4())

        def place(_):
            st, body = http("POST", sysm.url("orders", "/orders"), token,
                            {"productId": product, "quantity": 1})
            expect(st, 202, "POST /orders", body)
            return body["orderId"]

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as ex:
            placed = set(ex.map(place, range(ORDERS)))
        assert len(placed) == ORDERS

        listed, after = [], None
        while True:
            path = "/orders?limit=100" + ("&after=" + after if after else "")
            st, page = http("GET", sysm.url("orders", path), token)
            expect(st, 200, "GET " + path, page)
            listed += page["orders"]
            after = page["next"]
            if not after:
                break
        assert {o["orderId"] for o in listed} == placed, "the list is not the orders placed"
        times = [o["createdAt"] for o in listed]
        bad = [(i, times[i], times[i + 1]) for i in range(len(times) - 1) if times[i] < times[i + 1]]
        assert not bad, "createdAt increases down the list at %d places: %s" % (len(bad), bad[:5])
        log("ok   %d concurrent orders listed newest first, createdAt never increasing (%s .. %s)"
            % (len(listed), times[-1], times[0]))
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
