"""DKIM signing rate: cmcgate's signer vs dkimpy's pure-Python RSA, vs raw RSA-2048 signs.

Run: .venv/bin/python bench/dkim_signing.py   (prints rates and ratios measured in this run)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim as dkimpy  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from gateway.dkim import DkimKey, sign  # noqa: E402


def rate(fn, seconds: float = 1.5) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def main() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    key = DkimKey("example.org", "sel", private)
    body = b"".join(
        b"line %d of a ten kilobyte message body ...........\r\n" % i for i in range(190)
    )
    message = (
        b"From: alice@example.org\r\nTo: bob@partner.example\r\nSubject: bench\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n" + body
    )
    raw = rate(lambda: private.sign(b"x" * 64, padding.PKCS1v15(), hashes.SHA256()))
    ours = rate(lambda: sign(message, key))
    theirs = rate(
        lambda: dkimpy.sign(message, b"sel", b"example.org", pem, include_headers=[b"from", b"to"])
    )
    print(f"message size: {len(message)} bytes")
    print(f"raw RSA-2048 sign:        {raw:9.0f}/s  (baseline 1.00)")
    print(f"cmcgate DKIM sign:        {ours:9.0f}/s  ({ours / raw:.2f}x raw)")
    print(f"dkimpy DKIM sign:         {theirs:9.0f}/s  ({theirs / raw:.3f}x raw)")
    print(f"cmcgate / dkimpy:         {ours / theirs:9.1f}x")


if __name__ == "__main__":
    main()
