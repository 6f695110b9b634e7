"""What the security tests (tests/security/01[1-4]*) share on top of
tests/e2e/tdharness.py: accounts, a scriptable HTTP receiver on loopback,
a tarpit that accepts and never answers, and reading dead letters from
Kafka. Not a test itself (the glob takes only files starting with
digits)."""
import json
import os
import queue
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from tdharness import http, expect, log  # noqa: E402,F401

PREFIX = "tidings."


def account(sysm, name="Sam"):
    """A new customer: (userId, email, password, token)."""
    email = "%s-%s@example.com" % (name.lower(), secrets.token_hex(4))
    password = "pw-" + secrets.token_hex(8)
    st, user = http("POST", sysm.url("users", "/users"),
                    body={"email": email, "password": password, "name": name}, retry_s=10)
    expect(st, 201, "register " + email, user)
    st, login = http("POST", sysm.url("users", "/login"),
                     body={"email": email, "password": password})
    expect(st, 200, "login " + email, login)
    return user["userId"], email, password, login["token"]


def login(sysm, email, password):
    st, body = http("POST", sysm.url("users", "/login"), body={"email": email, "password": password})
    expect(st, 200, "login " + email, body)
    return body


def wait_inbox(sysm, token, n, timeout=30):
    """Waits until the user has at least n notifications; returns them."""
    deadline = time.time() + timeout
    while True:
        st, inbox = http("GET", sysm.url("notifications", "/notifications"), token)
        expect(st, 200, "GET /notifications", inbox)
        if len(inbox["notifications"]) >= n:
            return inbox["notifications"]
        if time.time() > deadline:
            raise AssertionError("inbox has %d notifications, want %d" %
                                 (len(inbox["notifications"]), n))
        time.sleep(0.05)


class Receiver:
    """An HTTP endpoint on 127.0.0.1. Each POST is queued as (path, headers,
    body) and answered with answer(path) -> (status, body bytes)."""

    def __init__(self, answer=None):
        got = self.got = queue.Queue()
        answer = answer or (lambda path: (201, b""))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, fmt, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                got.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                         time.time()))
                status, text = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.base = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def next(self, timeout):
        try:
            return self.got.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no request within %s s" % timeout)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class Tarpit:
    """Accepts connections and never answers (nor closes them); counts
    them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.base = "http://127.0.0.1:%d" % self.port
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def count(self):
        return len(self.conns)

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()


class Listener:
    """A port that listens and never accepts: whether anything connected
    shows in its backlog (accept with a timeout)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def connected(self):
        self.sock.settimeout(0.2)
        try:
            c, _ = self.sock.accept()
        except (socket.timeout, BlockingIOError):
            return False
        c.close()
        return True

    def close(self):
        self.sock.close()


def read_topic(brokers, short):
    """Every record of a topic now, as dicts with headers decoded."""
    from kafka import KafkaConsumer, TopicPartition
    topic = PREFIX + short
    c = KafkaConsumer(bootstrap_servers=brokers.split(","), enable_auto_commit=False,
                      group_id=None, consumer_timeout_ms=1000)
    try:
        ps = None
        deadline = time.time() + 20
        while not ps and time.time() < deadline:
            ps = c.partitions_for_topic(topic)
            if not ps:
                time.sleep(0.2)
        if not ps:
            raise RuntimeError("topic %s not found" % topic)
        parts = [TopicPartition(topic, p) for p in sorted(ps)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out = []
        deadline = time.time() + 60
        while any(c.position(tp) < end[tp] for tp in parts):
            if time.time() > deadline:
                raise RuntimeError("reading %s timed out" % topic)
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    if r.offset >= end[tp]:
                        continue
                    h = {k: (v.decode("utf-8", "replace") if v is not None else None)
                         for k, v in r.headers}
                    out.append({"headers": h, "key": r.key.decode() if r.key else None,
                                "value": r.value})
        return out
    finally:
        c.close()


def wait_dead_letters(brokers, target, timeout=60):
    """The records on notifications.DLT whose tidings_dlt_target is
    target, waiting (bounded) for at least one."""
    deadline = time.time() + timeout
    while True:
        recs = [r for r in read_topic(brokers, "notifications.DLT")
                if r["headers"].get("tidings_dlt_target") == target]
        if recs:
            return recs
        if time.time() > deadline:
            raise AssertionError("no dead letter for %s within %d s" % (target, timeout))
        time.sleep(0.5)


def metrics(sysm, svc):
    import urllib.request
    with urllib.request.urlopen(sysm.url(svc, "/metrics"), timeout=10) as r:
        return r.read().decode()


def finish(sysm, ok, extra=()):
    """Stops the processes; keeps the logs when the test failed
    (tdharness.System.finish, with longer log tails)."""
    sysm.finish(ok, extra, tail=40)


def dumps(x):
    return json.dumps(x, sort_keys=True)
