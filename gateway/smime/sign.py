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

import re
import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.smime import encoding, mime
from gateway.smime.errors import SigningFailed
from gateway.smime.mime import Field

SignHash = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512
SignKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_MICALG = {"sha224": "sha-224", "sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}
PREAMBLE = b"This is an S/MIME signed message\r\n"


def inner_entity(message: bytes, *, protect_headers: bool = False) -> tuple[list[Field], bytes]:
    """Return (outer header fields, canonical 7-bit bytes of the MIME entity to protect)."""
    outer, pieces = encoding.prepare_message(message, protect_headers=protect_headers)
    return outer, b"".join(pieces)


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
    algorithm = hash if hash is not None else hashes.SHA256()
    outer, pieces = encoding.prepare_message(message, protect_headers=protect_headers)
    check_signer(key, cert, algorithm)
    if not detached:
        content = b"".join(pieces)
        der = _signed_data(content, key, cert, chain, detached=False, hash=algorithm)
        return b64_message(outer, opaque_fields("signed-data"), der)
    micalg = _MICALG[algorithm.name]
    length = sum(memoryview(piece).nbytes for piece in pieces)
    # The content is written once, straight into the result, and signed where it lies there
    # (no separate copy of it).  The boundary goes into the header before the content is
    # written; should the content contain it after all, start over the simple way.
    boundary = _new_boundary()
    head = mime.message_head(outer, [_signed_content_type(micalg, boundary)])
    delim = b"--" + boundary.encode("ascii")
    fixed = len(head) + len(PREAMBLE) + 3 * len(delim) + 12 + len(_SIGNATURE_HEAD) + length
    der_bound = sum(len(c.public_bytes(serialization.Encoding.DER)) for c in (cert, *chain))
    out = encoding.Output(fixed + encoding.b64_size(der_bound + 4096))  # an upper bound; trimmed
    for piece in (head, PREAMBLE, b"\r\n", delim, b"\r\n", *pieces):
        out.write(piece)
    with out.region(out.pos - length, out.pos) as written:
        clash = _contains_boundary(written, boundary)
        if not clash:
            der = _signed_data(written, key, cert, chain, detached=True, hash=algorithm)
    if clash:
        return _sign_joined(outer, b"".join(pieces), key, cert, chain, algorithm)
    for piece in (b"\r\n", delim, b"\r\n", _SIGNATURE_HEAD, encoding.b64_lines(der)):
        out.write(piece)
    out.write(b"\r\n" + delim + b"--\r\n")
    return out.value()


_SIGNATURE_HEAD = (
    b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
    b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
)


def _signed_content_type(micalg: str, boundary: str) -> Field:
    return Field.make(
        "Content-Type",
        f'multipart/signed; protocol="application/pkcs7-signature"; micalg={micalg};'
        f'\r\n boundary="{boundary}"',
    )


def _sign_joined(
    outer: Sequence[Field],
    content: bytes,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    algorithm: SignHash,
) -> bytes:
    """Clear-sign ``content`` (already prepared) the plain way: join, then sign."""
    der = _signed_data(content, key, cert, chain, detached=True, hash=algorithm)
    boundary = _boundary(content)
    delim = b"--" + boundary.encode("ascii")
    return b"".join(
        [
            mime.message_head(outer, [_signed_content_type(_MICALG[algorithm.name], boundary)]),
            PREAMBLE,
            b"\r\n",
            delim,
            b"\r\n",
            content,
            b"\r\n",
            delim,
            b"\r\n",
            _SIGNATURE_HEAD,
            encoding.b64_lines(der),
            b"\r\n",
            delim,
            b"--\r\n",
        ]
    )


def b64_message(outer: Sequence[Field], content: Sequence[Field], der: bytes) -> bytes:
    """``build_message(outer, content, b64_lines(der))`` written once into its result."""
    head = mime.message_head(outer, content)
    out = encoding.Output(len(head) + encoding.b64_size(len(der)))
    out.write(head)
    lines = encoding.Base64Lines(out)
    lines.write(der)
    lines.close()
    return out.value()


def sign_bytes(
    content: mime.Buffer,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    *,
    detached: bool = True,
    hash: SignHash | None = None,
) -> bytes:
    """CMS SignedData (DER) over exactly ``content`` (no canonicalisation applied)."""
    algorithm = hash if hash is not None else hashes.SHA256()
    check_signer(key, cert, algorithm)
    return _signed_data(content, key, cert, chain, detached=detached, hash=algorithm)


def _signed_data(
    content: mime.Buffer,
    key: SignKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    detached: bool,
    hash: SignHash,
) -> bytes:
    """:func:`sign_bytes` for a key/certificate/hash that passed :func:`check_signer`."""
    # set_data first: later builder steps drop what came before it; certificates last.
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hash)
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


def check_signer(key: SignKey, cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> None:
    """Raise :class:`SigningFailed` unless ``key``/``cert``/``algorithm`` can sign S/MIME."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningFailed("signing key must be an RSA or EC private key")
    if not isinstance(cert, x509.Certificate):
        raise SigningFailed("signer certificate must be an x509.Certificate")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise SigningFailed("signing key does not match the signer certificate")
    if algorithm.name not in _MICALG:
        raise SigningFailed(f"unsupported signature hash {algorithm.name}")


def opaque_fields(smime_type: str) -> list[Field]:
    return [
        Field.make(
            "Content-Type",
            f'application/pkcs7-mime; smime-type={smime_type};\r\n name="smime.p7m"',
        ),
        Field.make("Content-Transfer-Encoding", "base64"),
        Field.make("Content-Disposition", 'attachment; filename="smime.p7m"'),
    ]


_BOUNDARY_PREFIX = "----=_cmcgate_"
#: Compiled once: a pattern per (random) boundary would be compiled for every message.
_BOUNDARY_PREFIX_RE = re.compile(re.escape(_BOUNDARY_PREFIX.encode("ascii")))


def _new_boundary() -> str:
    return _BOUNDARY_PREFIX + secrets.token_hex(12)


def _contains_boundary(data: memoryview, boundary: str) -> bool:
    """Whether ``boundary`` (one of ours) occurs in ``data``, without copying ``data``."""
    wanted = boundary.encode("ascii")
    for found in _BOUNDARY_PREFIX_RE.finditer(data):
        if data[found.start() : found.start() + len(wanted)] == wanted:
            return True
    return False


def _boundary(content: bytes) -> str:
    while True:
        boundary = _new_boundary()
        if boundary.encode("ascii") not in content:
            return boundary
