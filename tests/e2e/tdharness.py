"""Shared harness of the e2e Python tests: timestamped logging, free TCP
ports, the JSON-over-HTTP helpers and System, the processes of a run. Not a test itself (the e2e glob takes
only files starting with digits); tests import it after
sys.path.insert(0, os.path.dirname(__file__))."""
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, token=None, body=None, retry_s=0):
    """(status, parsed JSON or None). Connection errors are retried for
    retry_s seconds (a service being restarted), then raised."""
    data = json.dumps(body).encode() if body is not None else None
    deadline = time.time() + retry_s
    while True:
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, None
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.time() >= deadline:
                raise
            time.sleep(0.1)


def expect(status, want, what, body):
    if status != want:
        raise AssertionError("%s: HTTP %s, expected %s: %s" % (what, status, want, body))


BIN = os.environ.get("TIDINGS_BIN", "tidings")
TMP = os.environ.get("TIDINGS_TEST_TMP") or "/tmp"


class System:
    """The processes of one test run, each with its log file: a `tidings
    broker` and the services, each on a free port, sharing one scratch data
    dir. env adds settings; admin=True makes admin@tidings.local with a
    random password (self.admin_password). Settings that would point the
    run elsewhere are dropped from the inherited environment."""

    def __init__(self, name, services, env=None, admin=True):
        os.makedirs(TMP, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=name + ".", dir=TMP)
        self.procs = {}
        self.logs = {}
        self.ports = {s: free_port() for s in services}
        self.admin_password = "admin-" + secrets.token_hex(8) if admin else None
        self.env = dict(os.environ)
        for k in ("TIDINGS_BROKERS", "TIDINGS_DATA_DIR", "TIDINGS_TOPIC_PREFIX",
                  "TIDINGS_VAPID_PRIVATE_KEY"):
            self.env.pop(k, None)
        self.env.update({
            "TIDINGS_SECRET": secrets.token_urlsafe(36),
            "TIDINGS_LOG_LEVEL": "info",
        })
        if admin:
            self.env["TIDINGS_ADMIN_PASSWORD"] = self.admin_password
        self.env.update(env or {})
        self.brokers = None

    def _spawn(self, name, args):
        logf = open(os.path.join(self.dir, name + ".log"), "ab")
        self.logs[name] = logf
        return subprocess.Popen([BIN] + args, env=self.env, stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL)

    def start_broker(self):
        path = os.path.join(self.dir, "brokers")
        self.procs["broker"] = self._spawn("broker", ["broker", "--data", self.dir])
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.procs["broker"].poll() is not None:
                raise RuntimeError("tidings broker exited: " + self.tail("broker"))
            if os.path.exists(path):
                text = open(path).read().strip()
                if text:
                    self.brokers = text
                    return
            time.sleep(0.05)
        raise RuntimeError("tidings broker wrote no bootstrap list")

    def start(self, svc):
        self.procs[svc] = self._spawn(svc, [svc, "--data", self.dir, "--brokers", self.brokers,
                                            "--port", str(self.ports[svc])])

    def url(self, svc, path):
        return "http://127.0.0.1:%d%s" % (self.ports[svc], path)

    def wait_ready(self, svc, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.procs[svc].poll() is not None:
                raise RuntimeError("%s exited: %s" % (svc, self.tail(svc)))
            try:
                with urllib.request.urlopen(self.url(svc, "/readyz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("%s not ready after %d s: %s" % (svc, timeout, self.tail(svc)))

    def kill9(self, svc):
        p = self.procs[svc]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()

    def tail(self, name, n=20):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return "\n" + "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        # The services first (a consumer leaves its group and a relay
        # flushes on the way out, which needs the broker), then the broker.
        for group in ([n for n in self.procs if n != "broker"], ["broker"]):
            for name in group:
                if self.procs[name].poll() is None:
                    self.procs[name].send_signal(signal.SIGTERM)
            for name in group:
                p = self.procs[name]
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log("%s did not stop within 20 s of SIGTERM: killed" % name)
                    p.kill()
                    p.wait()
        for f in self.logs.values():
            f.close()
        return {name: p.returncode for name, p in self.procs.items()}
