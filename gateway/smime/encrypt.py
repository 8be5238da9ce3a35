"""Outbound encryption: RFC 5322 message in, ``application/pkcs7-mime`` enveloped-data out.

Key transport is RSA PKCS#1 v1.5 (cryptography's PKCS7EnvelopeBuilder, RFC 8551 §2.3 lists
it as MUST); content encryption AES-256-CBC by default, AES-128-CBC selectable.  Recipients
with other key types raise :class:`UnsupportedRecipient` naming the certificate, so the
policy layer can decide (bounce, send clear, drop that recipient).  Outer, non-``Content-*``
header fields are copied unencrypted — exactly as for signing (see :mod:`.sign`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.smime import encoding, mime
from gateway.smime.errors import NoRecipients, SmimeError, UnsupportedRecipient
from gateway.smime.sign import SignHash, SignKey, opaque_fields, sign

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
    outer, content = encoding.prepare_message(message, protect_headers=protect_headers)
    envelope = _Envelope(
        content, [*recipient_certs, *([sender_cert] if sender_cert else [])], algorithm
    )
    head = mime.message_head(outer, opaque_fields("enveloped-data"))
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
    algorithm: ContentCipher = algorithms.AES256,
) -> bytes:
    """CMS EnvelopedData (DER) of exactly ``content``."""
    envelope = _Envelope([content], recipient_certs, algorithm)
    out = encoding.Output(envelope.size)
    envelope.write(out)
    return out.value()


class _Sink(Protocol):
    def write(self, data: mime.Buffer) -> None: ...


class _Envelope:
    """CMS EnvelopedData (RFC 5652 §6) of the concatenated ``content`` pieces, streamed.

    The DER is laid out exactly as cryptography's ``PKCS7EnvelopeBuilder`` (with the
    ``Binary`` option) writes it: version 0, the KeyTransRecipientInfos (issuerAndSerialNumber,
    rsaEncryption with NULL parameters, PKCS#1 v1.5) sorted as a DER SET OF, id-data content
    encrypted with AES-CBC (IV as the parameters, PKCS#7 padding) in a primitive [0].  It is
    built here because that builder holds the ciphertext, the DER and the returned bytes at
    once (about 3x the content on top of the content); here the content is encrypted in
    chunks straight into the sink (the base64 writer of the final message).
    """

    _CHUNK = 1 << 20

    def __init__(
        self,
        content: Sequence[mime.Piece],
        recipient_certs: Sequence[x509.Certificate],
        algorithm: ContentCipher,
    ) -> None:
        if algorithm not in (algorithms.AES128, algorithms.AES256):
            raise SmimeError("content encryption must be AES-128-CBC or AES-256-CBC")
        certs: list[x509.Certificate] = []
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
            certs.append(cert)
        if not certs:
            raise NoRecipients("no recipient certificate to encrypt to")
        self._content = content
        self._key = os.urandom(algorithm.key_size // 8)
        self._iv = os.urandom(16)
        self._algorithm = algorithm
        try:
            infos = sorted(_recipient_info(cert, self._key) for cert in certs)
        except (ValueError, TypeError) as exc:
            raise SmimeError(f"encryption failed: {exc}") from exc
        length = self._length = sum(memoryview(piece).nbytes for piece in content)
        self._pad = 16 - length % 16
        encrypted = length + self._pad
        cipher_oid = _AES256_CBC if algorithm is algorithms.AES256 else _AES128_CBC
        # The DER up to the ciphertext, inside out; every length counts the ciphertext too.
        inner = _ID_DATA + _tlv(0x30, cipher_oid + _tlv(0x04, self._iv)) + _header(0x80, encrypted)
        inner = _header(0x30, len(inner) + encrypted) + inner  # EncryptedContentInfo
        inner = _tlv(0x02, b"\x00") + _tlv(0x31, b"".join(infos)) + inner
        inner = _header(0x30, len(inner) + encrypted) + inner  # EnvelopedData
        inner = _header(0xA0, len(inner) + encrypted) + inner  # [0] EXPLICIT
        inner = _ID_ENVELOPED_DATA + inner
        self.prefix = _header(0x30, len(inner) + encrypted) + inner  # ContentInfo
        self.size = len(self.prefix) + encrypted

    def write(self, sink: _Sink) -> None:
        """Write the DER to ``sink``: the prefix, then the ciphertext chunk by chunk."""
        sink.write(self.prefix)
        encryptor = Cipher(self._algorithm(self._key), modes.CBC(self._iv)).encryptor()
        buffer = bytearray(max(min(self._CHUNK, self._length), 16) + 16)
        view = memoryview(buffer)
        for piece in self._content:
            data = memoryview(piece)
            for offset in range(0, len(data), self._CHUNK):
                n = encryptor.update_into(data[offset : offset + self._CHUNK], buffer)
                sink.write(view[:n])
        n = encryptor.update_into(bytes([self._pad]) * self._pad, buffer)
        sink.write(view[:n])
        if encryptor.finalize():
            raise SmimeError("encryption failed: cipher left data over")


_ID_DATA = bytes.fromhex("06092a864886f70d010701")
_ID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
_RSA_ENCRYPTION = bytes.fromhex("300d06092a864886f70d0101010500")
_AES128_CBC = bytes.fromhex("0609608648016503040102")
_AES256_CBC = bytes.fromhex("060960864801650304012a")


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size


def _tlv(tag: int, value: bytes) -> bytes:
    return _header(tag, len(value)) + value


def _recipient_info(cert: x509.Certificate, key: bytes) -> bytes:
    """KeyTransRecipientInfo (version 0, issuerAndSerialNumber) for ``cert``, DER."""
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    encrypted_key = public_key.encrypt(key, padding.PKCS1v15())
    return _tlv(
        0x30,
        _tlv(0x02, b"\x00")
        + _issuer_and_serial(cert)
        + _RSA_ENCRYPTION
        + _tlv(0x04, encrypted_key),
    )


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer Name and serial INTEGER exactly as in ``cert``.

    TBSCertificate starts ``[0] version OPTIONAL, serialNumber, signature, issuer``; its DER
    was checked when the certificate was loaded, so walking four elements is enough.
    """
    tbs = cert.tbs_certificate_bytes
    pos = _tlv_at(tbs, 0)[1]  # into the TBSCertificate SEQUENCE
    if tbs[pos] == 0xA0:
        pos = _tlv_at(tbs, pos)[2]
    _, _, serial_end = _tlv_at(tbs, pos)
    serial = tbs[pos:serial_end]
    _, _, signature_end = _tlv_at(tbs, serial_end)
    _, _, issuer_end = _tlv_at(tbs, signature_end)
    return _tlv(0x30, tbs[signature_end:issuer_end] + serial)


def _tlv_at(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    tag, first = der[pos], der[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    size = first & 0x7F
    length = int.from_bytes(der[pos + 2 : pos + 2 + size], "big")
    return tag, pos + 2 + size, pos + 2 + size + length


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
