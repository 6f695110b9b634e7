#!/usr/bin/python3
"""SPEC section 5: the data dir is 0700 and every file in it 0600, and no
secret reaches a log line. A data dir left by an older version (0755, a
0644 database and log) is started on with umask 022 and debug logs; after
a user registers, logs in, watches and orders, every directory under the
data dir is 0700 and every file 0600 (databases, their WAL and shm files,
the secret, the brokers file, the logs), and no log holds TIDINGS_SECRET,
the admin's or the shopper's password, or the VAPID private key."""
import json
import os
import secrets
import stat
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from sechelp import account, http, expect, log, finish  # noqa: E402
from tdharness import System  # noqa: E402

SERVICES = ["users", "products", "orders", "notifications"]


def modes(top):
    """(path, mode) of everything under top, top included."""
    out = [(top, stat.S_IMODE(os.stat(top).st_mode), True)]
    for root, dirs, files in os.walk(top):
        for d in dirs:
            p = os.path.join(root, d)
            out.append((p, stat.S_IMODE(os.lstat(p).st_mode), True))
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out.append((p, stat.S_IMODE(st.st_mode), False))
    return out


def main():
    os.umask(0o022)
    sysm = System("sec-0117", SERVICES, env={"TIDINGS_LOG_LEVEL": "debug"})
    os.chmod(sysm.dir, 0o755)
    old_db = os.path.join(sysm.dir, "users.db")
    with open(old_db, "wb"):
        pass
    os.chmod(old_db, 0o644)
    ok = False
    try:
        sysm.start_all(SERVICES)
        uid, email, password, token = account(sysm, "Pia")
        st, body = http("POST", sysm.url("notifications", "/watches"), token,
                        {"productId": str(uuid.uuid4())})
        st, body = http("POST", sysm.url("orders", "/orders"), token,
                        {"productId": str(uuid.uuid4()), "quantity": 1})
        expect(st, 202, "POST /orders", body)
        st, key = http("GET", sysm.url("notifications", "/push/vapid-public-key"))
        time.sleep(1.5)  # the WAL files and the consumers' first commits

        bad = [(p, oct(m)) for p, m, is_dir in modes(sysm.dir)
               if (m != 0o700 if is_dir else m & 0o077)]
        assert not bad, "not private: %s" % bad
        n = len(modes(sysm.dir))
        log("ok   %d paths under the data dir: directories 0700, files 0600 (umask 022, "
            "an old 0755 dir and 0644 database)" % n)

        vapid = None
        import sqlite3
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(sysm.dir, "notifications.db"),
                              uri=True)
        for row in con.execute("SELECT * FROM vapid_keys"):
            vapid = [c for c in row if isinstance(c, (str, bytes))]
        con.close()
        needles = {"TIDINGS_SECRET": sysm.env["TIDINGS_SECRET"],
                   "admin password": sysm.admin_password, "shopper password": password}
        for i, v in enumerate(vapid or []):
            if isinstance(v, bytes):
                v = v.hex()
            if len(v) >= 32:
                needles["vapid column %d" % i] = v
        sysm.stop()
        found = []
        lines = 0
        for name in os.listdir(sysm.dir):
            if not name.endswith(".log"):
                continue
            text = open(os.path.join(sysm.dir, name), "rb").read().decode("utf-8", "replace")
            lines += text.count("\n")
            for what, v in needles.items():
                if v and v in text:
                    found.append((name, what))
        assert lines > 50, "too few log lines to mean anything: %d" % lines
        assert not found, "secrets in logs: %s" % found
        log("ok   %d debug log lines hold none of %s" % (lines, ", ".join(sorted(needles))))
        ok = True
    finally:
        finish(sysm, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
