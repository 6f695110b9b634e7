#!/usr/bin/python3
"""Email to an SMTP server that requires AUTH (SPEC section 1:
TIDINGS_SMTP_USER/TIDINGS_SMTP_PASSWORD): an aiosmtpd server on loopback
that accepts mail only from a session authenticated as the configured
user and password (the test server allows AUTH without TLS). A user who
enables email and signs in gets the message; the server saw one
successful AUTH with those credentials and no failed one; the password
is in no service log."""
import os
import secrets
import shutil
import sys

from aiosmtpd.smtp import AuthResult

sys.path.insert(0, os.path.dirname(__file__))
from tdharness import System, SmtpHandler, expect, http, log, start_smtp, wait_for  # noqa: E402

USER = "shop-mailer"
PASSWORD = "smtp-" + secrets.token_hex(8)


class Authenticator:
    def __init__(self):
        self.ok = 0
        self.bad = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
        pw = auth_data.password
        pw = pw.decode() if isinstance(pw, bytes) else pw
        if login == USER and pw == PASSWORD:
            self.ok += 1
            return AuthResult(success=True)
        self.bad.append((mechanism, login))
        return AuthResult(success=False, handled=False)


def main():
    handler, auth = SmtpHandler(require_auth=True), Authenticator()
    ctl, port = start_smtp(handler, authenticator=auth, auth_require_tls=False)
    sysm = System("e2e-0071", ["users", "notifications"], {
        "TIDINGS_ALLOW_HTTP_ENDPOINTS": "1",
        "TIDINGS_SMTP_URL": "smtp://127.0.0.1:%d" % port,
        "TIDINGS_SMTP_USER": USER,
        "TIDINGS_SMTP_PASSWORD": PASSWORD,
        "TIDINGS_LOG_LEVEL": "debug",
    }, admin=False)
    ok = False
    try:
        sysm.start_broker()
        for svc in ("users", "notifications"):
            sysm.start(svc)
        for svc in ("users", "notifications"):
            sysm.wait_ready(svc)
        addr = "auth-%s@example.com" % secrets.token_hex(4)
        st, body = http("POST", sysm.url("users", "/users"),
                        body={"email": addr, "password": "pw-12345678", "name": "Ann"})
        expect(st, 201, "register", body)
        st, login = http("POST", sysm.url("users", "/login"),
                         body={"email": addr, "password": "pw-12345678"})
        expect(st, 200, "login", login)
        token = login["token"]
        wait_for("the welcome and sign-in notifications", lambda: len(http(
            "GET", sysm.url("notifications", "/notifications"), token)[1]["notifications"]) >= 2)
        st, body = http("PUT", sysm.url("notifications", "/preferences"), token,
                        body={"channels": {"email": {"enabled": True}}})
        expect(st, 200, "enable email", body)
        st, body = http("POST", sysm.url("users", "/login"),
                        body={"email": addr, "password": "pw-12345678"})
        expect(st, 200, "second login", body)
        msg = handler.got.get(timeout=30).content
        assert addr.encode() in msg, msg[:400]
        assert b"New sign-in to your account" in msg, msg[:400]
        assert auth.ok >= 1 and not auth.bad, (auth.ok, auth.bad)
        log("ok   the email went out over an authenticated session (%d AUTH)" % auth.ok)
        for name in ("users", "notifications"):
            text = open(os.path.join(sysm.dir, name + ".log"), errors="replace").read()
            assert PASSWORD not in text, "the SMTP password is in the %s log" % name
        log("ok   the SMTP password is in no log (debug level)")
        ok = True
    finally:
        codes = sysm.stop()
        ctl.stop()
        if not ok:
            for n in sysm.procs:
                sys.stderr.write("---- %s log:%s\n" % (n, sysm.tail(n, 30)))
    assert not any(codes.values()), "a service did not stop cleanly: %s" % codes
    shutil.rmtree(sysm.dir, ignore_errors=True)
    log("PASS")


if __name__ == "__main__":
    main()
