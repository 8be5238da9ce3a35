"""Messages made by BouncyCastle parse, verify and read exactly what BouncyCastle read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cmc.errors import CMCFailure
from cmc.messages.api import (
    CertificationRequest,
    CMCFailInfo,
    CMCStatus,
    FullPKIRequest,
    FullPKIResponse,
    parse_request,
    parse_response,
    validate_response,
    verify_request,
)
from cmc.messages.cms import verify_chain, verify_signed_data

AT = datetime(2026, 12, 1, tzinfo=UTC)


def read_txt(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and " " not in key:
            values.setdefault(key, value)
    return values


def ca_cert(interop_dir: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((interop_dir / "ca.pem").read_bytes())


@pytest.mark.parametrize(
    ("name", "key_file"), [("request-rsa", "user-rsa.key"), ("request-ec", "user-ec.key")]
)
def test_bouncycastle_request_parses_and_verifies_with_the_csr_key(
    interop_dir: Path, name: str, key_file: str
) -> None:
    expected = read_txt(interop_dir / f"{name}.txt")
    request = parse_request((interop_dir / f"{name}.der").read_bytes())
    assert isinstance(request, FullPKIRequest)
    assert request.transaction_id == int(expected["transactionId"])
    assert request.sender_nonce == bytes.fromhex(expected["senderNonce"])
    kind, _, ski = expected["signerId"].partition(":")
    assert request.signer_id.kind == kind
    assert request.signer_id.key_identifier == bytes.fromhex(ski)
    (tcr,) = request.pki_data.requests
    assert isinstance(tcr, CertificationRequest) and tcr.body_part_id == 1
    key = serialization.load_pem_private_key((interop_dir / key_file).read_bytes(), None)
    assert tcr.csr.public_key() == key.public_key()
    verified = verify_request(request)
    assert verified.content_type == "1.3.6.1.5.5.7.12.2"
    assert verified.signer_certificate is None
    assert verified.signer_public_key == key.public_key()
    # and explicitly with the CSR's key, as the gateway's verifier would be called
    verify_signed_data(request.der, signer_public_key=tcr.csr.public_key())


def _check_common_response(interop_dir: Path, name: str) -> tuple[FullPKIResponse, dict[str, str]]:
    expected = read_txt(interop_dir / f"{name}.txt")
    data = (interop_dir / f"{name}.der").read_bytes()
    response = parse_response(data)
    assert isinstance(response, FullPKIResponse)
    assert response.transaction_id == int(expected["transactionId"])
    assert response.recipient_nonce == bytes.fromhex(expected["recipientNonce"])
    assert response.sender_nonce == bytes.fromhex(expected["senderNonce"])
    assert [(c.body_part_id, c.name) for c in response.pki_response.controls] == [
        (1, "statusInfoV2"),
        (2, "recipientNonce"),
        (3, "transactionId"),
        (4, "senderNonce"),
    ]
    verified = verify_signed_data(data)
    anchor = ca_cert(interop_dir)
    assert verified.signer_certificate == anchor
    assert verify_chain(verified.signer_certificate, verified.certificates, [anchor], at=AT) == [
        anchor
    ]
    return response, expected


def test_bouncycastle_success_response_validates_against_our_request(interop_dir: Path) -> None:
    response, expected = _check_common_response(interop_dir, "response-success")
    (status,) = response.statuses
    assert status.status == CMCStatus.SUCCESS and status.body_list == (1,)
    assert expected["status"].startswith("success")
    request = parse_request((interop_dir / "request-rsa.der").read_bytes())
    assert isinstance(request, FullPKIRequest)
    anchor = ca_cert(interop_dir)
    result = validate_response(
        response.der, request=request, trust_anchors=[anchor], issuer_dn=anchor.subject, at=AT
    )
    assert result.issued is not None
    assert result.issued.subject.rfc4514_string() == "CN=alice@example.org"
    assert f"{result.issued.serial_number:x}" == "7c3289286079ecd1"
    assert result.issued_chain == (anchor,)


def test_bouncycastle_failed_response_raises_bad_identity(interop_dir: Path) -> None:
    response, expected = _check_common_response(interop_dir, "response-failed")
    (status,) = response.statuses
    assert status.status == CMCStatus.FAILED
    assert status.fail_info == CMCFailInfo.BAD_IDENTITY
    assert expected["status"] == "failed bodyList=[1] failInfo=badIdentity"
    request = parse_request((interop_dir / "request-ec.der").read_bytes())
    assert isinstance(request, FullPKIRequest)
    with pytest.raises(CMCFailure) as caught:
        validate_response(
            response.der, request=request, trust_anchors=[ca_cert(interop_dir)], at=AT
        )
    assert caught.value.fail_info == "badIdentity"
    assert caught.value.permanent
