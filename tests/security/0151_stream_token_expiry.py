#!/usr/bin/python3
"""SPEC section 5: a stream ends when its token expires.

Real processes (`tidings broker`, notifications, web). A token minted with
the run's shared secret that expires in 3 s opens a notification stream
and a web event stream; a token valid for an hour opens one of each too.
The short-lived streams end (the server closes them) after exp and within
a few seconds of it; the others stay open. On the code before the change
both streams outlived the token.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, System  # noqa: E402
from streamhelp import mint_token, RawStream  # noqa: E402

SERVICES = ["notifications", "web"]
TTL = 3
GRACE = 4  # seconds after exp by which the stream must have ended


def main():
    sysm = System("0151-stream-expiry", SERVICES, admin=False)
    opened = []
    try:
        sysm.start_broker()
        for s in SERVICES:
            sysm.start(s)
        for s in SERVICES:
            sysm.wait_ready(s)
        secret = sysm.env["TIDINGS_SECRET"]
        now = int(time.time())
        brief, user = mint_token(secret, ttl=TTL, now=now)
        lasting, _ = mint_token(secret, sub=user)
        exp = now + TTL
        targets = [("notifications", "/notifications/stream"), ("web", "/api/events/stream")]
        short, long_ = [], []
        for svc, path in targets:
            s = RawStream(sysm.ports[svc], path, brief)
            assert s.read_status() == 200, "%s: the stream was refused before exp" % svc
            short.append((svc, s))
            t = RawStream(sysm.ports[svc], path, lasting)
            assert t.read_status() == 200, "%s: the lasting stream was refused" % svc
            long_.append((svc, t))
            opened += [s, t]
        for svc, s in short:
            ended = s.wait_end(max(exp + GRACE - time.time(), 0))
            at = time.time()
            assert ended, "%s: the stream is still open %d s after its token expired" % (
                svc, GRACE)
            assert at >= exp - 0.05, "%s: the stream ended %.1f s before exp" % (svc, exp - at)
            log("%s: the stream ended %.1f s after its token expired" % (svc, at - exp))
        for svc, t in long_:
            t.pump(0.2)
            assert not t.ended, "%s: a stream with a valid token ended too" % svc
        # The expired token opens nothing any more.
        for svc, path in targets:
            s = RawStream(sysm.ports[svc], path, brief)
            st = s.read_status()
            s.close()
            assert st == 401, "%s: an expired token got %s" % (svc, st)
    finally:
        for s in opened:
            s.close()
        sysm.stop()
    log("ok")


if __name__ == "__main__":
    main()
