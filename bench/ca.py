"""Certificates issued per second by the bundled CA with its key in SoftHSM2, lint on and off.

    .venv/bin/python bench/ca.py [--seconds 3] [--key-type rsa3072] [--json]

Sets up its own SoftHSM2 token in a temp dir, runs ``cmcgate ca init`` (``ca.init.initialise``)
on it, and then submits pre-built EC P-256 CSRs (subscriber key generation is not timed) to
``CertificateAuthority.submit`` for a Silver (mailbox) product, one after the other, for
``--seconds`` each:

* lint on -- the CA as it runs: pre-issuance pkilint on a throwaway-signed twin, HSM signature,
  post-issuance pkilint; every order's status changes and audit records go to SQLite (ca.db);
* lint off -- the same with a linter that accepts everything (what pkilint costs).

Each rate is divided by the raw SoftHSM sign rate of a key of the same type on the same token,
measured in the same run (``ca.keys.raw_sign_rate``): a ratio of 1.0 would mean issuance costs
no more than the one HSM signature each certificate needs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from ca.authority import CertificateAuthority  # noqa: E402
from ca.init import initialise  # noqa: E402
from ca.keys import KeyType, raw_sign_rate  # noqa: E402
from tests.fixtures.softhsm import softhsm_missing_reason, softhsm_token_context  # noqa: E402

DOMAIN = "bench.example.org"
PRODUCT = "silver"


class NoLint:
    """Stands in for ca.profiles.lint.CertificateLinter: every certificate passes,
    nothing is checked."""

    def check_prepared(self, prepared: Any) -> list[Any]:
        return []

    def check(self, cert_der: bytes, kind: Any = None) -> list[Any]:
        return []


def make_csrs(count: int) -> list[bytes]:
    csrs = []
    for i in range(count):
        email = f"user{i}@{DOMAIN}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.DER))
    return csrs


def issue_rate(ca: CertificateAuthority, csrs: list[bytes], seconds: float) -> tuple[float, int]:
    """Certificates per second issued from ``csrs`` (cycled) for about ``seconds``."""
    ca.submit(csrs[0], "bench.ra", PRODUCT, requested_by="bench")  # warm-up: sessions, caches
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        result = ca.submit(csrs[count % len(csrs)], "bench.ra", PRODUCT, requested_by="bench")
        assert result.certificate is not None
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start), count


def run(seconds: float, key_type: KeyType) -> dict[str, Any]:
    csrs = make_csrs(64)
    with tempfile.TemporaryDirectory(prefix="cmcgate-bench-ca-") as tmp:
        with softhsm_token_context(label="cmcgate-bench") as token:
            initialise(
                Path(tmp) / "ca",
                key_backend="pkcs11",
                pkcs11_module=token.module_path,
                token_label=token.token_label,
                pin_file=token.pin_file,
                key_type=key_type,
                progress=lambda _line: None,
                base_url="http://pki.example.org",
                account_id="bench.ra",
                email_domains=(DOMAIN,),
                product_id=PRODUCT,
            )
            with token.backend() as hsm:
                raw = raw_sign_rate(hsm, key_type, seconds)
            ca = CertificateAuthority.open(Path(tmp) / "ca" / "ca.yaml")
            try:
                lint_on, issued_on = issue_rate(ca, csrs, seconds)
                ca.linter = NoLint()  # type: ignore[assignment]
                lint_off, issued_off = issue_rate(ca, csrs, seconds)
            finally:
                ca.close()
    return {
        "key_type": key_type.value,
        "seconds": seconds,
        "raw_sign_per_s": raw,
        "lint_on": {"certs_per_s": lint_on, "issued": issued_on, "ratio": lint_on / raw},
        "lint_off": {"certs_per_s": lint_off, "issued": issued_off, "ratio": lint_off / raw},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--key-type", default="rsa3072", help="CA key type (default rsa3072)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = softhsm_missing_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    result = run(args.seconds, KeyType.parse(args.key_type))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    raw = result["raw_sign_per_s"]
    print(
        f"bundled CA issuance, CA key {result['key_type']} in SoftHSM2, {args.seconds:.1f} s each"
    )
    print(f"{'raw SoftHSM signatures/s':<28}{raw:>10.1f}")
    for name in ("lint_on", "lint_off"):
        r = result[name]
        label = name.replace("_", " ")
        print(
            f"{'certificates/s, ' + label:<28}{r['certs_per_s']:>10.1f}"
            f"   = {r['ratio']:.3f} x raw sign rate ({r['issued']} issued)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
