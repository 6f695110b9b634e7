#!/usr/bin/python3
"""A stand-in for a Web Push service and a webhook receiver, on 127.0.0.1,
for the delivery tests. It prints "PORT <n>" on stdout once listening and
exits when its stdin closes (so it never outlives the test that started it).

What a request gets depends on its path (the rest of the path is free, so a
test gives each delivery its own):
  /ok/...                      201
  /status/<code>/...           always <code>
  /flaky/<n>/...               500 for the first n requests to this path, then 201
  /retry-after/<s>/...         429 with "Retry-After: <s>" the first time, then 201
  /retry-after-date/<s>/...    the same with an HTTP-date <s> seconds ahead
  /hang/<ms>/...               the first time: no answer for <ms>, then the
                               connection is closed; then 201
  /down/...                    503 while "down" is set (see /_control), else 201

Every request is checked independently of the C code (python `cryptography`
and `hmac`) against what POST /_control registered: a Web Push body is
decrypted (RFC 8291/8188, ece_decrypt.py) and its VAPID token verified
(RFC 8292, es256_verify.py) with aud = this server's origin; a webhook's
X-Tidings-Signature is checked (HMAC-SHA256 of timestamp "." body), and so
is the same signature against the body with one byte changed, which must
fail. GET /_log returns {"requests":[...]} with what was received and found.
"""
import base64
import email.utils
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ece_decrypt  # noqa: E402
import es256_verify  # noqa: E402

LOCK = threading.Lock()
STATE = {"down": False}
COUNTS = {}
LOG = []


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                body = json.dumps({"requests": LOG}).encode()
            self.reply(200, body, [("Content-Type", "application/json")])
        else:
            self.reply(404)

    def check(self, entry, body):
        with LOCK:
            st = dict(STATE)
        h = entry["headers"]
        if h.get("content-encoding") == "aes128gcm" and "ua_private" in st:
            try:
                plain = ece_decrypt.decrypt(body, ece_decrypt.b64d(st["ua_private"]),
                                            ece_decrypt.b64d(st["ua_public"]),
                                            ece_decrypt.b64d(st["auth"]))
                entry["plaintext"] = plain.decode("utf-8", "replace")
            except Exception as e:  # noqa: BLE001
                entry["decrypt_error"] = repr(e)
        auth = h.get("authorization", "")
        if auth.startswith("vapid ") and "vapid_public" in st:
            try:
                params = dict(p.strip().split("=", 1) for p in auth[6:].split(","))
                if params.get("k") != st["vapid_public"]:
                    raise ValueError("k is not the registered VAPID key")
                origin = "http://127.0.0.1:%d" % self.server.server_address[1]
                es256_verify.verify(params["t"], params["k"], origin, st["subject"])
                entry["vapid_ok"] = True
            except Exception as e:  # noqa: BLE001
                entry["vapid_ok"] = False
                entry["vapid_error"] = str(e)
        sig = h.get("x-tidings-signature")
        if sig is not None and "secret" in st:
            ts = h.get("x-tidings-timestamp", "")
            key = st["secret"].encode()

            def good(b):
                mac = hmac.new(key, ts.encode() + b"." + b, hashlib.sha256).hexdigest()
                return hmac.compare_digest("sha256=" + mac, sig)

            entry["sig_ok"] = good(body)
            tampered = bytearray(body)
            if tampered:
                tampered[len(tampered) // 2] ^= 1
            entry["sig_tampered_ok"] = good(bytes(tampered) if body else b"x")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path == "/_control":
            with LOCK:
                STATE.update(json.loads(body or b"{}"))
            self.reply(204)
            return
        parts = self.path.split("/")
        kind = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        with LOCK:
            COUNTS[self.path] = seen = COUNTS.get(self.path, 0) + 1
            down = STATE["down"]
        status, extra, hang = 201, [], 0
        if kind == "ok":
            pass
        elif kind == "status":
            status = int(arg)
        elif kind == "flaky":
            status = 500 if seen <= int(arg) else 201
        elif kind == "retry-after" and seen == 1:
            status, extra = 429, [("Retry-After", arg)]
        elif kind == "retry-after-date" and seen == 1:
            when = email.utils.formatdate(time.time() + int(arg) + 1, usegmt=True)
            status, extra = 429, [("Retry-After", when)]
        elif kind == "hang" and seen == 1:
            hang = int(arg)
        elif kind == "down":
            status = 503 if down else 201
        entry = {
            "t_ms": int(time.time() * 1000),
            "path": self.path,
            "try": seen,
            "status": "hang" if hang else status,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_b64": b64e(body),
        }
        self.check(entry, body)
        with LOCK:
            LOG.append(entry)
        if hang:
            time.sleep(hang / 1000.0)
            self.close_connection = True
            return
        self.reply(status, b"stand-in says %d" % status, extra)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print("PORT %d" % srv.server_address[1], flush=True)

    def watch_stdin():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
