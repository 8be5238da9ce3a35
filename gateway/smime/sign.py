"""Outbound signing: RFC 5322 message in, RFC 8551 S/MIME signed message out.

Decisions (RFC 8551 §3.1, §3.5):

* The top-level header fields that are not ``Content-*`` (From, To, Subject, Date,
  Message-ID, Received, ...) are copied byte for byte to the outer message and are **not**
  protected by default: wrapping them in a ``message/rfc822`` (RFC 8551 §3.1) makes many
  clients show the mail as an attachment.  ``protect_headers=True`` does wrap the whole
  message (all its header fields) in ``message/rfc822`` for deployments that want it.
* The protected MIME entity is made canonical and 7-bit safe before hashing (CRLF line
  endings, 8bit/binary bodies re-encoded to quoted-printable for ``text/*`` and base64
  otherwise, raw non-ASCII ``Content-*`` values RFC 2047/2231-encoded).  The bytes hashed are
  exactly the bytes placed in the multipart (or encapsulated, for opaque signing).
* Clear signing (``multipart/signed``) is the default; ``detached=False`` produces opaque
  ``application/pkcs7-mime; smime-type=signed-data``.
* The signer certificate and ``chain`` are embedded, plus the signed attributes
  cryptography adds (contentType, signingTime, messageDigest, SMIMECapabilities).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.smime import mime
from gateway.smime.errors import SigningFailed
from gateway.smime.mime import Field

SignHash = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512
SignKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_MICALG = {"sha224": "sha-224", "sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}
PREAMBLE = b"This is an S/MIME signed message\r\n"


def inner_entity(message: bytes, *, protect_headers: bool = False) -> tuple[list[Field], bytes]:
    """Return (outer header fields, canonical 7-bit bytes of the MIME entity to protect)."""
    outer, entity = mime.split_outer(message)
    if not protect_headers:
        return outer, mime.prepare_entity(entity)
    full = mime.split_message(message)
    if not any(f.lname == "content-type" for f in full.fields):
        full = mime.Entity((*full.fields, mime.default_content_type(full.body)), full.body)
    wrapped = mime.prepare_entity(full)
    return outer, b"Content-Type: message/rfc822\r\n\r\n" + wrapped


def sign(
    message: bytes,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    *,
    detached: bool = True,
    hash: SignHash | None = None,
    protect_headers: bool = False,
) -> bytes:
    """Sign an RFC 5322 message; return the S/MIME message (CRLF line endings).

    ``key`` is any RSA (PKCS#1 v1.5 signatures) or EC (ECDSA) private key object, HSM-backed
    ones included.  Raises :class:`MalformedMessage` for unparseable input and
    :class:`SigningFailed` for an unusable key/certificate.
    """
    outer, content = inner_entity(message, protect_headers=protect_headers)
    algorithm = hash if hash is not None else hashes.SHA256()
    der = sign_bytes(content, key, cert, chain, detached=detached, hash=algorithm)
    if not detached:
        return mime.build_message(outer, opaque_fields("signed-data"), mime.b64_lines(der))
    boundary = _boundary(content)
    micalg = _MICALG[algorithm.name]
    ctype = Field.make(
        "Content-Type",
        f'multipart/signed; protocol="application/pkcs7-signature"; micalg={micalg};'
        f'\r\n boundary="{boundary}"',
    )
    delim = b"--" + boundary.encode("ascii")
    signature_part = (
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n" + mime.b64_lines(der)
    )
    body = b"".join(
        [
            PREAMBLE,
            b"\r\n",
            delim,
            b"\r\n",
            content,
            b"\r\n",
            delim,
            b"\r\n",
            signature_part,
            b"\r\n",
            delim,
            b"--\r\n",
        ]
    )
    return mime.build_message(outer, [ctype], body)


def sign_bytes(
    content: bytes,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    *,
    detached: bool = True,
    hash: SignHash | None = None,
) -> bytes:
    """CMS SignedData (DER) over exactly ``content`` (no canonicalisation applied)."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningFailed("signing key must be an RSA or EC private key")
    if not isinstance(cert, x509.Certificate):
        raise SigningFailed("signer certificate must be an x509.Certificate")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise SigningFailed("signing key does not match the signer certificate")
    algorithm = hash if hash is not None else hashes.SHA256()
    if algorithm.name not in _MICALG:
        raise SigningFailed(f"unsupported signature hash {algorithm.name}")
    # set_data first: later builder steps drop what came before it; certificates last.
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, algorithm)
    seen = {cert.fingerprint(hashes.SHA256())}
    for extra in chain:
        fingerprint = extra.fingerprint(hashes.SHA256())
        if fingerprint not in seen:
            seen.add(fingerprint)
            builder = builder.add_certificate(extra)
    options = [pkcs7.PKCS7Options.Binary]
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    try:
        return builder.sign(serialization.Encoding.DER, options)
    except (ValueError, TypeError) as exc:
        raise SigningFailed(f"signing failed: {exc}") from exc


def opaque_fields(smime_type: str) -> list[Field]:
    return [
        Field.make(
            "Content-Type",
            f'application/pkcs7-mime; smime-type={smime_type};\r\n name="smime.p7m"',
        ),
        Field.make("Content-Transfer-Encoding", "base64"),
        Field.make("Content-Disposition", 'attachment; filename="smime.p7m"'),
    ]


def _boundary(content: bytes) -> str:
    while True:
        boundary = "----=_cmcgate_" + secrets.token_hex(12)
        if boundary.encode("ascii") not in content:
            return boundary
