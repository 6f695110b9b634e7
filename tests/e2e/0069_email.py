#!/usr/bin/python3
"""The email channel end to end with real processes: `tidings broker`,
`users` and `notifications` with TIDINGS_SMTP_URL pointing at an SMTP
server on loopback (python3-aiosmtpd; TIDINGS_ALLOW_HTTP_ENDPOINTS=1 lets
the SMTP host be loopback, as it does for webhooks and push).

A name that holds CR/LF and a header is refused at registration (the
message builder strips them anyway: tests/unit/runtime/test_email.c). A user enables
channels.email and signs in: the server receives one message for the
account address, which Python's `email` package reads as
multipart/alternative with a text/plain and a text/html part, a
Message-ID, a Date, List-Unsubscribe and List-Unsubscribe-Post
(RFC 8058), and no Bcc. GET /notifications/{id}
shows the email delivery sent. The signed link: GET shows a form and
changes nothing, a bad signature gets 403, the one-click POST turns email
off (GET /preferences) and the next sign-in sends no email. Then the
server answers 451 to every message: a second user's email is retried
until TIDINGS_DELIVERY_MAX_ATTEMPTS and dead-lettered with reason
smtp_451 (tidings dlt list), its delivery status failed.
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import (log, expect, http_text, wait_for, SmtpHandler, start_smtp,  # noqa: E402
                       System)

BIN = os.environ["TIDINGS_BIN"]
SERVICES = ["users", "notifications"]
WAIT_S = 30


def main():
    handler = SmtpHandler()
    ctl, port = start_smtp(handler)
    sysm = System("e2e-0069", SERVICES, {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_SMTP_URL": "smtp://127.0.0.1:%d" % port,
        "TIDINGS_SMTP_FROM": "Tidings Shop <shop@tidings.test>",
        "TIDINGS_DELIVERY_BACKOFF_MS": "50",
        "TIDINGS_DELIVERY_MAX_ATTEMPTS": "3",
    }, admin=False)
    ok = False
    try:
        sysm.start_broker()
        for svc in SERVICES:
            sysm.start(svc)
        for svc in SERVICES:
            sysm.wait_ready(svc)
        nurl = lambda path: sysm.url("notifications", path)  # noqa: E731

        def register(name):
            addr = "mail-%s@example.com" % secrets.token_hex(4)
            pw = "pw-" + secrets.token_hex(8)
            st, _, raw = http_text("POST", sysm.url("users", "/users"),
                              body={"email": addr, "password": pw, "name": name})
            expect(st, 201, "register", raw)
            st, login, raw = http_text("POST", sysm.url("users", "/login"),
                                  body={"email": addr, "password": pw})
            expect(st, 200, "login", raw)
            token = login["token"]
            # Wait for the welcome and the sign-in (both before email is on).
            wait_for("first notifications", lambda: len(http_text(
                "GET", nurl("/notifications"), token)[1]["notifications"]) >= 2)
            return addr, pw, token, login["userId"]

        def login_again(addr, pw):
            st, _, raw = http_text("POST", sysm.url("users", "/login"),
                              body={"email": addr, "password": pw})
            expect(st, 200, "login", raw)

        # A name with CR/LF never gets as far as a title: the users service
        # refuses it (the message builder strips them anyway: unit test).
        st, _, raw = http_text("POST", sysm.url("users", "/users"), body={
            "email": "crlf-%s@example.com" % secrets.token_hex(4), "password": "pw-12345678",
            "name": "Eve\r\nBcc: victim@example.com"})
        expect(st, 400, "register with CR/LF in the name", raw)
        addr, pw, token, uid = register("Eve")
        st, prefs, raw = http_text("GET", nurl("/preferences"), token)
        expect(st, 200, "GET /preferences", raw)
        assert prefs["channels"]["email"]["enabled"] is False, prefs  # off by default
        assert handler.got.empty(), "email sent before it was enabled"
        st, prefs, raw = http_text("PUT", nurl("/preferences"), token,
                              {"channels": {"email": {"enabled": True}}})
        expect(st, 200, "enable email", raw)
        assert prefs["channels"]["email"]["enabled"] is True, prefs

        login_again(addr, pw)
        mail = handler.got.get(timeout=WAIT_S)
        mail_from, rcpts = mail.mail_from, mail.rcpt_tos
        assert mail_from == "<shop@tidings.test>" or mail_from == "shop@tidings.test", mail_from
        assert rcpts == [addr], rcpts
        msg = mail.message()
        assert msg.get_content_type() == "multipart/alternative", msg.get_content_type()
        parts = list(msg.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"], parts
        text = parts[0].get_content()
        html = parts[1].get_content()
        assert "signed in" in text, text
        assert "<p>" in html and "signed in" in html, html
        assert msg["To"] == addr, msg["To"]
        assert "shop@tidings.test" in msg["From"], msg["From"]
        assert msg["Subject"] == "New sign-in to your account", msg["Subject"]
        assert msg["Message-ID"].endswith("@tidings.test>"), msg["Message-ID"]
        assert msg["Date"] and msg["Date"].datetime is not None, msg["Date"]
        assert msg["MIME-Version"] == "1.0"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        lu = msg["List-Unsubscribe"]
        assert lu.startswith("<http") and lu.endswith(">"), lu
        link = lu[1:-1]
        assert "Bcc" not in msg and "bcc" not in [k.lower() for k in msg.keys()], msg.keys()
        log("ok   email received: multipart/alternative, headers, no injected Bcc")

        # The delivery status of that notification.
        nid = msg["Message-ID"][1:].split(".email@")[0]
        def sent():
            st, n, raw = http_text("GET", nurl("/notifications/" + nid), token)
            expect(st, 200, "GET /notifications/{id}", raw)
            d = [x for x in n["deliveries"] if x["channel"] == "email"]
            return d if d and d[0]["status"] == "sent" else None
        d = wait_for("email delivery sent", sent)
        assert d[0]["target"] == addr, d
        log("ok   delivery status shows email sent to the address")

        # The unsubscribe link.
        q = urllib.parse.parse_qs(urllib.parse.urlparse(link).query)
        assert q["u"] == [uid], q
        st, _, page = http_text("GET", link)
        expect(st, 200, "GET unsubscribe link", page)
        assert "<form" in page and 'method="post"' in page, page
        st, prefs, raw = http_text("GET", nurl("/preferences"), token)
        assert prefs["channels"]["email"]["enabled"] is True, "GET changed state: %s" % raw
        bad = link[:-1] + ("0" if link[-1] != "0" else "1")
        st, _, raw = http_text("POST", bad, raw_body=b"List-Unsubscribe=One-Click",
                          ctype="application/x-www-form-urlencoded")
        expect(st, 403, "POST with a bad signature", raw)
        st, _, raw = http_text("POST", link, raw_body=b"List-Unsubscribe=One-Click",
                          ctype="application/x-www-form-urlencoded")
        expect(st, 200, "one-click unsubscribe", raw)
        st, prefs, raw = http_text("GET", nurl("/preferences"), token)
        assert prefs["channels"]["email"]["enabled"] is False, raw
        n_before = len(http_text("GET", nurl("/notifications"), token)[1]["notifications"])
        login_again(addr, pw)
        wait_for("the next sign-in's notification", lambda: len(http_text(
            "GET", nurl("/notifications"), token)[1]["notifications"]) > n_before)
        time.sleep(1.0)
        assert handler.got.empty(), "an email after unsubscribing"
        log("ok   one-click unsubscribe turned email off; no further email")

        # A server that refuses: retried, then dead-lettered.
        addr2, pw2, token2, _ = register("Bob")
        http_text("PUT", nurl("/preferences"), token2, {"channels": {"email": {"enabled": True}}})
        handler.answer = "451 4.3.0 Try again later"
        login_again(addr2, pw2)

        def failed():
            st, lst, raw = http_text("GET", nurl("/notifications"), token2)
            nid2 = lst["notifications"][0]["id"]
            st, n, raw = http_text("GET", nurl("/notifications/" + nid2), token2)
            d = [x for x in n["deliveries"] if x["channel"] == "email"]
            return d if d and d[0]["status"] == "failed" else None
        d = wait_for("email delivery failed", failed)
        assert d[0]["attempts"] == 3 and d[0]["lastError"] == "smtp_451", d
        assert handler.refused >= 3, handler.refused

        def dead_letters():
            p = subprocess.run([BIN, "dlt", "list", "--json", "--brokers", sysm.brokers],
                               env=sysm.env, capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, p.stderr
            return [x for x in json.loads(p.stdout)
                    if x["type"] == "NotificationCreatedEvent" and "email" in x["reason"]]
        dl = wait_for("the email's dead letter", dead_letters)
        assert "smtp_451" in dl[0]["reason"], dl
        assert "Try again" not in dl[0]["reason"], dl
        log("ok   451 retried %d times, dead-lettered with reason %r" %
            (handler.refused, dl[0]["reason"]))
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
