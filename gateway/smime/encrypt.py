"""Outbound encryption: RFC 5322 message in, ``application/pkcs7-mime`` enveloped-data out.

Key transport is RSA PKCS#1 v1.5 (cryptography's PKCS7EnvelopeBuilder, RFC 8551 §2.3 lists
it as MUST); content encryption AES-256-CBC by default, AES-128-CBC selectable.  Recipients
with other key types raise :class:`UnsupportedRecipient` naming the certificate, so the
policy layer can decide (bounce, send clear, drop that recipient).  Outer, non-``Content-*``
header fields are copied unencrypted — exactly as for signing (see :mod:`.sign`).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.smime import mime
from gateway.smime.errors import NoRecipients, SmimeError, UnsupportedRecipient
from gateway.smime.sign import SignHash, SignKey, inner_entity, opaque_fields, sign

ContentCipher = type[algorithms.AES128] | type[algorithms.AES256]


def encrypt(
    message: bytes,
    recipient_certs: Sequence[x509.Certificate],
    *,
    sender_cert: x509.Certificate | None = None,
    algorithm: ContentCipher = algorithms.AES256,
    protect_headers: bool = False,
) -> bytes:
    """Encrypt ``message`` to every recipient (and ``sender_cert``, so the sender can read it).

    Duplicate certificates are encrypted to once.  Raises :class:`NoRecipients`,
    :class:`UnsupportedRecipient` or :class:`MalformedMessage`.
    """
    outer, content = inner_entity(message, protect_headers=protect_headers)
    der = envelope_bytes(
        content, [*recipient_certs, *([sender_cert] if sender_cert else [])], algorithm=algorithm
    )
    return mime.build_message(outer, opaque_fields("enveloped-data"), mime.b64_lines(der))


def envelope_bytes(
    content: bytes,
    recipient_certs: Sequence[x509.Certificate],
    *,
    algorithm: ContentCipher = algorithms.AES256,
) -> bytes:
    """CMS EnvelopedData (DER) of exactly ``content``."""
    if algorithm not in (algorithms.AES128, algorithms.AES256):
        raise SmimeError("content encryption must be AES-128-CBC or AES-256-CBC")
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(content)
    seen: set[bytes] = set()
    for cert in recipient_certs:
        if not isinstance(cert, x509.Certificate):
            raise SmimeError("recipient must be an x509.Certificate")
        fingerprint = cert.fingerprint(hashes.SHA256())
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise UnsupportedRecipient(
                f"recipient {cert.subject.rfc4514_string()} has a non-RSA key; "
                "only RSA key transport is supported",
                cert,
            )
        builder = builder.add_recipient(cert)
    if not seen:
        raise NoRecipients("no recipient certificate to encrypt to")
    builder = builder.set_content_encryption_algorithm(algorithm)
    try:
        return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    except (ValueError, TypeError) as exc:
        raise SmimeError(f"encryption failed: {exc}") from exc


def sign_then_encrypt(
    message: bytes,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    recipient_certs: Sequence[x509.Certificate],
    *,
    sender_cert: x509.Certificate | None = None,
    detached: bool = True,
    hash: SignHash | None = None,
    algorithm: ContentCipher = algorithms.AES256,
    protect_headers: bool = False,
) -> bytes:
    """:func:`sign` then :func:`encrypt` (RFC 8551 §3.7 order: the signature is inside).

    ``sender_cert`` is the sender's *encryption* certificate (often the signing one; pass it
    explicitly — an EC signing certificate cannot be a key-transport recipient).
    """
    signed = sign(
        message, key, cert, chain, detached=detached, hash=hash, protect_headers=protect_headers
    )
    return encrypt(signed, recipient_certs, sender_cert=sender_cert, algorithm=algorithm)
