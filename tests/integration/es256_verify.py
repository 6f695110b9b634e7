#!/usr/bin/python3
"""Checks a VAPID token (RFC 8292) with python's `cryptography` ES256
verify, independently of the C code that signed it.

    es256_verify.py JWT PUBLIC_KEY AUD SUB

PUBLIC_KEY is the base64url 65-byte point of the `k=` parameter. Checks the
header {"typ":"JWT","alg":"ES256"}, the raw r||s signature, aud == AUD,
sub == SUB and now < exp <= now + 24 h. Prints the claims and exits 0, or
prints why and exits 1. Importable: verify(jwt, public_key, aud, sub)."""
import base64
import json
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify(jwt, public_key, aud, sub):
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ValueError("not three segments")
    header = json.loads(b64d(parts[0]))
    if header.get("alg") != "ES256" or header.get("typ") != "JWT":
        raise ValueError("bad header %r" % (header,))
    sig = b64d(parts[2])
    if len(sig) != 64:
        raise ValueError("signature is %d bytes, not raw r||s" % len(sig))
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(public_key))
    try:
        pub.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("signature does not verify")
    claims = json.loads(b64d(parts[1]))
    now = time.time()
    if claims.get("aud") != aud:
        raise ValueError("aud %r != %r" % (claims.get("aud"), aud))
    if claims.get("sub") != sub:
        raise ValueError("sub %r != %r" % (claims.get("sub"), sub))
    exp = claims.get("exp")
    if not isinstance(exp, int) or not (now < exp <= now + 24 * 3600):
        raise ValueError("exp %r not within 24 h from now" % (exp,))
    return claims


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        claims = verify(argv[1], argv[2], argv[3], argv[4])
    except Exception as e:  # noqa: BLE001
        print("verify failed: %s" % (e,))
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
