"""Throughput of the CMC message library (not a test): ``python bench/cmc.py [seconds]``.

Prints Full PKI Requests built+signed per second and Full PKI Responses parsed+validated
per second, each also as a ratio to the raw RSA-2048 sign / verify rate of a plain
cryptography key measured in the same run (so the numbers travel between machines).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from cmc.messages.api import (  # noqa: E402
    CMCStatus,
    Signer,
    StatusInfo,
    build_full_request,
    build_full_response,
    validate_response,
)


def rate(action: Callable[[], object], seconds: float) -> float:
    action()  # warm up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


def certificate(
    key: rsa.RSAPrivateKey, name: str, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey, ca: bool
) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def main(seconds: float = 2.0) -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = certificate(
        ca_key,
        "Bench CA",
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")]),
        ca_key,
        True,
    )
    issued = certificate(user_key, "user@example.org", ca.subject, ca_key, False)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "user@example.org")]))
        .sign(user_key, hashes.SHA256())
    )
    data = b"x" * 200
    signature = user_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    public = user_key.public_key()

    raw_sign = rate(lambda: user_key.sign(data, padding.PKCS1v15(), hashes.SHA256()), seconds)
    raw_verify = rate(
        lambda: public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256()), seconds
    )

    user = Signer(user_key)
    request = build_full_request(signer=user, requests=[csr])
    requests_per_s = rate(lambda: build_full_request(signer=user, requests=[csr]), seconds)

    response = build_full_response(
        signer=Signer(ca_key, ca),
        statuses=[StatusInfo(CMCStatus.SUCCESS, (1,))],
        request=request,
        certificates=[issued],
    ).der
    responses_per_s = rate(
        lambda: validate_response(
            response, request=request, trust_anchors=[ca], issuer_dn=ca.subject
        ),
        seconds,
    )
    print(f"raw RSA-2048 sign:                {raw_sign:10.1f} /s")
    print(f"raw RSA-2048 verify:              {raw_verify:10.1f} /s")
    print(
        f"Full PKI Request build+sign:      {requests_per_s:10.1f} /s  "
        f"({requests_per_s / raw_sign:.2f} x raw sign)"
    )
    print(
        f"Full PKI Response parse+validate: {responses_per_s:10.1f} /s  "
        f"({responses_per_s / raw_verify:.3f} x raw verify)"
    )


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
