"""Raw signing speed of a backend: the yardstick other benchmarks divide by."""

from __future__ import annotations

import secrets
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ca.keys.base import KeyBackend, KeyType
from ca.keys.handles import RsaKeyHandle


def raw_sign_rate(backend: KeyBackend, key_type: KeyType | str, seconds: float = 1.0) -> float:
    """Signatures per second (SHA-256, PKCS#1 v1.5 or ECDSA) with a fresh temporary key.

    The key is generated under a random ``bench-raw-...`` label and deleted afterwards; one
    signature is made before timing starts so session set-up is not counted.
    """
    key_type = KeyType.parse(key_type)
    label = f"bench-raw-{secrets.token_hex(6)}"
    key = backend.generate(label, key_type)
    try:
        data = b"\x00" * 64

        def sign_once() -> None:
            if isinstance(key, RsaKeyHandle):
                key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            else:
                key.sign(data, ec.ECDSA(hashes.SHA256()))

        sign_once()
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            sign_once()
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - start)
    finally:
        backend.delete(label)
