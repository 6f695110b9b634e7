#!/usr/bin/python3
"""Writes the seed corpora of the fuzz harnesses into corpus/<name>/: a few
valid inputs (so the fuzzer starts past the first checks) and a few invalid
ones of each kind. The files are checked in; run this again only to change
them. Binary layouts follow the harnesses' header comments."""
import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
UUID = "123e4567-e89b-42d3-a456-426614174000"
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def write(name, files):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for fname, data in files.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)


# ---- fuzz_envelope: u16 key len, key, u16 value len, value, header blob ----
def blob(headers):
    out = bytes([1]) + struct.pack(">I", len(headers))
    for name, value in headers:
        n = name.encode()
        out += struct.pack(">I", len(n)) + n
        if value is None:
            out += struct.pack(">I", 0xFFFFFFFF)
        else:
            v = value if isinstance(value, bytes) else value.encode()
            out += struct.pack(">I", len(v)) + v
    return out


def envelope(key, value, headers):
    out = b""
    for part in (key, value):
        if part is None:
            out += struct.pack(">H", 0xFFFF)
        else:
            p = part.encode() if isinstance(part, str) else part
            out += struct.pack(">H", len(p)) + p
    return out + blob(headers)


def ce(**over):
    h = {
        "ce_specversion": "1.0",
        "ce_id": "0b6c8f0e-4f7e-4d2b-9a55-3a1c1c1d2e3f",
        "ce_source": "/tidings/orders",
        "ce_type": "OrderCreatedEvent",
        "ce_time": "2026-11-21T11:19:53.123Z",
        "ce_subject": UUID,
        "content-type": "application/json",
        "ce_correlationid": UUID,
        "ce_causationid": "9d1b3c4e-1111-4222-8333-444455556666",
        "traceparent": TP,
    }
    h.update(over)
    return [(k, v) for k, v in h.items() if v != "<absent>"]


ORDER = json.dumps({"orderId": UUID, "productId": UUID, "quantity": 2, "total": 39.98},
                   separators=(",", ":"))
CREATED = json.dumps({"orderId": UUID, "userId": UUID, "productId": UUID, "quantity": 2,
                      "createdAt": "2026-11-21T11:19:53.123Z"}, separators=(",", ":"))
FAILED = json.dumps({"orderId": UUID, "userId": UUID, "amount": 5000.01,
                     "reason": "payment limit exceeded"}, separators=(",", ":"))
LOGIN = json.dumps({"userId": UUID, "email": "a@b.c", "loggedInAt": "2026-11-21T11:19:53Z",
                    "userAgent": "Mozilla/5.0 \u00e9", "ip": None}, separators=(",", ":"))
