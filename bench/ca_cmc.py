"""End-to-end CMC enrolments per second over HTTPS on loopback, CA keys in SoftHSM2.

    .venv/bin/python bench/ca_cmc.py [--seconds 5] [--clients 1,4,8] [--key-type rsa3072]
                                     [--workers 4] [--json]

Sets up its own SoftHSM2 token in a temp dir (``ca.keys.softhsm.softhsm_token_context``),
initialises the bundled CA on it (``key_backend='pkcs11'``), starts ``cmcgate ca serve``'s
:class:`ca.service.http.CaService` on loopback (HTTPS with client certificates; ``--workers`` CMC
handler threads) and issues an access certificate.  Then, for each N of ``--clients``, N
threads each build their own CMC client from a properties file in the seed's form
(``config.properties.load`` + ``cmc.client_config.client_from_config``) and enrol pre-built
EC P-256 CSRs (subscriber key generation is not timed) one after the other for ``--seconds``.

Each enrolment is the whole path: CMC request signed with the access key, TLS with client
certificate, the server's CMS checks, order store, pre-issuance pkilint, HSM signature,
post-issuance pkilint, CMC response signed by the CMC signer key (also in the HSM), and the
client's validation of the response and the certificate chain.

Rates are divided by the raw SoftHSM sign rate of a key of the issuing CA's type on the same
token, measured in the same run (``ca.keys.raw_sign_rate``); for comparison, the rate of
``CertificateAuthority.submit`` called directly (one thread, no CMC, no TLS) is measured too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ca.init import initialise  # noqa: E402
from ca.keys import KeyType, raw_sign_rate  # noqa: E402
from ca.keys.softhsm import softhsm_missing_reason, softhsm_token_context  # noqa: E402
from ca.service.certs import issue_access_certificate  # noqa: E402
from ca.service.http import CaService, ServiceThread  # noqa: E402
from cmc.client import CmcClient  # noqa: E402
from cmc.client_config import client_from_config  # noqa: E402
from config.properties import load  # noqa: E402
from config.totemo import pki_connection_properties

DOMAIN = "bench.example.org"
ACCOUNT = "bench.ra"
PRODUCT = "bench-silver"
PASSWORD = b"bench-access-secret"

Pair = tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]


def make_csrs(count: int) -> list[Pair]:
    pairs = []
    for i in range(count):
        email = f"user{i}@{DOMAIN}"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
            .sign(key, hashes.SHA256())
        )
        pairs.append((csr, key))
    return pairs


def write_properties(tmp: Path, port: int, p12: Path, issuer: str, roots: Path) -> Path:
    """The gateway's PKI connection in the seed's (Totemo/SwissSign) form."""
    password = tmp / "p12.pass"
    password.write_bytes(PASSWORD + b"\n")
    path = tmp / "gateway.properties"
    path.write_text(
        pki_connection_properties(
            server_name="localhost",
            server_port=port,
            account=ACCOUNT,
            product=PRODUCT,
            issuer_dn=issuer,
            access_p12=p12,
            access_password_file=password,
            trusted_roots=roots,
            type_="rfc5272",
            extra={
                "cmcgate.pki.retries": 1,
                "cmcgate.gateway.internalDomains": DOMAIN,
                "cmcgate.keys.backend": "software",
                "cmcgate.keys.directory": tmp / "gw-keys",
                "cmcgate.keys.passphraseFile": password,
            },
        )  # fmt: skip
    )
    return path


def new_client(props: Path) -> CmcClient:
    pki = load(props).pki
    assert pki is not None
    return client_from_config(pki)


def enrol_rate(props: Path, pairs: list[Pair], clients: int, seconds: float) -> dict[str, Any]:
    """Enrolments per second with ``clients`` threads, each with its own CmcClient."""
    opened = [new_client(props) for _ in range(clients)]
    counts = [0] * clients
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]
    finished = [0.0] * clients

    def worker(index: int, client: CmcClient) -> None:
        csr, key = pairs[index % len(pairs)]
        try:
            client.enroll(csr, key)  # warm-up: TLS session, connection pool
        except Exception as exc:  # noqa: BLE001 - reported, the bench goes on
            errors.append(repr(exc))
        ready.wait()
        done = 0
        while time.perf_counter() < deadline[0]:
            csr, key = pairs[(index + done * clients) % len(pairs)]
            try:
                client.enroll(csr, key)
            except Exception as exc:  # noqa: BLE001
                errors.append(repr(exc))
                break
            done += 1
        counts[index] = done
        finished[index] = time.perf_counter()

    threads = [
        threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(opened)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline[0] = time.perf_counter() + 3600  # set for real once everyone is warm
        ready.wait()
        start = time.perf_counter()
        deadline[0] = start + seconds
        for thread in threads:
            thread.join()
    finally:
        for client in opened:
            client.close()
    elapsed = max(finished) - start
    total = sum(counts)
    return {
        "clients": clients,
        "enrolled": total,
        "seconds": elapsed,
        "enrolments_per_s": total / elapsed,
        "latency_ms": 1000.0 * elapsed * clients / total if total else None,
        "errors": errors[:5],
    }


def direct_rate(service: CaService, pairs: list[Pair], seconds: float) -> float:
    """``CertificateAuthority.submit`` in-process, one thread: the CA without CMC and TLS."""
    ca = service.ca
    ders = [csr.public_bytes(serialization.Encoding.DER) for csr, _ in pairs]
    ca.submit(ders[0], ACCOUNT, PRODUCT, requested_by="bench")
    count = 0
    start = time.perf_counter()
    while True:
        result = ca.submit(ders[count % len(ders)], ACCOUNT, PRODUCT, requested_by="bench")
        assert result.certificate is not None
        count += 1
        now = time.perf_counter()
        if now >= start + seconds:
            return count / (now - start)


@contextmanager
def running_ca(
    tmp: Path, key_type: KeyType, seconds: float, workers: int, **service_kwargs: Any
) -> Iterator[tuple[CaService, float, Path]]:
    """A CA on a fresh SoftHSM2 token served on loopback (``service_kwargs`` go to
    :class:`CaService`), the raw sign rate of its issuing key type on that token, and the
    gateway's properties file (access certificate included) for CMC to it."""
    with softhsm_token_context(label="cmcgate-bench") as token:
        directory = tmp / "ca"
        initialise(
            directory, key_backend="pkcs11", pkcs11_module=token.module_path,
            token_label=token.token_label, pin_file=token.pin_file, key_type=key_type,
            progress=lambda _line: None, base_url="http://pki.example.org",
            account_id=ACCOUNT, email_domains=(DOMAIN,), product_id=PRODUCT,
        )  # fmt: skip
        with token.backend() as hsm:
            raw = raw_sign_rate(hsm, key_type, min(seconds, 3.0))
        service = CaService(
            directory, https=("127.0.0.1", 0), http=("127.0.0.1", 0), workers=workers,
            **service_kwargs,
        )  # fmt: skip
        thread = ServiceThread(service)
        thread.start()
        try:
            access = issue_access_certificate(service.ca, ACCOUNT, PASSWORD)
            p12 = tmp / f"{ACCOUNT}.p12"
            p12.write_bytes(access.p12)
            issuer = service.ca.issuing_cert.subject.rfc4514_string()
            props = write_properties(
                tmp, service.https_port, p12, issuer, directory / "root-ca.pem"
            )
            yield service, raw, props
        finally:
            thread.stop()


