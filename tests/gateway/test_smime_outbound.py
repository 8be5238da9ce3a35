"""Outbound S/MIME (sign, encrypt, sign+encrypt) judged by the openssl 3 CLI."""

from __future__ import annotations

import email
import email.policy
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms

from gateway.smime import (
    MalformedMessage,
    NoRecipients,
    SigningFailed,
    UnsupportedRecipient,
    encrypt,
    sign,
    sign_then_encrypt,
)
from gateway.smime.mime import split_message, split_multipart
from gateway.smime.sign import inner_entity
from tests.gateway.certs import CA, make_ca, openssl

PLAIN = (
    b"Received: from mua.example.org by mx.example.org; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <q1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe numbers are attached.\r\n"
)
ATTACHMENT = bytes(range(256)) * 8 + os.urandom(3000)
SUBJECT = "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln_=E2=9C=93?="
TEXT = "Grüße aus Köln ✓ — ünïcödé body\nline with trailing space \n"


def rich_message() -> bytes:
    """Non-ASCII subject (RFC 2047), 8-bit UTF-8 body, binary attachment in CTE binary."""
    return (
        b"From: alice@example.org\n"
        b"To: bob@example.net\n"
        b"Subject: " + SUBJECT.encode() + b"\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\n'
        b"\n"
        b"preamble\n"
        b"--XYZ\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n" + TEXT.encode() + b"\n"
        b"--XYZ\n"
        b"Content-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="data.bin"\n'
        b"Content-Transfer-Encoding: binary\n"
        b"\n" + ATTACHMENT + b"\n"
        b"--XYZ--\n"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    ca.write(directory)
    return ca, directory


def _verify(directory: Path, ca: CA, signed: bytes, *, tool: str = "cms") -> bytes:
    path = directory / "in.eml"
    path.write_bytes(signed)
    return openssl(tool, "-verify", "-CAfile", ca.write(directory), "-in", path)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_alice_signs_and_bob_openssl_verifies_with_cms_and_smime(pki, kind):
    ca, directory = pki
    alice = ca.issue("alice@example.org", kind=kind)
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    content = _verify(directory, ca, signed)
    _verify(directory, ca, signed, tool="smime")
    assert content == inner_entity(PLAIN)[1]
    assert b"Hello Bob,\r\nthe numbers are attached.\r\n" in content
    ctype = split_message(signed).get("Content-Type") or ""
    assert ctype.startswith("multipart/signed")
    assert 'protocol="application/pkcs7-signature"' in ctype and "micalg=sha-256" in ctype


def test_outer_headers_are_copied_byte_for_byte_and_signed_part_is_what_was_hashed(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    original_head = PLAIN.split(b"\r\n\r\n")[0] + b"\r\n"
    assert signed.startswith(original_head + b"MIME-Version: 1.0\r\n")
    entity = split_message(signed)
    boundary = entity.content_type()[1]["boundary"]
    first = split_multipart(entity.body, boundary).parts[0]
    assert first == _verify(directory, ca, signed)
    assert signed.isascii() and b"\n" not in signed.replace(b"\r\n", b"")


def test_signer_certificate_and_chain_travel_in_the_signature(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain)
    (directory / "s.eml").write_bytes(signed)
    certs = openssl(
        "cms",
        "-verify",
        "-noverify",
        "-in",
        directory / "s.eml",
        "-certsout",
        "/dev/stdout",
        "-out",
        "/dev/null",
    )
    assert certs.count(b"BEGIN CERTIFICATE") == 2


@pytest.mark.parametrize("algorithm", [hashes.SHA384(), hashes.SHA512()])
def test_micalg_follows_the_chosen_hash(pki, algorithm):
    ca, directory = pki
    alice = ca.issue("alice@example.org", kind="ec")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain, hash=algorithm)
    assert f"micalg=sha-{algorithm.digest_size * 8}".encode() in signed
    _verify(directory, ca, signed)


def test_opaque_signing_gives_signed_data_openssl_unwraps(pki):
    ca, directory = pki
    bob = ca.issue("bob@example.net", kind="ec")
    signed = sign(PLAIN, bob.key, bob.cert, bob.chain, detached=False)
    assert b"smime-type=signed-data" in signed
    assert _verify(directory, ca, signed) == inner_entity(PLAIN)[1]


def test_lf_only_eight_bit_input_is_canonicalised_to_crlf_seven_bit_before_signing(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    signed = sign(rich_message(), alice.key, alice.cert, alice.chain)
    assert signed.isascii()
    assert all(len(line) <= 998 for line in signed.split(b"\r\n"))
    _verify(directory, ca, signed)


def test_header_protection_wraps_the_whole_message_in_message_rfc822(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    signed = sign(PLAIN, alice.key, alice.cert, alice.chain, protect_headers=True)
    content = _verify(directory, ca, signed)
    assert content.startswith(b"Content-Type: message/rfc822\r\n\r\n")
    assert b"Subject: quarterly numbers\r\n" in content


def test_bob_and_the_sender_both_decrypt_with_openssl(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    carol = ca.issue("carol@example.net")
    encrypted = encrypt(PLAIN, [bob.cert, carol.cert], sender_cert=alice.cert)
    assert b"smime-type=enveloped-data" in encrypted and b'name="smime.p7m"' in encrypted
    assert encrypted.startswith(PLAIN.split(b"\r\n\r\n")[0] + b"\r\n")
    (directory / "enc.eml").write_bytes(encrypted)
    for person in (alice, bob, carol):
        cert, key = person.write(directory)
        out = openssl(
            "cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", directory / "enc.eml"
        )
        assert out == inner_entity(PLAIN)[1]
    dump = openssl("cms", "-cmsout", "-print", "-in", directory / "enc.eml")
    assert b"aes-256-cbc" in dump and dump.count(b"rsaEncryption") == 3


def test_aes_128_can_be_chosen(pki):
    ca, directory = pki
    bob = ca.issue("bob@example.net")
    encrypted = encrypt(PLAIN, [bob.cert], algorithm=algorithms.AES128)
    (directory / "enc128.eml").write_bytes(encrypted)
    assert b"aes-128-cbc" in openssl("cms", "-cmsout", "-print", "-in", directory / "enc128.eml")


def test_a_recipient_with_a_key_nobody_can_encrypt_to_is_refused_with_its_certificate(pki):
    ca, _ = pki
    bob = ca.issue("bob@example.net")
    dave = ca.issue("dave@example.net", kind="ed25519")
    with pytest.raises(UnsupportedRecipient) as info:
        encrypt(PLAIN, [bob.cert, dave.cert])
    assert info.value.certificate == dave.cert
    with pytest.raises(NoRecipients):
        encrypt(PLAIN, [])


def test_non_ascii_subject_utf8_body_and_binary_attachment_survive_sign_then_encrypt(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org", kind="ec")
    alice_enc = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    message = rich_message()
    sealed = sign_then_encrypt(
        message, alice.key, alice.cert, alice.chain, [bob.cert], sender_cert=alice_enc.cert
    )
    assert f"Subject: {SUBJECT}\r\n".encode() in sealed.split(b"\r\n\r\n")[0] + b"\r\n"
    (directory / "se.eml").write_bytes(sealed)
    for person in (bob, alice_enc):
        cert, key = person.write(directory)
        signed = openssl(
            "cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", directory / "se.eml"
        )
        content = openssl("cms", "-verify", "-CAfile", ca.write(directory), data=signed)
        assert content == inner_entity(message)[1]
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        text_part, attachment = list(parsed.iter_parts())
        assert text_part.get_content().replace("\r\n", "\n") == TEXT
        assert attachment.get_filename() == "data.bin"
        assert attachment.get_payload(decode=True) == ATTACHMENT


def test_opaque_sign_then_encrypt_round_trips_through_openssl(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    sealed = sign_then_encrypt(PLAIN, alice.key, alice.cert, (), [alice.cert], detached=False)
    (directory / "ose.eml").write_bytes(sealed)
    cert, key = alice.write(directory)
    signed = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", directory / "ose.eml")
    assert b"smime-type=signed-data" in signed
    content = openssl("cms", "-verify", "-CAfile", ca.write(directory), data=signed)
    assert content == inner_entity(PLAIN)[1]


def test_a_key_that_does_not_match_the_certificate_is_refused(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    with pytest.raises(SigningFailed):
        sign(PLAIN, bob.key, alice.cert)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"no header here\r\n\r\nbody",
        b"From mbox line\nSubject: x\n\nbody",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno delimiter',
    ],
)
def test_malformed_input_is_refused_with_a_typed_error(pki, junk):
    ca, _ = pki
    alice = ca.issue("alice@example.org")
    with pytest.raises(MalformedMessage):
        sign(junk, alice.key, alice.cert)
    with pytest.raises(MalformedMessage):
        encrypt(junk, [alice.cert])
