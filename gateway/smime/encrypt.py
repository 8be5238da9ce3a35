"""Outbound encryption: RFC 5322 message in, ``application/pkcs7-mime`` enveloped data out.

RSA recipients get the content key by key transport (PKCS#1 v1.5 by default, RFC 8551 §2.3
MUST; RSAES-OAEP selectable), EC recipients by ECDH key agreement (RFC 5753), see
:mod:`.recipients`.  Content encryption is AES-256-CBC by default (EnvelopedData, what every
client reads); AES-128-CBC, or AES-128/256-GCM in AuthEnvelopedData (RFC 5083/5084,
``smime-type=authEnveloped-data``) are selectable.  Recipients with other key types raise
:class:`UnsupportedRecipient` naming the certificate, so the policy layer can decide.
Outer, non-``Content-*`` header fields are copied unencrypted — exactly as for signing
(see :mod:`.sign`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from config.smime import ContentCipher, RsaKeyTransport
from gateway.smime import encoding, mime
from gateway.smime.algorithms import (
    ID_AUTH_ENVELOPED_DATA,
    ID_DATA,
    ID_ENVELOPED_DATA,
    cipher_oid,
    oid_der,
)
from gateway.smime.errors import NoRecipients, SmimeError
from gateway.smime.recipients import check_recipient, header, recipient_info, tlv
from gateway.smime.sign import SignHash, SignKey, opaque_fields, sign

#: What ``algorithm=`` takes: a :class:`ContentCipher`, or (as before) the AES class for CBC.
CipherChoice = ContentCipher | type[algorithms.AES128] | type[algorithms.AES256]
_GCM_TAG = 16


def content_cipher(choice: CipherChoice) -> ContentCipher:
    if choice is algorithms.AES128:
        return ContentCipher.AES128_CBC
    if choice is algorithms.AES256:
        return ContentCipher.AES256_CBC
    if isinstance(choice, str):
        try:
            return ContentCipher(choice)
        except ValueError:
            pass
    raise SmimeError(f"content encryption must be one of {', '.join(ContentCipher)}")


def encrypt(
    message: bytes,
    recipient_certs: Sequence[x509.Certificate],
    *,
    sender_cert: x509.Certificate | None = None,
    algorithm: CipherChoice = ContentCipher.AES256_CBC,
    rsa_transport: RsaKeyTransport = RsaKeyTransport.PKCS1V15,
    protect_headers: bool = False,
) -> bytes:
    """Encrypt ``message`` to every recipient (and ``sender_cert``, so the sender can read it).

    Duplicate certificates are encrypted to once.  Raises :class:`NoRecipients`,
    :class:`UnsupportedRecipient` or :class:`MalformedMessage`.
    """
    outer, content = encoding.prepare_message(message, protect_headers=protect_headers)
    envelope = _Envelope(
        content,
        [*recipient_certs, *([sender_cert] if sender_cert else [])],
        content_cipher(algorithm),
        rsa_transport,
    )
    head = mime.message_head(outer, opaque_fields(envelope.smime_type))
    out = encoding.Output(len(head) + encoding.b64_size(envelope.size))
    out.write(head)
    lines = encoding.Base64Lines(out)
    envelope.write(lines)
    lines.close()
    return out.value()


def envelope_bytes(
    content: bytes,
    recipient_certs: Sequence[x509.Certificate],
    *,
    algorithm: CipherChoice = ContentCipher.AES256_CBC,
    rsa_transport: RsaKeyTransport = RsaKeyTransport.PKCS1V15,
) -> bytes:
    """CMS EnvelopedData / AuthEnvelopedData (DER) of exactly ``content``."""
    envelope = _Envelope([content], recipient_certs, content_cipher(algorithm), rsa_transport)
    out = encoding.Output(envelope.size)
    envelope.write(out)
    return out.value()


class _Sink(Protocol):
    def write(self, data: mime.Buffer) -> None: ...


class _Envelope:
    """CMS EnvelopedData (RFC 5652 §6) or AuthEnvelopedData (RFC 5083) of the concatenated
    ``content`` pieces, streamed.

    With only RSA PKCS#1 v1.5 recipients and AES-CBC, the DER is laid out exactly as
    cryptography's ``PKCS7EnvelopeBuilder`` (with the ``Binary`` option) writes it: version 0,
    the KeyTransRecipientInfos sorted as a DER SET OF, id-data content encrypted with AES-CBC
    (IV as the parameters, PKCS#7 padding) in a primitive [0].  A KeyAgreeRecipientInfo
    (EC recipient) makes it version 2 (§6.1).  AES-GCM gives AuthEnvelopedData version 0:
    GCMParameters (12-octet nonce, 16-octet ICV), no padding, the tag as ``mac`` after the
    ciphertext.  It is built here because that builder holds the ciphertext, the DER and the
    returned bytes at once (about 3x the content on top of the content); here the content is
    encrypted in chunks straight into the sink (the base64 writer of the final message).
    """

    _CHUNK = 1 << 20

    def __init__(
        self,
        content: Sequence[mime.Piece],
        recipient_certs: Sequence[x509.Certificate],
        cipher: ContentCipher,
        rsa_transport: RsaKeyTransport,
    ) -> None:
        certs: list[x509.Certificate] = []
        seen: set[bytes] = set()
        for cert in recipient_certs:
            if not isinstance(cert, x509.Certificate):
                raise SmimeError("recipient must be an x509.Certificate")
            fingerprint = cert.fingerprint(hashes.SHA256())
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            check_recipient(cert)
            certs.append(cert)
        if not certs:
            raise NoRecipients("no recipient certificate to encrypt to")
        self._content = content
        self._cipher = cipher
        self._key = os.urandom(cipher.key_size)
        self._iv = os.urandom(12 if cipher.is_gcm else 16)
        try:
            infos = sorted(recipient_info(cert, self._key, rsa_transport) for cert in certs)
        except (ValueError, TypeError) as exc:
            raise SmimeError(f"encryption failed: {exc}") from exc
        length = self._length = sum(memoryview(piece).nbytes for piece in content)
        self._pad = 0 if cipher.is_gcm else 16 - length % 16
        encrypted = length + self._pad
        if cipher.is_gcm:
            parameters = tlv(0x30, tlv(0x04, self._iv) + tlv(0x02, bytes([_GCM_TAG])))
            self.suffix = tlv(0x04, bytes(_GCM_TAG))  # the mac; its value comes at the end
            version, outer_oid = 0, ID_AUTH_ENVELOPED_DATA
            self.smime_type = "authEnveloped-data"
        else:
            parameters = tlv(0x04, self._iv)
            self.suffix = b""
            version = 2 if any(info[0] == 0xA1 for info in infos) else 0
            outer_oid, self.smime_type = ID_ENVELOPED_DATA, "enveloped-data"
        tail = encrypted + len(self.suffix)
        # The DER up to the ciphertext, inside out; every length counts what follows too.
        inner = oid_der(ID_DATA) + tlv(0x30, oid_der(cipher_oid(cipher)) + parameters)
        inner += header(0x80, encrypted)
        inner = header(0x30, len(inner) + encrypted) + inner  # (Auth)EncryptedContentInfo
        inner = tlv(0x02, bytes([version])) + tlv(0x31, b"".join(infos)) + inner
        inner = header(0x30, len(inner) + tail) + inner  # (Auth)EnvelopedData
        inner = header(0xA0, len(inner) + tail) + inner  # [0] EXPLICIT
        inner = oid_der(outer_oid) + inner
        self.prefix = header(0x30, len(inner) + tail) + inner  # ContentInfo
        self.size = len(self.prefix) + tail

    def _encryptor(self) -> CipherContext:
        aes = algorithms.AES(self._key)
        if self._cipher.is_gcm:
            return Cipher(aes, modes.GCM(self._iv)).encryptor()
        return Cipher(aes, modes.CBC(self._iv)).encryptor()

    def write(self, sink: _Sink) -> None:
        """Write the DER to ``sink``: the prefix, the ciphertext chunk by chunk, the mac."""
        sink.write(self.prefix)
        encryptor = self._encryptor()
        buffer = bytearray(max(min(self._CHUNK, self._length), 16) + 16)
        view = memoryview(buffer)
        for piece in self._content:
            data = memoryview(piece)
            for offset in range(0, len(data), self._CHUNK):
                n = encryptor.update_into(data[offset : offset + self._CHUNK], buffer)
                sink.write(view[:n])
        if self._pad:
            n = encryptor.update_into(bytes([self._pad]) * self._pad, buffer)
            sink.write(view[:n])
        if encryptor.finalize():
            raise SmimeError("encryption failed: cipher left data over")
        if self._cipher.is_gcm:
            tag = encryptor.tag  # type: ignore[attr-defined]
            sink.write(tlv(0x04, tag[:_GCM_TAG]))


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
    algorithm: CipherChoice = ContentCipher.AES256_CBC,
    rsa_transport: RsaKeyTransport = RsaKeyTransport.PKCS1V15,
    protect_headers: bool = False,
) -> bytes:
    """:func:`sign` then :func:`encrypt` (RFC 8551 §3.7 order: the signature is inside).

    ``sender_cert`` is the sender's *encryption* certificate (often the signing one; pass it
    explicitly: a signing-only certificate is no place to encrypt to).
    """
    signed = sign(
        message, key, cert, chain, detached=detached, hash=hash, protect_headers=protect_headers
    )
    return encrypt(
        signed,
        recipient_certs,
        sender_cert=sender_cert,
        algorithm=algorithm,
        rsa_transport=rsa_transport,
    )
