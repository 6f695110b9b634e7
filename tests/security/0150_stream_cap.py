#!/usr/bin/python3
"""SPEC section 5 / TIDINGS_MAX_STREAMS_PER_USER: one user holds at most 32
streams (the default); one more gets 429 rate_limited with Retry-After.

Real processes (`tidings broker`, notifications, web). A shopper's token,
minted with the run's shared secret, opens 32 notification streams: all
200; the 33rd is 429 with the SPEC error shape and a Retry-After. Another
user is not affected. When one of the 32 hangs up its place is free again
at once (the server sees the hang-up; it does not wait for a frame). The
web service's event stream has the same cap per signed-in viewer, and
anonymous streams are nobody's. On the code before the change the 33rd
stream was 200, and so was the 1000th.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
sys.path.insert(0, os.path.dirname(__file__))
from tdharness import log, System  # noqa: E402
from streamhelp import mint_token, RawStream  # noqa: E402

SERVICES = ["notifications", "web"]
CAP = 32


def open_ok(port, path, token, what):
    s = RawStream(port, path, token)
    st = s.read_status()
    assert st == 200, "%s: HTTP %s, expected 200" % (what, st)
    return s


def refused(port, path, token, what):
    s = RawStream(port, path, token)
    st = s.read_status()
    s.wait_end(5)
    body = s.body.decode("utf-8", "replace")
    s.close()
    assert st == 429, "%s: HTTP %s, expected 429 (%s)" % (what, st, body[:200])
    err = json.loads(body)["error"]
    assert err["code"] == "rate_limited", err
    assert int(s.headers.get("retry-after", "0")) > 0, s.headers
    return err


def main():
    sysm = System("0150-stream-cap", SERVICES, admin=False)
    streams = []
    try:
        sysm.start_broker()
        for s in SERVICES:
            sysm.start(s)
        for s in SERVICES:
            sysm.wait_ready(s)
        secret = sysm.env["TIDINGS_SECRET"]
        token, user = mint_token(secret)
        other, _ = mint_token(secret)
        nport, wport = sysm.ports["notifications"], sysm.ports["web"]
        npath = "/notifications/stream"

        for i in range(CAP):
            streams.append(open_ok(nport, npath, token, "stream %d" % (i + 1)))
        log("%d streams of one user open" % CAP)
        err = refused(nport, npath, token, "stream %d" % (CAP + 1))
        log("stream %d: 429 %s" % (CAP + 1, err["message"]))
        # ?token= (EventSource) counts the same.
        refused(nport, npath + "?token=" + token, None, "stream %d by ?token=" % (CAP + 1))
        streams.append(open_ok(nport, npath, other, "another user's stream"))

        # One hangs up: its place is free again, without any frame sent.
        streams.pop(0).close()
        deadline = time.time() + 5
        while True:
            s = RawStream(nport, npath, token)
            st = s.read_status()
            if st == 200:
                streams.append(s)
                break
            s.close()
            assert time.time() < deadline, "a closed stream still counts after 5 s"
            time.sleep(0.1)
        log("a stream that hung up freed its place")

        # The web service's event stream: the same cap per signed-in viewer.
        wpath = "/api/events/stream"
        for i in range(CAP):
            streams.append(open_ok(wport, wpath, token, "web stream %d" % (i + 1)))
        refused(wport, wpath, token, "web stream %d" % (CAP + 1))
        streams.append(open_ok(wport, wpath, None, "an anonymous web stream"))
        log("web: %d streams, then 429; anonymous streams are nobody's" % CAP)
    finally:
        for s in streams:
            s.close()
        sysm.stop()
    log("ok")


if __name__ == "__main__":
    main()
