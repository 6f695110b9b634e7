"""Shared harness of the e2e Python tests: timestamped logging, free TCP
ports and the JSON-over-HTTP helpers. Not a test itself (the e2e glob takes
only files starting with digits); tests import it after
sys.path.insert(0, os.path.dirname(__file__))."""
import json
import socket
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
