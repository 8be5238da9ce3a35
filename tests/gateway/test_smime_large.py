"""Large messages through the outbound S/MIME path: a 25 MB attachment, judged by openssl.

Also pins what the speed work must not change: the EnvelopedData is laid out exactly as
cryptography's ``PKCS7EnvelopeBuilder`` lays it out, and a 25 MB sign+encrypt stays within
4x the message size of memory (peak RSS in a fresh interpreter, as ``bench/smime.py``).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.smime import decrypt, sign_then_encrypt, verify
from gateway.smime.encrypt import envelope_bytes
from tests.gateway.certs import CA, make_ca, openssl

ROOT = Path(__file__).resolve().parents[2]
SIZE = 25 * 1024 * 1024


def large_message(attachment: bytes, cte: str) -> bytes:
    if cte == "base64":
        body = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    else:
        body = attachment + b"\r\n"
    return (
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: the big one\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="BIG"\r\n\r\n'
        b"--BIG\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe, see attachment.\r\n"
        b"--BIG\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="big.bin"\r\n'
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"--BIG--\r\n"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki-large")
    ca = make_ca("Large CA", "rsa")
    ca.write(directory)
    return ca, directory


@pytest.mark.slow
@pytest.mark.parametrize("cte", ["base64", "binary"])
def test_a_25_mb_attachment_signed_and_encrypted_round_trips_through_openssl(pki, cte):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    bob = ca.issue("bob@example.net")
    attachment = os.urandom(SIZE)
    message = large_message(attachment, cte)
    sealed = sign_then_encrypt(
        message, alice.key, alice.cert, alice.chain, [bob.cert], sender_cert=alice.cert
    )
    assert sealed.startswith(b"From: alice@example.org\r\nTo: bob@example.net\r\n")
    (directory / "big.eml").write_bytes(sealed)
    cert, key = bob.write(directory)
    openssl(
        "cms", "-decrypt", "-recip", cert, "-inkey", key,
        "-in", directory / "big.eml", "-out", directory / "big-signed.eml",
    )  # fmt: skip
    openssl(
        "cms", "-verify", "-CAfile", ca.write(directory),
        "-in", directory / "big-signed.eml", "-out", directory / "big-content.eml",
    )  # fmt: skip
    content = (directory / "big-content.eml").read_bytes()
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    text_part, attachment_part = list(parsed.iter_parts())
    assert text_part.get_content().rstrip("\r\n") == "Grüße, see attachment."
    assert attachment_part.get_filename() == "big.bin"
    assert attachment_part.get_payload(decode=True) == attachment

    # and back through the gateway's own inbound side
    result = verify(decrypt(sealed, bob.rsa_key, bob.cert), trust_anchors=[ca.cert])
    assert result.status == "valid", result.reason
    assert result.content_bytes == content


def _blanked(der: bytes) -> bytes:
    """The EnvelopedData with its random parts (keys, IV, ciphertext) zeroed."""
    info = cms.ContentInfo.load(der)
    enveloped = info["content"]
    for recipient in enveloped["recipient_infos"]:
        ktri = recipient.chosen
        ktri["encrypted_key"] = bytes(len(ktri["encrypted_key"].native))
    content_info = enveloped["encrypted_content_info"]
    content_info["content_encryption_algorithm"]["parameters"] = bytes(16)
    content_info["encrypted_content"] = bytes(len(content_info["encrypted_content"].native))
    return info.dump(force=True)


@pytest.mark.parametrize("algorithm", [algorithms.AES128, algorithms.AES256])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 70_000])
def test_enveloped_data_is_laid_out_exactly_as_cryptography_lays_it_out(pki, algorithm, size):
    ca, _ = pki
    people = [ca.issue(f"{name}@example.net") for name in ("carol", "bob", "alice")]
    content = os.urandom(size)
    ours = envelope_bytes(content, [p.cert for p in people], algorithm=algorithm)
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(content)
    for person in people:
        builder = builder.add_recipient(person.cert)
    theirs = builder.set_content_encryption_algorithm(algorithm).encrypt(
        serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]
    )
    assert len(ours) == len(theirs)
    assert _blanked(ours) == _blanked(theirs)
    assert cms.ContentInfo.load(ours).dump(force=True) == ours  # valid DER as it stands
    for person in people:
        assert pkcs7.pkcs7_decrypt_der(ours, person.cert, person.rsa_key, []) == content


_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from gateway.smime import sign_then_encrypt
    from tests.gateway.certs import make_ca
    ca = make_ca("Memory CA", "rsa")
    alice, bob = ca.issue("alice@example.org"), ca.issue("bob@example.net")
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    baseline = rss()
    message = open(sys.argv[1], "rb").read()
    sign_then_encrypt(message, alice.key, alice.cert, alice.chain, [bob.cert],
                      sender_cert=alice.cert)
    print(json.dumps({"size": len(message), "grown": rss() - baseline}))
    """
)


@pytest.mark.slow
def test_a_25_mb_sign_then_encrypt_peaks_below_four_times_the_message(tmp_path):
    """Peak RSS over the interpreter's (imports, keys) before the message was read; the
    message itself counts (1x).  Linux ``ru_maxrss`` is in KiB."""
    path = tmp_path / "message.eml"
    path.write_bytes(large_message(os.urandom(SIZE), "base64"))
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    measured = json.loads(out)
    assert measured["grown"] <= 4 * measured["size"], measured
