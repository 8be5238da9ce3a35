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

import argparse
import json
import logging
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
    DOMAIN,
    PASSWORD,
    PRODUCT,
    Pair,
    enrol_rate,
    make_csrs,
    write_properties,
)
from cryptography.hazmat.primitives import serialization  # noqa: E402

from ca.init import initialise  # noqa: E402
from ca.keys import KeyType, raw_sign_rate  # noqa: E402
from ca.keys.softhsm import softhsm_missing_reason, softhsm_token_context  # noqa: E402
from ca.ra.auth import RaAuth  # noqa: E402
from ca.service.certs import issue_access_certificate  # noqa: E402
from ca.service.http import CaService, ServiceThread  # noqa: E402


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
        with softhsm_token_context(label="cmcgate-bench-ra") as token:
            directory = tmp / "ca"
            initialise(
                directory, key_backend="pkcs11", pkcs11_module=token.module_path,
                token_label=token.token_label, pin_file=token.pin_file, key_type=key_type,
                progress=lambda _line: None, base_url="http://pki.example.org",
                account_id=ACCOUNT, email_domains=(DOMAIN,), product_id=PRODUCT,
            )  # fmt: skip
            with token.backend() as hsm:
                raw = raw_sign_rate(hsm, key_type, min(seconds, 3.0))
            service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", 0),
                                workers=workers, ra=("127.0.0.1", 0))  # fmt: skip
            thread = ServiceThread(service)
            thread.start()
            try:
                auth = RaAuth(service.ca)
                auth.create_user("bench", {ACCOUNT: ["issue", "read"]}, by="bench")
                jwt = auth.exchange("bench", auth.create_key("bench", by="bench"))
                verify = tmp / "ra-trust.pem"
                verify.write_bytes((directory / "infra-ca.pem").read_bytes()
                                   + (directory / "root-ca.pem").read_bytes())  # fmt: skip
                base = f"https://127.0.0.1:{service.ra_port}/pki/api/v2"
                access = issue_access_certificate(service.ca, ACCOUNT, PASSWORD)
                p12 = tmp / f"{ACCOUNT}.p12"
                p12.write_bytes(access.p12)
                issuer = service.ca.issuing_cert.subject.rfc4514_string()
                props = write_properties(tmp, service.https_port, p12, issuer,
                                         directory / "root-ca.pem")  # fmt: skip
                rows = []
                for n in clients:
                    rest = rest_rate(base, str(verify), jwt, pairs, n, seconds)
                    cmc = enrol_rate(props, pairs, n, seconds)
                    rows.append({"clients": n, "rest": rest, "cmc": cmc})
            finally:
                thread.stop()
    return {"key_type": key_type.value, "seconds": seconds, "workers": workers,
            "raw_sign_per_s": raw, "rows": rows}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,4", help="parallel clients, comma-separated")
    parser.add_argument("--key-type", default="rsa3072", help="CA key type (default rsa3072)")
    parser.add_argument("--workers", type=int, default=4, help="server worker threads (4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = softhsm_missing_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.ERROR)
    clients = [int(n) for n in args.clients.split(",") if n.strip()]
    result = run(args.seconds, clients, KeyType.parse(args.key_type), args.workers)
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