write("envelope", {
    "order-created": envelope(UUID, CREATED, ce()),
    "payment-failed": envelope(UUID, FAILED, ce(ce_type="PaymentFailedEvent")),
    "login-null-ip": envelope(UUID, LOGIN, ce(ce_type="UserLoggedInEvent")),
    "valid-order": envelope(UUID, ORDER, ce()),
    "valid-minimal": envelope(None, "{}", ce(ce_subject="<absent>", ce_causationid="<absent>",
                                              ce_correlationid="<absent>", traceparent="<absent>",
                                              **{"content-type": "<absent>"})),
    "valid-offset-time": envelope("k", '{"price":19.99,"a":[1,2.5,"x",null,true]}',
                                  ce(ce_time="2026-02-28T23:59:60.5+05:30",
                                     **{"content-type": "Application/JSON; charset=utf-8"})),
    "null-header": envelope(UUID, ORDER, ce(ce_type=None)),
    "bad-spec": envelope(UUID, ORDER, ce(ce_specversion="0.3")),
    "bad-utf8": envelope(UUID, ORDER, ce(ce_source=b"/tidings/\xc3\x28")),
    "nul-header": envelope(UUID, ORDER, ce(ce_id=b"a\0b")),
    "bad-trace": envelope(UUID, ORDER, ce(traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01")),
    "bad-value": envelope(UUID, '[1,2]', ce()),
    "dup-keys": envelope(UUID, '{"a":1,"a":2}', ce()),
    "empty-blob": envelope("k", "{}", []),
    "truncated-blob": envelope("k", "{}", ce())[:-7],
})

# ---- fuzz_json_money: JSON text ----
write("json_money", {
    "product": '{"title":"Blue mug","price":19.99,"quantity":3}',
    "integer-price": '{"title":"x","price":1129,"quantity":0}',
    "max": '{"price":999999999999.99}',
    "three-decimals": '{"price":0.125}',
    "negative": '{"price":-1,"quantity":-6}',
    "huge": '{"price":1e300,"quantity":9.2233720368547758e18}',
    "unknown-field": '{"colour":"red","title":""}',
    "nul-title": '{"title":"a\\u0000b","quantity":2.0}',
    "long-title": json.dumps({"title": "\u00e9" * 21, "quantity": "3"}),
    "array": '[0.1,0.29,1.005,100.10,0,-0.0,12345678901.23]',
    "scalar": '4.35',
})

# ---- fuzz_jwt: a token, and the same bytes as claims ----
KEY = b"tidings fuzz key, 32 bytes long\0"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(header, claims, key=KEY):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    c = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, (h + "." + c).encode(), hashlib.sha256).digest()
    return h + "." + c + "." + b64(sig)


GOOD = {"sub": UUID, "role": "customer", "iat": 1700000000, "exp": 1900000000}
HS = {"alg": "HS256", "typ": "JWT"}
write("jwt", {
    "valid": jwt(HS, GOOD),
    "valid-admin-no-iat": jwt({"alg": "HS256"}, {"sub": UUID, "role": "admin", "exp": 1900000000}),
    "expired": jwt(HS, dict(GOOD, exp=1000)),
    "wrong-key": jwt(HS, GOOD, key=b"x" * 32),
    "alg-none": b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(GOOD).encode()) + ".",
    "bad-role": jwt(HS, dict(GOOD, role="root")),
    "two-segments": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
    "claims-bytes": bytes(range(40)),
})

# ---- fuzz_traceparent_time: one string ----
write("traceparent_time", {
    "trace": TP,
    "trace-future": "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds",
    "trace-upper": TP.upper(),
    "trace-ff": "ff" + TP[2:],
    "time": "2026-11-21T11:19:53.123Z",
    "time-offset": "1985-04-12T23:20:50.52-04:00",
    "time-leap": "2016-12-31T23:59:60Z",
    "time-bad-day": "2026-02-29T00:00:00Z",
    "time-edge": "0000-01-01T00:00:00+23:59",
    "uuid": UUID,
})

# ---- fuzz_webpush_sub: flags byte, endpoint \n p256dh \n auth ----
# The RFC 8291 Appendix A subscription keys.
P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
write("webpush_sub", {
    "valid": "\x00https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV\n"
             + P256DH + "\n" + AUTH,
    "valid-padded": "\x00https://fcm.googleapis.com:443/fcm/send/abc?x=1\n"
                    + P256DH + "==\n" + AUTH + "==",
    "http-loopback": "\x01http://127.0.0.1:8099/hook\n" + P256DH + "\n" + AUTH,
    "http-v6": "\x01http://[::1]:1/x\n\n",
    "userinfo": "\x00https://user:pw@push.example.net/x\n\n",
    "not-on-curve": "\x00ftp://x\nB" + "A" * 86 + "\n" + AUTH,
    "short-auth": "\x00https://\n" + P256DH + "\nBTBZ",
})

# ---- fuzz_http: raw requests ----
CRLF = "\r\n"


def req(lines, body=""):
    return CRLF.join(lines) + CRLF + CRLF + body


