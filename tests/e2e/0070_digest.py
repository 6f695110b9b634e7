#!/usr/bin/python3
"""Digests end to end: `tidings broker`, `users` and `notifications` with
email to an SMTP server on loopback (python3-aiosmtpd), a digest "minute"
shortened to 4 s (TIDINGS_TEST_DIGEST_MINUTE_MS, test builds only).

digestMinutes is refused outside 0..1440 and returned by GET /preferences.
With digestMinutes=1 and email on, a burst of 5 sign-ins sends the first
email at once; the other 4 are held (the digest's delivery shows held)
and arrive as exactly one email "4 new notifications" listing their
titles and linking to the inbox, when the window ends. The inbox has all
5. No further email follows.
"""
import os
import secrets
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import (log, expect, http_text, wait_for, SmtpHandler, start_smtp,  # noqa: E402
                       System)

SERVICES = ["users", "notifications"]
WAIT_S = 30
MINUTE_MS = 4000


def main():
    handler = SmtpHandler()
    ctl, port = start_smtp(handler)
    sysm = System("e2e-0070", SERVICES, {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_SMTP_URL": "smtp://127.0.0.1:%d" % port,
        "TIDINGS_TEST_DIGEST_MINUTE_MS": str(MINUTE_MS),
    }, admin=False)
    ok = False
    try:
        sysm.start_broker()
        for svc in SERVICES:
            sysm.start(svc)
        for svc in SERVICES:
            sysm.wait_ready(svc)
        nurl = lambda path: sysm.url("notifications", path)  # noqa: E731
        addr = "digest-%s@example.com" % secrets.token_hex(4)
        pw = "pw-" + secrets.token_hex(8)
        st, _, raw = http_text("POST", sysm.url("users", "/users"),
                          body={"email": addr, "password": pw, "name": "Dora"})
        expect(st, 201, "register", raw)

        def login():
            st, body, raw = http_text("POST", sysm.url("users", "/login"),
                                 body={"email": addr, "password": pw})
            expect(st, 200, "login", raw)
            return body["token"]
        token = login()
        inbox = lambda: http_text("GET", nurl("/notifications"), token)[1]["notifications"]  # noqa
        wait_for("welcome and sign-in", lambda: len(inbox()) >= 2)

        st, prefs, raw = http_text("GET", nurl("/preferences"), token)
        assert prefs["digestMinutes"] == 0, prefs
        for bad in (-1, 1441, "5", 1.5):
            st, _, raw = http_text("PUT", nurl("/preferences"), token, {"digestMinutes": bad})
            expect(st, 400, "digestMinutes %r" % (bad,), raw)
        st, prefs, raw = http_text("PUT", nurl("/preferences"), token, {
            "digestMinutes": 1, "channels": {"email": {"enabled": True}}})
        expect(st, 200, "PUT digestMinutes", raw)
        assert prefs["digestMinutes"] == 1, prefs
        st, prefs, raw = http_text("GET", nurl("/preferences"), token)
        assert prefs["digestMinutes"] == 1 and prefs["channels"]["email"]["enabled"], prefs
        log("ok   digestMinutes validated, stored and returned")

        t0 = time.time()
        for _ in range(5):
            login()
        wait_for("the burst in the inbox", lambda: len(inbox()) >= 7)
        mail = handler.got.get(timeout=WAIT_S)
        first_at, first = mail.at, mail.message()
        assert first["Subject"] == "New sign-in to your account", first["Subject"]
        assert first_at - t0 < MINUTE_MS / 1000.0, "the first email waited"
        log("ok   the first of the burst went out at once")

        # The other four wait in one held delivery.
        burst = inbox()[:5]
        def held():
            for n in burst:
                st, full, raw = http_text("GET", nurl("/notifications/" + n["id"]), token)
                for d in full["deliveries"]:
                    if d["channel"] == "email" and d["status"] == "held":
                        return d
            return None
        if time.time() - t0 < MINUTE_MS / 1000.0 - 0.5:
            d = wait_for("a held digest", held, timeout=2)
            assert d["target"] == addr, d
        assert handler.got.empty(), "a second email inside the window"

        mail = handler.got.get(timeout=WAIT_S)
        at, digest = mail.at, mail.message()
        assert at - t0 >= MINUTE_MS / 1000.0 - 0.5, "the digest came early (%.1f s)" % (at - t0)
        assert digest["Subject"] == "4 new notifications", digest["Subject"]
        text = digest.get_body(("plain",)).get_content()
        assert text.count("New sign-in to your account") == 4, text
        assert "#notifications" in text, text
        assert digest["List-Unsubscribe"], digest
        log("ok   one digest email: %r after %.1f s" % (digest["Subject"], at - t0))

        time.sleep(MINUTE_MS / 1000.0 + 1)
        assert handler.got.empty(), "more email after the digest"
        assert len(inbox()) == 7, inbox()
        log("ok   inbox has all 5 of the burst; no other email")
        ok = True
    finally:
        ctl.stop()
        sysm.stop()
        if ok:
            shutil.rmtree(sysm.dir, ignore_errors=True)
        else:
            for name in sysm.procs:
                log("---- %s log:%s" % (name, sysm.tail(name, 30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
