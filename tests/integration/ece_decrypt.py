#!/usr/bin/python3
"""Decrypts a Web Push message the way a browser does (RFC 8291 key
derivation over the aes128gcm content coding of RFC 8188), written from the
RFCs with python's `cryptography` package, independently of the C code it
checks.

    ece_decrypt.py UA_PRIVATE UA_PUBLIC AUTH BODY     (all base64url)

prints the plaintext (base64url) and exits 0, or prints why and exits 1.
Importable: decrypt(body, ua_private, ua_public, auth) -> bytes."""
import base64
import struct
import sys

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64d(s):
    s = s.strip()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hkdf_extract(salt, ikm):
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk, info, length):
    # One block is enough for every length used here (<= 32).
    h = hmac.HMAC(prk, hashes.SHA256())
    h.update(info + b"\x01")
    return h.finalize()[:length]


def decrypt(body, ua_private, ua_public, auth):
    if len(body) < 21:
        raise ValueError("body shorter than the aes128gcm header")
    salt = body[:16]
    (rs,) = struct.unpack(">I", body[16:20])
    idlen = body[20]
    keyid = body[21:21 + idlen]
    records = body[21 + idlen:]
    if idlen != 65:
        raise ValueError("keyid is not a 65-byte P-256 point (idlen %d)" % idlen)
    if rs < 18:
        raise ValueError("record size %d too small" % rs)
    if len(records) > rs:
        raise ValueError("more than one record (rs %d, %d bytes)" % (rs, len(records)))

    d = int.from_bytes(ua_private, "big")
    priv = ec.derive_private_key(d, ec.SECP256R1())
    as_pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
    ecdh_secret = priv.exchange(ec.ECDH(), as_pub)

    # RFC 8291 section 3.3 / 3.4
    prk_key = hkdf_extract(auth, ecdh_secret)
    key_info = b"WebPush: info\x00" + ua_public + keyid
    ikm = hkdf_expand(prk_key, key_info, 32)
    # RFC 8188 section 2.2 / 2.3
    prk = hkdf_extract(salt, ikm)
    cek = hkdf_expand(prk, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf_expand(prk, b"Content-Encoding: nonce\x00", 12)  # seq 0: XOR is a no-op

    plain = AESGCM(cek).decrypt(nonce, records, None)
    # The last (only) record ends with 0x02 followed by zero or more 0x00.
    stripped = plain.rstrip(b"\x00")
    if not stripped or stripped[-1] != 2:
        raise ValueError("last record lacks the 0x02 padding delimiter")
    return stripped[:-1]


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        plain = decrypt(b64d(argv[4]), b64d(argv[1]), b64d(argv[2]), b64d(argv[3]))
    except Exception as e:  # noqa: BLE001 - any failure is a test failure
        print("decrypt failed: %r" % (e,))
        return 1
    print(b64e(plain))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
