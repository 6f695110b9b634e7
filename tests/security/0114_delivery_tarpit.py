#!/usr/bin/python3
"""SPEC section 5: one user's slow endpoints never delay anyone else's
deliveries. Mallory has 20 webhooks at a tarpit (a local server that
accepts connections and never answers; plain http on loopback through
TIDINGS_ALLOW_HTTP_ENDPOINTS=1); her sign-in queues 20 deliveries there.
While they hang, at most 2 connections to that host are ever open, and
Bob's webhook for his own sign-in arrives within 2 s."""
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import (account, http, expect, log, finish, login, wait_inbox,  # noqa: E402
                     Receiver, Tarpit)
from tdharness import System  # noqa: E402

HOOKS = 20
BOUND_S = 2.0  # the test's bound on Bob's delivery


def add_hook(sysm, token, url):
    st, body = http("POST", sysm.url("notifications", "/webhooks"), token, {
        "url": url, "secret": "whsec-" + secrets.token_hex(8), "events": ["UserLoggedInEvent"]})
    expect(st, 201, "webhook " + url, body)


def main():
    pit = Tarpit()
    rcv = Receiver()
    sysm = System("sec-0114", ["users", "notifications"], {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
    }, admin=False)
    ok = False
    try:
        sysm.start_all(("users", "notifications"))
        _, m_email, m_password, mallory = account(sysm, "Mallory")
        _, b_email, b_password, bob = account(sysm, "Bob")
        wait_inbox(sysm, mallory, 2)
        wait_inbox(sysm, bob, 2)
        for i in range(HOOKS):
            add_hook(sysm, mallory, "%s/hook-%d" % (pit.base, i))
        add_hook(sysm, bob, rcv.base + "/bob")

        login(sysm, m_email, m_password)
        deadline = time.time() + 30
        while pit.count() < 2:
            if time.time() > deadline:
                raise AssertionError("the tarpit got %d connections" % pit.count())
            time.sleep(0.05)
        time.sleep(0.5)  # give a third connection the chance to show up
        log("tarpit holds %d connections for Mallory's %d deliveries" % (pit.count(), HOOKS))

        t0 = time.time()
        login(sysm, b_email, b_password)
        path, headers, body, at = rcv.next(timeout=30)
        took = at - t0
        assert path == "/bob", path
        log("Bob's webhook arrived %.2f s after his sign-in" % took)
        assert took < BOUND_S, "Bob's webhook took %.2f s" % took
        assert pit.count() <= 2, "%d connections to one host" % pit.count()
        log("ok   the tarpit held at most 2 deliveries and delayed nobody else")
        ok = True
    finally:
        finish(sysm, ok, [pit, rcv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
