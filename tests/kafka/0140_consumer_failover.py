"""Consumer failover on the real cluster (issue 15): two instances of the
notifications service on one notifications.db form one consumer group
(tidings-notifications) and share the partitions of the topics they
consume. While users register and sign in, one instance is killed (kill -9,
so it never leaves the group); the other takes its partitions once the
group's session times out, and in the end every user has exactly one
welcome and one sign-in notification (seq 1, 2), read from the instance
that lived: nothing lost, nothing doubled."""
import concurrent.futures
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ktier  # noqa: E402
from tdharness import System, expect, http, log  # noqa: E402

USERS = 120
GROUP = "tidings-notifications"
SETTLE_S = 120


def assignment(sysm, name):
    """The partitions the rule consumer of process name holds now,
    according to its log's last assignment line, or None."""
    pat = re.compile(r"consumer %s: assigned (\d+) partitions" % re.escape(GROUP))
    last = None
    with open(os.path.join(sysm.dir, name + ".log")) as f:
        for line in f:
            msg = json.loads(line).get("msg", "") if line.startswith("{") else line
            m = pat.search(msg)
            if m:
                last = int(m.group(1))
            elif "consumer %s: revoked" % GROUP in msg:
                last = 0
    return last


def wait_for(what, fn, timeout):
    deadline = time.time() + timeout
    while not fn():
        if time.time() > deadline:
            raise AssertionError("not within %d s: %s" % (timeout, what))
        time.sleep(0.2)


def main():
    os.environ["TIDINGS_TEST_KAFKA"] = "plaintext"
    ktier.cluster()
    sysm = System("k-0140", ["users", "notifications"], {"TIDINGS_LOG_FORMAT": "json"})
    ok = False
    try:
        sysm.start_broker()
        sysm.start("users")
        sysm.wait_ready("users")
        sysm.start("notifications")
        sysm.wait_ready("notifications")
        sysm.start("notifications", name="notifications-b")
        sysm.wait_ready("notifications-b")
        # Both members hold partitions before anything happens.
        wait_for("both instances assigned partitions", lambda: (
            (assignment(sysm, "notifications") or 0) > 0 and
            (assignment(sysm, "notifications-b") or 0) > 0), 60)
        a, b = assignment(sysm, "notifications"), assignment(sysm, "notifications-b")
        log("group %s: %d + %d partitions" % (GROUP, a, b))

        users, lock, done = [], threading.Lock(), threading.Event()

        def one(i):
            email = "cf%d-%s@example.com" % (i, secrets.token_hex(3))
            st, body = http("POST", sysm.url("users", "/users"),
                            body={"email": email, "password": "long enough %d" % i,
                                  "name": "CF %d" % i})
            expect(st, 201, "POST /users", body)
            st, body = http("POST", sysm.url("users", "/login"),
                            body={"email": email, "password": "long enough %d" % i})
            expect(st, 200, "POST /login", body)
            with lock:
                users.append({"id": body["userId"], "token": body["token"]})
                if len(users) == USERS // 3:
                    done.set()
            time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(one, i) for i in range(USERS)]
            done.wait(120)
            log("kill -9 notifications-b after %d users" % len(users))
            sysm.kill9("notifications-b")
            t_kill = time.time()
            for f in futures:
                f.result()
        log("%d users registered and signed in" % len(users))

        total = a + b
        wait_for("the survivor holds all %d partitions" % total,
                 lambda: assignment(sysm, "notifications") == total, 60)
        log("ok   the survivor took all %d partitions %.1f s after the kill" %
            (total, time.time() - t_kill))

        def inbox(u):
            st, body = http("GET", sysm.url("notifications", "/notifications?limit=50"),
                            token=u["token"])
            expect(st, 200, "GET /notifications", body)
            return body["notifications"]

        deadline = time.time() + SETTLE_S
        while True:
            bad = []
            for u in users:
                ns = inbox(u)
                types = sorted(n["type"] for n in ns)
                if types != ["UserLoggedInEvent", "UserRegisteredEvent"] or \
                        sorted(n["seq"] for n in ns) != [1, 2]:
                    bad.append((u["id"], types, [n["seq"] for n in ns]))
            if not bad:
                break
            assert all(len(t) <= 2 for _, t, _ in bad), "doubled: %s" % bad[:3]
            if time.time() > deadline:
                raise AssertionError("%d users' inboxes wrong after %d s: %s" %
                                     (len(bad), SETTLE_S, bad[:3]))
            time.sleep(1)
        log("ok   %d users, each with exactly one welcome and one sign-in (seq 1, 2)" %
            len(users))
        ok = True
    finally:
        codes = sysm.stop()
        codes.pop("notifications-b", None)  # killed
        if ok and any(codes.values()):
            ok = False
            log("exit codes: %s" % codes)
        if ok:
            shutil.rmtree(sysm.dir, ignore_errors=True)
        else:
            for n in sysm.procs:
                sys.stderr.write("---- %s log:%s\n" % (n, sysm.tail(n, 30)))
    if not ok:
        sys.exit(1)
    log("PASS")


if __name__ == "__main__":
    main()
