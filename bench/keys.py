"""Raw signing rates of the key backends: SoftHSM2 (PKCS#11) against software keys.

    .venv/bin/python bench/keys.py [--seconds 1.0] [--threads 4] [--json]

Signs a 64-byte message with SHA-256 (RSA PKCS#1 v1.5 / ECDSA) through the same key handles
the CA uses, one key per type, single-threaded, then with ``--threads`` threads sharing one
RSA-2048 key. Other benchmarks divide by these numbers (``ca.keys.raw_sign_rate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

from ca.keys import KeyBackend, KeyType, RsaKeyHandle, raw_sign_rate  # noqa: E402
from ca.keys.software import SoftwareBackend  # noqa: E402
from tests.fixtures.softhsm import softhsm_missing_reason, softhsm_token_context  # noqa: E402

TYPES = (KeyType.RSA2048, KeyType.RSA3072, KeyType.EC_P256)


def threaded_rate(backend: KeyBackend, threads: int, seconds: float) -> float:
    key = backend.generate("bench-threads", KeyType.RSA2048)
    assert isinstance(key, RsaKeyHandle)
    deadline = time.perf_counter() + seconds

    def worker(_: int) -> int:
        n = 0
        while time.perf_counter() < deadline:
            key.sign(b"\x00" * 64, padding.PKCS1v15(), hashes.SHA256())
            n += 1
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(worker, range(threads)))
    rate = total / (time.perf_counter() - start)
    backend.delete("bench-threads")
    return rate


def measure(backend: KeyBackend, seconds: float, threads: int) -> dict[str, float]:
    rates = {t.value: raw_sign_rate(backend, t, seconds) for t in TYPES}
    rates[f"rsa2048 x{threads} threads"] = threaded_rate(backend, threads, seconds)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with SoftwareBackend(Path(tmp) / "keys", passphrase="bench") as soft:
            results["software"] = measure(soft, args.seconds, args.threads)
    reason = softhsm_missing_reason()
    if reason is None:
        with softhsm_token_context(label="cmcgate-bench") as token, token.backend() as hsm:
            results["softhsm2"] = measure(hsm, args.seconds, args.threads)
    else:
        print(f"skipping SoftHSM2: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"raw signatures/s (SHA-256, {args.seconds:.1f} s per figure)")
    names = list(next(iter(results.values())))
    print(f"{'key':<22}" + "".join(f"{b:>12}" for b in results))
    for name in names:
        print(f"{name:<22}" + "".join(f"{results[b][name]:>12.0f}" for b in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