TOKEN = jwt(HS, dict(GOOD, role="admin"))
write("http", {
    "get": req(["GET /products/" + UUID + "?fields=title HTTP/1.1", "Host: x"]),
    "post-json": req(["POST /products HTTP/1.1", "Host: x", "Content-Type: application/json",
                      "Content-Length: 46"], '{"title":"Mug","price":19.99,"quantity":3}    '),
    "post-chunked": req(["POST /products HTTP/1.1", "Host: x", "Content-Type: application/json",
                         "Transfer-Encoding: chunked"], "5\r\n{\"tit\r\n0\r\n\r\n"),
    "patch-admin": req(["PATCH /products/a%2Fb HTTP/1.1", "Host: x",
                        "Authorization: Bearer " + TOKEN]),
    "order-item": req(["POST /orders/o1/items/i%20" + "2 HTTP/1.1", "Host: x",
                       "Authorization: bearer\t" + TOKEN, "Content-Type: application/json",
                       "Content-Length: 2", "X-Request-Id: " + UUID, "traceparent: " + TP], "{}"),
    "stream-query": req(["GET /stream?token=" + TOKEN + " HTTP/1.1", "Host: x"]),
    "static": req(["GET /static/css/../a%C3%A9/b.css HTTP/1.0", "User-Agent: f"]),
    "options": req(["OPTIONS /products HTTP/1.1", "Host: x", "Origin: http://a"]),
    "bad-escape": req(["GET /products/%zz HTTP/1.1", "Host: x"]),
    "too-large": req(["POST /products HTTP/1.1", "Host: x", "Content-Length: 99999999"]),
    "wrong-method": req(["DELETE /stream HTTP/1.1", "Host: x"]),
    "pipelined": req(["GET /healthz HTTP/1.1", "Host: x"]) + req(["HEAD /metrics HTTP/1.1",
                                                                  "Host: x"]),
    "garbage": "\x00\xff GET / HTTP/9.9\n\n",
})

# ---- fuzz_sse_frame: flags (1 id, 2 event, 4 data), id \0 event \0 data ----
write("sse_frame", {
    "notification": "\x07" "42\0notification\0" + json.dumps({"title": "Order approved"}),
    "multiline": "\x05" "7\0\0line one\nline two\r\nline three\rend",
    "injection": "\x07" "1\nid: 99\0x\r\nevent: evil\0a\n\ndata: forged\n",
    "data-only": "\x04" "\0\0",
    "nothing": "\x00",
})

# ---- fuzz_urlguard: flags, 16 answer bytes, URL ----
V4_PUBLIC = bytes([8, 8, 8, 8]) + bytes(12)
V4_LOOP = bytes([127, 0, 0, 1]) + bytes(12)
V6_PUBLIC = bytes.fromhex("26064700470000000000000000001111")
write("urlguard", {
    "public-literal": b"\x00" + V4_PUBLIC + b"https://8.8.8.8/hook",
    "public-name": b"\x00" + V4_PUBLIC + b"https://push.example.net:8443/wpush/v2/x?y=1",
    "rebind-name": b"\x00" + V4_LOOP + b"https://rebind.example/hook",
    "v6-answer": b"\x04" + V6_PUBLIC + b"https://v6.example/",
    "decimal": b"\x00" + V4_PUBLIC + b"https://2130706433/",
    "hex": b"\x00" + V4_PUBLIC + b"https://0x7f000001/",
    "octal": b"\x00" + V4_PUBLIC + b"https://0177.0.0.1/",
    "short": b"\x00" + V4_PUBLIC + b"https://127.1/",
    "v6-loopback": b"\x00" + V4_PUBLIC + b"https://[::1]/",
    "v6-ula": b"\x00" + V4_PUBLIC + b"https://[fd00::1]/",
    "v6-mapped": b"\x00" + V4_PUBLIC + b"https://[::ffff:7f00:1]/",
    "nat64": b"\x00" + V4_PUBLIC + b"https://[64:ff9b::a9fe:a9fe]/",
    "6to4": b"\x00" + V4_PUBLIC + b"https://[2002:7f00:1::1]/",
    "metadata": b"\x00" + V4_PUBLIC + b"https://169.254.169.254/latest/meta-data/",
    "zone": b"\x00" + V4_PUBLIC + b"https://[fe80::1%25eth0]/",
    "http-loopback": b"\x01" + V4_PUBLIC + b"http://127.0.0.1:8085/hook",
    "http-localhost": b"\x01" + V4_PUBLIC + b"http://localhost./x",
    "no-resolve": b"\x02" + V4_LOOP + b"https://internal.example/",
    "userinfo": b"\x00" + V4_PUBLIC + b"https://a:b@8.8.8.8/",
    "trailing-dot": b"\x00" + V4_PUBLIC + b"https://127.0.0.1./",
    "pct-host": b"\x00" + V4_PUBLIC + b"https://%31%32%37.0.0.1/",
})
