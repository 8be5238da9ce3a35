"""DKIM signatures made by cmcgate verify with dkimpy, an independent implementation."""

from __future__ import annotations

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.dkim import DkimError, DkimKey, relaxed_body, relaxed_header, sign


@pytest.fixture(scope="module")
def key() -> DkimKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return DkimKey("example.org", "mail2026", private)


def dns_for(key: DkimKey):
    public = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{key.selector}._domainkey.{key.domain}.".encode()
        return record

    return dnsfunc


MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@partner.example\r\n"
    b"Subject:  Quarterly   report\r\n"
    b"\tcontinued\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n\r\nthe numbers\t are in.\r\n\r\n\r\n"
)


def test_signed_message_verifies_with_dkimpy(key: DkimKey) -> None:
    signed = sign(MESSAGE, key)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkimpy.verify(signed, dnsfunc=dns_for(key))


def test_lf_only_input_is_signed_as_crlf_and_verifies(key: DkimKey) -> None:
    signed = sign(MESSAGE.replace(b"\r\n", b"\n"), key)
    assert dkimpy.verify(signed, dnsfunc=dns_for(key))


def test_body_change_breaks_the_signature(key: DkimKey) -> None:
    signed = sign(MESSAGE, key)
    assert not dkimpy.verify(signed.replace(b"numbers", b"Numbers"), dnsfunc=dns_for(key))


def test_header_added_in_transit_breaks_the_oversigned_signature(key: DkimKey) -> None:
    signed = sign(MESSAGE, key)
    forged = signed.replace(b"To: bob", b"Subject: urgent, pay now\r\nTo: bob")
    assert not dkimpy.verify(forged, dnsfunc=dns_for(key))


def test_empty_body_verifies(key: DkimKey) -> None:
    signed = sign(b"From: alice@example.org\r\nSubject: x\r\n\r\n", key)
    assert dkimpy.verify(signed, dnsfunc=dns_for(key))


def test_message_without_from_is_refused(key: DkimKey) -> None:
    with pytest.raises(DkimError):
        sign(b"Subject: x\r\n\r\nbody\r\n", key)


def test_relaxed_canonicalisation_matches_rfc6376_examples() -> None:
    # RFC 6376 §3.4.6 example.
    assert relaxed_header(b"A: X\r\n") == b"a:X\r\n"
    assert relaxed_header(b"B : Y\t\r\n\tZ  \r\n") == b"b:Y Z\r\n"
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
