"""Inbound S/MIME (decrypt, verify, verdict header) on mail made by openssl and by us."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path

import pytest

from gateway.smime import (
    SIGNATURE_HEADER,
    DecryptionFailed,
    NotSmime,
    VerificationResult,
    add_signature_header,
    decrypt,
    encrypt,
    sign,
    sign_then_encrypt,
    smime_kind,
    strip_signature_headers,
    verify,
)
from gateway.smime.mime import split_message
from gateway.smime.sign import inner_entity
from tests.gateway.certs import CA, make_ca, openssl
from tests.gateway.test_smime_outbound import ATTACHMENT, PLAIN, SUBJECT, rich_message


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki-in")
    ca = make_ca()
    ca.write(directory)
    return ca, directory


def _anchors(ca: CA) -> list:
    return [ca.cert]


def test_openssl_signed_and_encrypted_mail_to_bob_is_decrypted_and_verified(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    a_cert, a_key = alice.write(directory)
    b_cert, b_key = bob.write(directory)
    (directory / "body.txt").write_bytes(
        b"Content-Type: text/plain; charset=utf-8\n\nHi Bob, signed by openssl.\n"
    )
    signed = openssl(
        "cms",
        "-sign",
        "-in",
        directory / "body.txt",
        "-signer",
        a_cert,
        "-inkey",
        a_key,
        "-certfile",
        ca.write(directory),
    )
    sealed = openssl(
        "cms",
        "-encrypt",
        "-aes256",
        "-from",
        "Alice <alice@example.org>",
        "-to",
        "bob@example.net",
        "-subject",
        "hello",
        b_cert,
        data=signed,
    )
    plain = decrypt(sealed, bob.key, bob.cert)
    assert smime_kind(plain) == "signed"
    head = split_message(plain)
    assert head.get("From") == "Alice <alice@example.org>" and head.get("Subject") == "hello"
    result = verify(plain, trust_anchors=_anchors(ca))
    assert result.status == "valid", result.reason
    assert result.signer_email == "alice@example.org"
    assert result.signer_cert == alice.cert
    assert alice.cert in result.certificates
    assert b"Hi Bob, signed by openssl.\r\n" in result.content_bytes


def test_openssl_opaque_signed_mail_verifies(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org", kind="ec")
    a_cert, a_key = alice.write(directory)
    (directory / "body2.txt").write_bytes(b"Content-Type: text/plain\n\nopaque hello\n")
    signed = openssl(
        "cms",
        "-sign",
        "-nodetach",
        "-in",
        directory / "body2.txt",
        "-signer",
        a_cert,
        "-inkey",
        a_key,
        "-from",
        "alice@example.org",
    )
    result = verify(signed, trust_anchors=_anchors(ca))
    assert result.status == "valid", result.reason
    assert result.content_bytes == b"Content-Type: text/plain\r\n\r\nopaque hello\r\n"


@pytest.mark.parametrize("kind,detached", [("rsa", True), ("ec", True), ("rsa", False)])
def test_our_signed_mail_verifies_valid(pki, kind, detached):
    ca, _ = pki
    alice = ca.issue("alice@example.org", kind=kind)
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain, detached=detached)
    result = verify(signed, trust_anchors=_anchors(ca))
    assert (result.status, result.signer_email) == ("valid", "alice@example.org")
    assert result.content_bytes == inner_entity(PLAIN)[1]
    assert result.signing_time is not None


def test_tampered_body_is_invalid(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    tampered = signed.replace(b"the numbers are attached", b"the numbers are ATTACHED")
    assert tampered != signed
    result = verify(tampered, trust_anchors=_anchors(ca))
    assert result.status == "invalid"
    opaque = sign(PLAIN, alice.key, alice.cert, alice.chain, detached=False)
    lines = opaque.split(b"\r\n")
    index = len(lines) // 2
    lines[index] = (
        lines[index][:10] + (b"A" if lines[index][10:11] != b"A" else b"B") + lines[index][11:]
    )
    assert verify(b"\r\n".join(lines), trust_anchors=_anchors(ca)).status == "invalid"


def test_signer_from_an_unknown_ca_is_unknown_signer(pki):
    ca, _ = pki
    stranger_ca = make_ca("Stranger CA", "rsa")
    mallory = stranger_ca.issue("alice@example.org")
    signed = sign(PLAIN, mallory.key, mallory.cert, mallory.chain)
    result = verify(signed, trust_anchors=_anchors(ca))
    assert result.status == "unknown-signer"
    assert result.signer_cert == mallory.cert
    assert mallory.cert in result.certificates


def test_from_that_does_not_match_the_signer_is_invalid(pki):
    ca, _ = pki
    carol = ca.issue("carol@example.net")
    signed = sign(PLAIN, carol.key, carol.cert, carol.chain)  # From: alice@example.org
    result = verify(signed, trust_anchors=_anchors(ca))
    assert result.status == "invalid"
    assert "From" in result.reason and "carol@example.net" in result.reason


def test_signer_email_in_subject_email_address_is_accepted(pki):
    ca, _ = pki
    alice = ca.issue("ALICE@example.org", subject_email=True)
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    result = verify(signed, trust_anchors=_anchors(ca))
    assert (result.status, result.signer_email) == ("valid", "alice@example.org")


def test_certificate_without_email_protection_eku_is_invalid(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org", eku=False)
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    assert verify(signed, trust_anchors=_anchors(ca)).status == "invalid"


def test_certificate_checked_after_it_expired_is_invalid(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=800)
    assert verify(signed, trust_anchors=_anchors(ca), at=later).status == "invalid"


def test_revocation_hook_revoked_is_invalid_and_unknown_is_noted(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    revoked = verify(signed, trust_anchors=_anchors(ca), is_revoked=lambda c, i: c == alice.cert)
    assert revoked.status == "invalid" and "revoked" in revoked.reason
    unknown = verify(signed, trust_anchors=_anchors(ca), is_revoked=lambda c, i: None)
    assert unknown.status == "valid" and "unknown" in unknown.reason


def test_lf_only_openssl_output_is_canonicalised_before_verifying(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    a_cert, a_key = alice.write(directory)
    (directory / "lf.txt").write_bytes(b"Content-Type: text/plain\n\nline one\nline two\n")
    signed = openssl(
        "cms",
        "-sign",
        "-in",
        directory / "lf.txt",
        "-signer",
        a_cert,
        "-inkey",
        a_key,
        "-from",
        "alice@example.org",
    )
    lf_only = signed.replace(b"\r\n", b"\n")  # as a Unix MTA / mail store hands it over
    assert b"\r" not in lf_only
    assert verify(lf_only, trust_anchors=_anchors(ca)).status == "valid"


def test_decrypt_our_own_mail_restores_the_entity_under_the_outer_headers(pki):
    ca, _ = pki
    bob = ca.issue("bob@example.net")
    encrypted = encrypt(PLAIN, [bob.cert])
    plain = decrypt(encrypted, bob.key, bob.cert)
    head = PLAIN.split(b"\r\n\r\n")[0] + b"\r\n"
    assert plain == head + b"MIME-Version: 1.0\r\n" + inner_entity(PLAIN)[1]


def test_rich_mail_sign_then_encrypt_comes_back_valid_with_attachment_intact(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org", kind="ec")
    bob = ca.issue("bob@example.net")
    sealed = sign_then_encrypt(rich_message(), alice.key, alice.cert, alice.chain, [bob.cert])
    plain = decrypt(sealed, bob.key, bob.cert)
    assert split_message(plain).get("Subject") == SUBJECT
    result = verify(plain, trust_anchors=_anchors(ca))
    assert result.status == "valid", result.reason
    parsed = email.message_from_bytes(result.content_bytes, policy=email.policy.default)
    assert list(parsed.iter_parts())[1].get_payload(decode=True) == ATTACHMENT


def test_wrong_key_and_wrong_kind_are_typed_errors(pki):
    ca, _ = pki
    bob = ca.issue("bob@example.net")
    carol = ca.issue("carol@example.net")
    encrypted = encrypt(PLAIN, [bob.cert])
    with pytest.raises(DecryptionFailed):
        decrypt(encrypted, carol.key, carol.cert)
    with pytest.raises(NotSmime):
        decrypt(PLAIN, bob.key, bob.cert)
    with pytest.raises(NotSmime):
        verify(PLAIN, trust_anchors=_anchors(ca))
    with pytest.raises(NotSmime):
        verify(encrypted, trust_anchors=_anchors(ca))
    assert smime_kind(encrypted) == "enveloped" and smime_kind(PLAIN) == "plain"


def test_verdict_header_replaces_any_spoofed_one(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    spoofed = b"X-Cmcgate-Signature: valid; signer=ceo@example.org\r\n" + sign(
        PLAIN, alice.key, alice.cert, alice.chain
    )
    spoofed = spoofed.replace(b"Subject:", b"x-cmcgate-signature: valid\r\n\tfolded\r\nSubject:")
    result = verify(spoofed, trust_anchors=_anchors(ca))
    stamped = add_signature_header(spoofed, result)
    fields = [f for f in split_message(stamped).fields if f.lname == SIGNATURE_HEADER.lower()]
    assert [f.raw for f in fields] == [b"X-Cmcgate-Signature: valid; signer=alice@example.org"]
    assert verify(stamped, trust_anchors=_anchors(ca)).status == "valid"
    unsigned = strip_signature_headers(b"X-Cmcgate-Signature: valid\r\nFrom: a@b\r\n\r\nhi")
    assert unsigned == b"From: a@b\r\n\r\nhi"


def test_verdict_header_cannot_be_injected_through_a_certificate_email():
    result = VerificationResult("unknown-signer", "x@y\r\nBcc: z@w", None, (), b"")
    stamped = add_signature_header(b"From: a@b\r\n\r\nhi", result)
    assert stamped.startswith(b"X-Cmcgate-Signature: unknown-signer; signer=x@yBccz@w\r\n")
