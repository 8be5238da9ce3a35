"""Certificate issuance per second: the RA REST API vs CMC, same CA, same run, CA keys in
SoftHSM2.

    .venv/bin/python bench/ra_rest.py [--seconds 5] [--clients 1,4] [--key-type rsa3072]
                                      [--workers 4] [--json]

Sets up the CA as bench/ca_cmc.py does (SoftHSM2 token in a temp dir, ``ca init`` with
``key_backend='pkcs11'``) and starts :class:`ca.service.http.CaService` with the RA listener.
For each N of ``--clients``: N threads, each with its own keep-alive HTTPS session and JWT,
``POST /pki/api/v2/orders`` with pre-built EC P-256 CSRs for ``--seconds`` (answer: the order
with the certificate and chain as PEM); then N CMC clients enrol the same way for the same
time (bench/ca_cmc.py's ``enrol_rate``). Both paths run ``CertificateAuthority.submit``; the
difference is the protocol: JWT check + JSON vs CMS-signed CMC request/response.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402
from ca_cmc import (  # noqa: E402  (bench/ca_cmc.py)
    ACCOUNT,
    PRODUCT,
    Pair,
    bench_arguments,
    enrol_rate,
    make_csrs,
    running_ca,
)
from cryptography.hazmat.primitives import serialization  # noqa: E402

from ca.keys import KeyType  # noqa: E402
from ca.ra.auth import RaAuth  # noqa: E402


def rest_rate(
    base: str, verify: str, token: str, pairs: list[Pair], clients: int, seconds: float
) -> dict[str, Any]:
    """Orders per second with ``clients`` threads, each with its own keep-alive session."""
    pems = [csr.public_bytes(serialization.Encoding.PEM).decode() for csr, _ in pairs]
    counts = [0] * clients
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    deadline = [time.perf_counter() + 3600]
    finished = [0.0] * clients

    def order(session: requests.Session, pem: str) -> None:
        answer = session.post(
            f"{base}/orders", json={"client": ACCOUNT, "product": PRODUCT, "csr": pem},
            headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=60,
        )  # fmt: skip
        if answer.status_code != 201 or answer.json().get("status") != "ISSUED":
            raise RuntimeError(f"{answer.status_code}: {answer.text[:200]}")

    def worker(index: int) -> None:
        with requests.Session() as session:
            try:
                order(session, pems[index % len(pems)])  # warm-up: TLS, connection pool
            except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
                errors.append(repr(exc))
            ready.wait()
            done = 0
            while time.perf_counter() < deadline[0]:
                try:
                    order(session, pems[(index + done * clients) % len(pems)])
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
                    break
                done += 1
            counts[index] = done
            finished[index] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    deadline[0] = start + seconds
    for thread in threads:
        thread.join()
    elapsed = max(finished) - start
    total = sum(counts)
    return {"clients": clients, "issued": total, "seconds": elapsed,
            "per_s": total / elapsed, "errors": errors[:5]}  # fmt: skip


def run(seconds: float, clients: list[int], key_type: KeyType, workers: int) -> dict[str, Any]:
    pairs = make_csrs(64)
    with tempfile.TemporaryDirectory(prefix="cmcgate-bench-ra-") as name:
        tmp = Path(name)
        with running_ca(tmp, key_type, seconds, workers, ra=("127.0.0.1", 0)) as (
            service, raw, props,
        ):  # fmt: skip
            auth = RaAuth(service.ca)
            auth.create_user("bench", {ACCOUNT: ["issue", "read"]}, by="bench")
            jwt = auth.exchange("bench", auth.create_key("bench", by="bench"))
            directory = service.directory
            verify = tmp / "ra-trust.pem"
            verify.write_bytes((directory / "infra-ca.pem").read_bytes()
                               + (directory / "root-ca.pem").read_bytes())  # fmt: skip
            base = f"https://127.0.0.1:{service.ra_port}/pki/api/v2"
            rows = []
            for n in clients:
                rest = rest_rate(base, str(verify), jwt, pairs, n, seconds)
                cmc = enrol_rate(props, pairs, n, seconds)
                rows.append({"clients": n, "rest": rest, "cmc": cmc})
    return {"key_type": key_type.value, "seconds": seconds, "workers": workers,
            "raw_sign_per_s": raw, "rows": rows}  # fmt: skip


def main() -> int:
    args = bench_arguments(__doc__, "1,4")
    if args is None:
        return 1
    result = run(args.seconds, args.client_counts, args.key, args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"issuance over HTTPS on loopback, CA keys {result['key_type']} in SoftHSM2, "
          f"{result['workers']} server workers, {args.seconds:.1f} s each; raw SoftHSM "
          f"signatures/s {result['raw_sign_per_s']:.1f}")  # fmt: skip
    for row in result["rows"]:
        rest, cmc = row["rest"]["per_s"], row["cmc"]["enrolments_per_s"]
        print(f"{row['clients']} client(s): REST {rest:7.1f}/s   CMC {cmc:7.1f}/s   "
              f"REST/CMC {rest / cmc if cmc else float('nan'):.2f}")  # fmt: skip
        for error in row["rest"]["errors"] + row["cmc"]["errors"]:
            print(f"  error: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
