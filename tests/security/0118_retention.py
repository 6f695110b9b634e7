#!/usr/bin/python3
"""SPEC section 1 and 5: tables do not grow forever. With
TIDINGS_INBOX_RETENTION_MS=2000, the inbox rows that the notifications and
orders services keep for deduplication are deleted a few seconds after the
events were processed, by the services themselves, and /metrics counts
them in tidings_retention_deleted_total{table="td_inbox"}. Events that
arrive afterwards are still processed once (the service keeps working)."""
import os
import re
import sqlite3
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, log, finish, wait_inbox  # noqa: E402
from tdharness import System  # noqa: E402

SERVICES = ["users", "notifications"]


def inbox_rows(sysm, svc):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(sysm.dir, svc + ".db"), uri=True)
    try:
        return con.execute("SELECT count(*) FROM td_inbox").fetchone()[0]
    finally:
        con.close()


def deleted_metric(sysm, svc):
    with urllib.request.urlopen(sysm.url(svc, "/metrics"), timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^tidings_retention_deleted_total\{table="td_inbox"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def wait(cond, what, timeout=30):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.2)


def main():
    sysm = System("sec-0118", SERVICES, env={"TIDINGS_INBOX_RETENTION_MS": "2000"})
    ok = False
    try:
        sysm.start_all(SERVICES)
        _, _, _, token = account(sysm, "Ria")
        wait_inbox(sysm, token, 1)
        wait(lambda: inbox_rows(sysm, "notifications") > 0, "the inbox to hold the events")
        seen = inbox_rows(sysm, "notifications")
        wait(lambda: inbox_rows(sysm, "notifications") == 0, "retention to empty the inbox")
        n = deleted_metric(sysm, "notifications")
        assert n >= seen, "metric says %s deleted, the inbox had %d" % (n, seen)
        log("ok   %d inbox rows deleted by retention (metric %g)" % (seen, n))
        _, _, _, token2 = account(sysm, "Sol")
        wait_inbox(sysm, token2, 1)
        log("ok   the service goes on consuming after its inbox was pruned")
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
