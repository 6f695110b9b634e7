"""Helpers of the SPEC section 5 stream and connection tests: HS256 tokens
minted with the run's shared TIDINGS_SECRET, and a raw-socket SSE client
(HTTP/1.1, chunked or not) that parses what arrived the way EventSource
does: an event counts once its blank line is in, so a stream cut in the
middle of a frame shows only its whole frames. Not a test itself (the
security glob takes only files starting with digits)."""
import base64
import hashlib
import hmac
import json
import select
import socket
import time
import uuid


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_token(secret, sub=None, role="customer", ttl=3600, now=None):
    """(token, sub): an HS256 JWT with claims sub, role, iat, exp signed
    with the bytes of secret as they are (SPEC section 1)."""
    sub = sub or str(uuid.uuid4())
    iat = int(now if now is not None else time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps({"sub": sub, "role": role, "iat": iat, "exp": iat + ttl},
                             separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64url(sig), sub


class RawStream:
    """GET path on a fresh socket; rcvbuf makes the client's receive window
    small (a reader that will not keep up)."""

    def __init__(self, port, path, token=None, last_id=None, rcvbuf=None, headers=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port,
                 "Accept: text/event-stream"]
        if token:
            lines.append("Authorization: Bearer " + token)
        if last_id is not None:
            lines.append("Last-Event-ID: %s" % last_id)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.status = None
        self.headers = {}
        self.chunked = False
        self.body = b""
        self.ended = False
        self._chunk_left = 0
        self._want_crlf = False

    def _recv(self, timeout):
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, OSError):
            data = b""
        if not data:
            self.ended = True
            return True
        self.raw += data
        self._parse()
        return True

    def _parse(self):
        if self.status is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.raw[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()
            self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
            self.raw = self.raw[end + 4:]
            if self.headers.get("content-length") == "0":
                self.ended = True
        while self.raw:
            if not self.chunked:
                self.body += self.raw
                self.raw = b""
                cl = self.headers.get("content-length")
                if cl is not None and len(self.body) >= int(cl):
                    self.ended = True
                return
            if self._want_crlf:
                if len(self.raw) < 2:
                    return
                self.raw = self.raw[2:]
                self._want_crlf = False
            if self._chunk_left == 0:
                eol = self.raw.find(b"\r\n")
                if eol < 0:
                    return
                size = int(self.raw[:eol].split(b";")[0], 16)
                self.raw = self.raw[eol + 2:]
                if size == 0:
                    self.ended = True
                    return
                self._chunk_left = size
            n = min(len(self.raw), self._chunk_left)
            self.body += self.raw[:n]
            self.raw = self.raw[n:]
            self._chunk_left -= n
            if self._chunk_left == 0:
                self._want_crlf = True

    def read_status(self, timeout=20):
        deadline = time.time() + timeout
        while self.status is None and not self.ended and time.time() < deadline:
            self._recv(deadline - time.time())
        return self.status

    def pump(self, timeout=0.0):
        """Reads what arrives within timeout seconds (0: what is there)."""
        deadline = time.time() + timeout
        while not self.ended:
            if not self._recv(deadline - time.time()):
                return

    def wait_end(self, timeout):
        """Reads until the server ends the stream; True if it did."""
        deadline = time.time() + timeout
        while not self.ended and time.time() < deadline:
            self._recv(deadline - time.time())
        return self.ended

    def events(self):
        """Whole events so far: dicts with id, event, data (and comments)."""
        out = []
        text = self.body.decode("utf-8", "replace").replace("\r\n", "\n")
        blocks = text.split("\n\n")
        for block in blocks[:-1]:  # the last one is not finished yet
            ev = {"id": None, "event": None, "data": None, "comments": []}
            for line in block.split("\n"):
                if line.startswith(":"):
                    ev["comments"].append(line[1:].strip())
                    continue
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    ev["data"] = v if ev["data"] is None else ev["data"] + "\n" + v
                elif k in ("id", "event", "retry"):
                    ev[k] = v
            out.append(ev)
        return out

    def notifications(self):
        return [e for e in self.events() if e.get("event") == "notification"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
