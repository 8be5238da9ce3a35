"""Benchmark the S/MIME transforms: throughput and peak RSS per operation.

    .venv/bin/python bench/smime.py            # 10 KB and 25 MB messages
    .venv/bin/python bench/smime.py --sizes 10240

Each (operation, size) runs in a fresh interpreter so ru_maxrss is that operation's own
peak; the ratio compares with raw AES-256-CBC over the same bytes measured in the same run.
Keys: RSA-2048 signer/recipient (software keys; an HSM adds its per-operation latency).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPERATIONS = ("sign", "encrypt", "sign+encrypt", "decrypt+verify")


def make_message(size: int) -> bytes:
    head = (
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: bench\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BENCH"\r\n\r\n'
        b"--BENCH\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe, see attachment.\r\n"
        b"--BENCH\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    raw = os.urandom(max(0, (size - len(head) - 20) * 3 // 4))
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return head + body + b"--BENCH--\r\n"


def run_one(operation: str, size: int) -> dict[str, float]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from gateway.smime import decrypt, encrypt, sign, sign_then_encrypt, verify
    from tests.gateway.certs import make_ca

    ca = make_ca("Bench CA", "rsa")
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    message = make_message(size)
    prepared = sign_then_encrypt(message, alice.key, alice.cert, alice.chain, [bob.cert])

    def work() -> None:
        if operation == "sign":
            sign(message, alice.key, alice.cert, alice.chain)
        elif operation == "encrypt":
            encrypt(message, [bob.cert], sender_cert=alice.cert)
        elif operation == "sign+encrypt":
            sign_then_encrypt(
                message, alice.key, alice.cert, alice.chain, [bob.cert], sender_cert=alice.cert
            )
        else:
            result = verify(decrypt(prepared, bob.rsa_key, bob.cert), trust_anchors=[ca.cert])
            assert result.status == "valid", result.reason

    repeats = 200 if size < 100_000 else 3
    work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    elapsed = (time.perf_counter() - start) / repeats

    cipher = Cipher(algorithms.AES256(os.urandom(32)), modes.CBC(os.urandom(16)))
    start = time.perf_counter()
    for _ in range(repeats):
        encryptor = cipher.encryptor()
        encryptor.update(message[: len(message) // 16 * 16])
        encryptor.finalize()
    aes = (time.perf_counter() - start) / repeats
    megabytes = len(message) / 1e6
    return {
        "bytes": len(message),
        "seconds": elapsed,
        "mb_per_s": megabytes / elapsed,
        "aes_mb_per_s": megabytes / aes,
        "ratio_to_aes": aes / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10 * 1024, 25 * 1024 * 1024])
    parser.add_argument("--one", nargs=2, metavar=("OPERATION", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    print(
        f"{'operation':<15}{'size':>10}{'ms':>10}{'MB/s':>9}{'AES MB/s':>10}"
        f"{'vs AES':>8}{'peak RSS MB':>13}"
    )
    for size in args.sizes:
        for operation in OPERATIONS:
            out = subprocess.run(
                [sys.executable, __file__, "--one", operation, str(size)],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
            r = json.loads(out)
            print(
                f"{operation:<15}{r['bytes']:>10}{r['seconds'] * 1000:>10.1f}"
                f"{r['mb_per_s']:>9.1f}{r['aes_mb_per_s']:>10.0f}{r['ratio_to_aes']:>8.3f}"
                f"{r['peak_rss_mb']:>13.0f}"
            )


if __name__ == "__main__":
    main()