def bench_arguments(doc: str | None, clients: str) -> argparse.Namespace | None:
    """The options both CA benches take; None (after saying why) without SoftHSM2."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default=clients, help="parallel clients, comma-separated")
    parser.add_argument("--key-type", default="rsa3072", help="CA key type (default rsa3072)")
    parser.add_argument("--workers", type=int, default=4, help="server handler threads (4)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = softhsm_missing_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return None
    logging.basicConfig(level=logging.ERROR)
    args.client_counts = [int(n) for n in args.clients.split(",") if n.strip()]
    args.key = KeyType.parse(args.key_type)
    return args


def run(seconds: float, clients: list[int], key_type: KeyType, workers: int) -> dict[str, Any]:
    pairs = make_csrs(64)
    with tempfile.TemporaryDirectory(prefix="cmcgate-bench-cmc-") as name:
        with running_ca(Path(name), key_type, seconds, workers) as (service, raw, props):
            direct = direct_rate(service, pairs, seconds)
            rows = [enrol_rate(props, pairs, n, seconds) for n in clients]
    for row in rows:
        row["ratio"] = row["enrolments_per_s"] / raw
        row["vs_direct"] = row["enrolments_per_s"] / direct
    return {
        "key_type": key_type.value,
        "seconds": seconds,
        "workers": workers,
        "raw_sign_per_s": raw,
        "direct_submit_per_s": direct,
        "direct_ratio": direct / raw,
        "cmc": rows,
    }


def main() -> int:
    args = bench_arguments(__doc__, "1,4,8")
    if args is None:
        return 1
    result = run(args.seconds, args.client_counts, args.key, args.workers)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    raw = result["raw_sign_per_s"]
    print(
        f"CMC enrolments over HTTPS on loopback, CA keys {result['key_type']} in SoftHSM2, "
        f"{result['workers']} server workers, {args.seconds:.1f} s each"
    )
    print(f"{'raw SoftHSM signatures/s':<34}{raw:>9.1f}")
    print(
        f"{'CA.submit direct, 1 thread':<34}{result['direct_submit_per_s']:>9.1f}"
        f"   = {result['direct_ratio']:.3f} x raw sign rate"
    )
    for row in result["cmc"]:
        label = f"CMC enrolments/s, {row['clients']} client(s)"
        latency = row["latency_ms"]
        print(
            f"{label:<34}{row['enrolments_per_s']:>9.1f}"
            f"   = {row['ratio']:.3f} x raw sign rate, {row['vs_direct']:.2f} x direct"
            f" ({row['enrolled']} enrolled, {latency:.0f} ms each)"
            if latency is not None
            else f"{label:<34}{0:>9.1f}   (nothing enrolled)"
        )
        for error in row["errors"]:
            print(f"  error: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
