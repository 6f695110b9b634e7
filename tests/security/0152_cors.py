#!/usr/bin/python3
"""SPEC sections 1 and 5 / TIDINGS_CORS_ORIGINS: only the origins allowed
get CORS, and by default that is the web service's own.

Real processes, every service, with the ports given by env as `tidings
run` gives them. On each service: a preflight and a GET from a foreign
origin get no Access-Control-Allow-Origin (nor the allow-methods and
allow-headers of a preflight); from the web origin (http://127.0.0.1:<web
port>, and http://localhost:<web port>) they get that origin back, never
"*", with Vary: Origin. Then products alone with TIDINGS_CORS_ORIGINS set:
the listed origin is allowed, the web origin no longer, and "*" only when
it is listed. On the code before the change every origin got "*".
"""
import http.client as httpclient
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from tdharness import log, System  # noqa: E402

SERVICES = ["users", "products", "orders", "payments", "notifications", "web"]
FOREIGN = "https://evil.example"


def call(port, method, path, origin, preflight=False):
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = {"Origin": origin}
    if preflight:
        hdrs["Access-Control-Request-Method"] = "POST"
        hdrs["Access-Control-Request-Headers"] = "authorization, content-type"
    conn.request(method, path, headers=hdrs)
    r = conn.getresponse()
    r.read()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()})
    conn.close()
    return out


def check_refused(port, svc, origin):
    for method, pre in (("OPTIONS", True), ("GET", False)):
        st, h = call(port, method, "/healthz", origin, pre)
        assert "access-control-allow-origin" not in h, "%s: %s from %s got %s" % (
            svc, method, origin, h.get("access-control-allow-origin"))
        assert "access-control-allow-methods" not in h, (svc, method, h)
        assert "access-control-allow-headers" not in h, (svc, method, h)
        if method == "GET":
            assert st == 200, (svc, st)


def check_allowed(port, svc, origin, star=False):
    want = "*" if star else origin
    st, h = call(port, "OPTIONS", "/healthz", origin, True)
    assert st in (200, 204), (svc, st)
    assert h.get("access-control-allow-origin") == want, "%s: preflight from %s got %r" % (
        svc, origin, h.get("access-control-allow-origin"))
    assert "POST" in h.get("access-control-allow-methods", ""), (svc, h)
    assert "authorization" in h.get("access-control-allow-headers", "").lower(), (svc, h)
    st, h = call(port, "GET", "/healthz", origin)
    assert st == 200, (svc, st)
    assert h.get("access-control-allow-origin") == want, "%s: GET from %s got %r" % (
        svc, origin, h.get("access-control-allow-origin"))
    if not star:
        assert "origin" in h.get("vary", "").lower(), "%s: no Vary: Origin (%s)" % (svc, h)


def main():
    ports = {}
    sysm = System("0152-cors", SERVICES, admin=False)
    ports = sysm.ports
    for svc, port in ports.items():
        sysm.env["TIDINGS_%s_PORT" % svc.upper()] = str(port)
    try:
        sysm.start_broker()
        for s in SERVICES:
            sysm.start(s)
        for s in SERVICES:
            sysm.wait_ready(s)
        web = ports["web"]
        for svc in SERVICES:
            check_refused(ports[svc], svc, FOREIGN)
            check_refused(ports[svc], svc, "http://127.0.0.1:%d" % (web + 1))
            check_allowed(ports[svc], svc, "http://127.0.0.1:%d" % web)
            check_allowed(ports[svc], svc, "http://localhost:%d" % web)
        log("every service: the web origin allowed, a foreign one refused")
    finally:
        sysm.stop()

    # Configured: exactly the list.
    for origins, allowed, refused, star in (
            ("https://shop.example, https://admin.shop.example", ["https://shop.example",
                                                                 "https://admin.shop.example"],
             [FOREIGN, "http://127.0.0.1:%d" % ports["web"]], False),
            ("*", [FOREIGN], [], True)):
        sysm = System("0152-cors-set", ["products"], admin=False,
                      env={"TIDINGS_CORS_ORIGINS": origins,
                           "TIDINGS_WEB_PORT": str(ports["web"])})
        try:
            sysm.start_broker()
            sysm.start("products")
            sysm.wait_ready("products")
            for o in allowed:
                check_allowed(sysm.ports["products"], "products", o, star)
            for o in refused:
                check_refused(sysm.ports["products"], "products", o)
        finally:
            sysm.stop()
        log("TIDINGS_CORS_ORIGINS=%s: as listed" % origins)
    log("ok")


if __name__ == "__main__":
    main()
