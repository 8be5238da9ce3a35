"""Benchmark the S/MIME transforms: throughput and peak RSS per operation.

    .venv/bin/python bench/smime.py            # 10 KB and 25 MB messages
    .venv/bin/python bench/smime.py --sizes 10240

Keys: RSA-2048 signer/recipient (software keys; an HSM adds its per-operation latency).
The message is multipart/mixed: a short 8-bit text part (re-encoded to quoted-printable
when signing) and a base64 attachment of random bytes filling it up to the size.

How it measures, per (operation, size), each in a fresh interpreter:

* time: one warm-up run, then ``repeats`` timed runs (200 for small messages, 5 for large);
  the **median** is reported (the machine may be shared; the median is robust to a stray
  slow run).  MB/s = message bytes / median seconds (1 MB = 10^6 bytes).
* memory: ``peak x`` = (``ru_maxrss`` after the runs − ``ru_maxrss`` before the input
  message was read) / message size.  The baseline is taken after the imports and the keys
  are loaded; the input message itself is read from a file after it, so it counts as 1x.
  The inputs (and, for decrypt+verify, the encrypted message) are made by a separate
  process, so their making does not show up in the peak.  For 10 KB messages the multiple
  is meaningless (page granularity, interpreter noise); it is printed for completeness.
* ``AES MB/s``: raw AES-256-CBC (cryptography, one ``update`` over the message bytes) in
  the same process, median of the same number of runs; ``vs AES`` = our MB/s / AES MB/s.
* ``pkcs7-builder`` (reference row): cryptography's own ``PKCS7EnvelopeBuilder`` over the
  message bytes, the call the gateway used before building the EnvelopedData itself.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPERATIONS = ("sign", "encrypt", "sign+encrypt", "decrypt+verify", "pkcs7-builder")


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


def setup(size: int, directory: Path) -> None:
    """Write keys, certificates, the message and its signed+encrypted form to ``directory``."""
    from cryptography.hazmat.primitives import serialization

    from gateway.smime import sign_then_encrypt
    from tests.gateway.certs import make_ca

    ca = make_ca("Bench CA", "rsa")
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.cert.public_bytes(pem))
    for name, who in (("alice", alice), ("bob", bob)):
        (directory / f"{name}.pem").write_bytes(who.cert.public_bytes(pem))
        (directory / f"{name}.key").write_bytes(
            who.rsa_key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    message = make_message(size)
    (directory / "message.eml").write_bytes(message)
    prepared = sign_then_encrypt(
        message, alice.rsa_key, alice.cert, alice.chain, [bob.cert], sender_cert=alice.cert
    )
    (directory / "prepared.eml").write_bytes(prepared)


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_one(operation: str, directory: Path) -> dict[str, float]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.serialization import pkcs7

    from gateway.smime import decrypt, encrypt, sign, sign_then_encrypt, verify

    def cert(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())

    def key(name: str) -> rsa.RSAPrivateKey:
        loaded = serialization.load_pem_private_key((directory / f"{name}.key").read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        return loaded

    ca, alice_cert, bob_cert, alice_key, bob_key = (
        cert("ca"),
        cert("alice"),
        cert("bob"),
        key("alice"),
        key("bob"),
    )
    aes = Cipher(algorithms.AES256(os.urandom(32)), modes.CBC(os.urandom(16)))

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    baseline = rss_mb()
    name = "prepared.eml" if operation == "decrypt+verify" else "message.eml"
    message = (directory / name).read_bytes()

    def work() -> None:
        if operation == "sign":
            sign(message, alice_key, alice_cert, [ca])
        elif operation == "encrypt":
            encrypt(message, [bob_cert], sender_cert=alice_cert)
        elif operation == "sign+encrypt":
            sign_then_encrypt(
                message, alice_key, alice_cert, [ca], [bob_cert], sender_cert=alice_cert
            )
        elif operation == "decrypt+verify":
            result = verify(decrypt(message, bob_key, bob_cert), trust_anchors=[ca])
            assert result.status == "valid", result.reason
        else:
            builder = pkcs7.PKCS7EnvelopeBuilder().set_data(message)
            builder = builder.add_recipient(bob_cert).add_recipient(alice_cert)
            builder.set_content_encryption_algorithm(algorithms.AES256).encrypt(
                serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]
            )

    large = len(message) >= 100_000
    repeats = 5 if large else 200
    work()  # warm-up; also the cold run that sets the peak
    elapsed = _median_seconds(work, repeats)
    peak = rss_mb()

    def raw_aes() -> None:
        encryptor = aes.encryptor()
        encryptor.update(memoryview(message)[: len(message) // 16 * 16])
        encryptor.finalize()

    aes_elapsed = _median_seconds(raw_aes, repeats)
    megabytes = len(message) / 1e6
    return {
        "bytes": len(message),
        "seconds": elapsed,
        "mb_per_s": megabytes / elapsed,
        "aes_mb_per_s": megabytes / aes_elapsed,
        "ratio_to_aes": aes_elapsed / elapsed,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "peak_x": (peak - baseline) * 1024 * 1024 / len(message),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10 * 1024, 25 * 1024 * 1024])
    parser.add_argument("--operations", nargs="*", default=list(OPERATIONS))
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--one", nargs=2, metavar=("OPERATION", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--setup", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup(int(args.setup[0]), Path(args.setup[1]))
        return
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]))))
        return
    if not args.json:
        print(
            f"{'operation':<15}{'size':>10}{'ms':>9}{'MB/s':>8}{'AES MB/s':>10}"
            f"{'vs AES':>8}{'base MB':>9}{'peak MB':>9}{'peak x':>8}"
        )
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="smime-bench-") as tmp:
            subprocess.run([sys.executable, __file__, "--setup", str(size), tmp], check=True)
            for operation in args.operations:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", operation, tmp],
                    capture_output=True,
                    check=True,
                    text=True,
                ).stdout
                r = json.loads(out)
                if args.json:
                    print(json.dumps({"operation": operation, "size": size, **r}))
                    continue
                print(
                    f"{operation:<15}{r['bytes']:>10}{r['seconds'] * 1000:>9.1f}"
                    f"{r['mb_per_s']:>8.1f}{r['aes_mb_per_s']:>10.0f}{r['ratio_to_aes']:>8.3f}"
                    f"{r['baseline_rss_mb']:>9.0f}{r['peak_rss_mb']:>9.0f}{r['peak_x']:>8.2f}"
                )


if __name__ == "__main__":
    main()
