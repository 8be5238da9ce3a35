"""Inbound S/MIME: decrypt enveloped mail, verify signed mail, stamp the verdict header.

Verdicts (:class:`VerificationResult.status`), checked in this order:

``invalid``
    the signature does not verify (tampered content, bad or unsupported CMS), the signer's
    certificate lacks the emailProtection EKU, is expired/not yet valid, sits on a forged or
    non-CA path, is reported revoked by ``is_revoked``, or **none of the signer's addresses
    (SAN rfc822Name, subject emailAddress) equals an address in From** — a From mismatch is
    ``invalid`` (with ``reason`` saying so), not a separate status: a correct signature by
    somebody else must not be shown as the sender's.
``unknown-signer``
    the signature is intact but there is no path from the signer to ``trust_anchors`` (or
    the bounded path search of :mod:`cmc.messages.chain` gave up looking for one), or the signer
    certificate is not in the message.
``valid``
    everything above passed.

Malformed MIME raises :class:`MalformedMessage`; mail that is not signed raises
:class:`NotSmime`.  A well-formed ``multipart/signed`` whose CMS blob is garbage is a
message that *claims* a signature it cannot back: ``invalid``.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cmc import errors as cmc_errors
from cmc.messages import cms
from gateway.smime import encoding, mime
from gateway.smime.envelope import PrivateKey, decrypt_der
from gateway.smime.errors import MalformedMessage, NotSmime
from gateway.smime.mime import CRLF, Entity, Field

Status = Literal["valid", "invalid", "unknown-signer"]
Kind = Literal["signed", "opaque-signed", "enveloped", "plain"]
SIGNATURE_HEADER = "X-Cmcgate-Signature"
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_PKCS7_SIG = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_OID_PREFIX = bytes.fromhex("06092a864886f70d0107")  # 1.2.840.113549.1.7.x
_AUTH_ENVELOPED_OID = bytes.fromhex("060b2a864886f70d0109100117")  # 1.2.840.113549.1.9.16.1.23
_SINGLE = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id"}
)
_SAFE_EMAIL = re.compile(r"[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]")


@dataclass(frozen=True)
class VerificationResult:
    status: Status
    signer_email: str | None
    signer_cert: x509.Certificate | None
    certificates: tuple[x509.Certificate, ...]
    content_bytes: bytes
    reason: str = ""
    signing_time: datetime | None = None
    #: the certificate path found, ``[signer, ..., anchor]`` (empty when none was)
    path: tuple[x509.Certificate, ...] = ()


def smime_kind(message: bytes) -> Kind:
    """Classify the top-level entity of ``message``."""
    return _kind(*mime.split_view(message))


def _kind(entity: Entity, body: mime.Buffer | None = None) -> Kind:
    """Kind of ``entity``; ``body`` stands in for its body when given."""
    ctype, params = entity.content_type()
    if ctype == "multipart/signed":
        return "signed"
    name = (params.get("name") or "").lower()
    if ctype not in _PKCS7_MIME and not (
        ctype == "application/octet-stream" and name.endswith(".p7m")
    ):
        return "plain"
    smime_type = (params.get("smime-type") or "").lower()
    if smime_type == "signed-data":
        return "opaque-signed"
    if smime_type in ("enveloped-data", "authenveloped-data"):
        return "enveloped"  # EnvelopedData or AuthEnvelopedData (RFC 8551 §3.2.2)
    if smime_type:
        return "plain"  # compressed-data, certs-only: not handled here
    encoded = entity.body if body is None else body
    peek = _content_type_oid(mime.decode_body(encoded, entity.transfer_encoding))
    if peek == 2:
        return "opaque-signed"
    return "enveloped" if peek in (3, 23) else "plain"


def _content_type_oid(der: bytes) -> int | None:
    """Last arc of a ContentInfo's 1.2.840.113549.1.7.x contentType, if that is what it is
    (23 for AuthEnvelopedData, 1.2.840.113549.1.9.16.1.23)."""
    if len(der) < 2 or der[0] != 0x30:
        return None
    offset = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    if der[offset : offset + len(_AUTH_ENVELOPED_OID)] == _AUTH_ENVELOPED_OID:
        return 23
    oid = der[offset : offset + len(_OID_PREFIX) + 1]
    if len(oid) == len(_OID_PREFIX) + 1 and oid.startswith(_OID_PREFIX):
        return oid[-1]
    return None


def decrypt(message: bytes, key: PrivateKey, cert: x509.Certificate) -> bytes:
    """Decrypt an enveloped message; return the inner entity under the outer headers.

    EnvelopedData and AuthEnvelopedData, DER or BER, RSA (PKCS#1 v1.5, OAEP) or EC (ECDH)
    recipients: see :mod:`.envelope`.  ``key`` is the recipient's private key object (HSM
    handles included).  Raises :class:`NotSmime` if the message is not enveloped,
    :class:`DecryptionFailed` (:class:`NotForRecipient`, :class:`UnsupportedAlgorithm`) if
    this key cannot open it, saying why, :class:`MalformedMessage` for broken MIME.
    """
    head, body = mime.split_view(message)  # the body is only read, never copied
    if _kind(head, body) != "enveloped":
        raise NotSmime("message is not S/MIME enveloped-data")
    der = mime.decode_body(body, head.transfer_encoding)
    del body
    content = decrypt_der(der, key, cert)
    del der
    return rejoin(head.fields, content)


def rejoin(outer_fields: Iterable[Field], inner: bytes) -> bytes:
    """Put the decrypted/unwrapped MIME entity ``inner`` under the outer header fields.

    Outer ``Content-*`` and MIME-Version go; the inner entity's fields come after the outer
    ones.  Inner From/To/Subject/... that the outer message also has are dropped (the outer
    ones are what was transported and what the From check uses); other inner fields stay.
    The inner body bytes are kept exactly.
    """
    entity, body = mime.split_view(inner, require_fields=False)
    outer = [f for f in outer_fields if not f.is_content and f.lname != "mime-version"]
    present = {f.lname for f in outer}
    content = [f for f in entity.fields if f.lname != "mime-version"]
    content = [f for f in content if not (f.lname in _SINGLE and f.lname in present)]
    if not any(f.lname == "content-type" for f in content):
        content.insert(0, encoding.default_content_type(body))
    return b"".join([mime.message_head(outer, content), body])


def verify(
    message: bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
    is_revoked: Callable[[x509.Certificate, x509.Certificate], bool | None] | None = None,
) -> VerificationResult:
    """Verify a ``multipart/signed`` or opaque signed-data message (see module doc).

    ``is_revoked(cert, issuer)`` is asked for the signer and each CA certificate below the
    trust anchor on its path: True (revoked: ``invalid``), False, or None (unknown: noted in
    the reason). Whatever it raises (e.g. a temporary failure) goes to the caller."""
    entity = mime.split_message(message)
    kind = _kind(entity)
    if kind == "signed":
        content, der = _clear_signed_parts(entity)
        candidates = [mime.canonical(content)]
        if candidates[0] != content:
            candidates.append(content)
    elif kind == "opaque-signed":
        content = b""
        der = mime.decode_body(entity.body, entity.transfer_encoding)
        candidates = [b""]
    else:
        raise NotSmime("message is not S/MIME signed")
    failure: cmc_errors.CmcError | None = None
    signed: cms.VerifiedSignedData | None = None
    body = b""
    for candidate in candidates:
        try:
            signed = cms.verify_signed_data(
                der, detached_content=candidate if kind == "signed" else None
            )
            body = signed.content if kind == "opaque-signed" else candidate
            break
        except cmc_errors.CmcError as exc:
            failure = failure or exc
    if signed is None:
        status: Status = "invalid"
        if isinstance(failure, cmc_errors.SignerNotFound):
            status = "unknown-signer"
        return VerificationResult(status, None, None, (), content, f"signature: {failure}")
    return _judge(entity, signed, body, trust_anchors, intermediates, at, is_revoked)


def _clear_signed_parts(entity: Entity) -> tuple[bytes, bytes]:
    _, params = entity.content_type()
    protocol = (params.get("protocol") or "").lower()
    if protocol and protocol not in _PKCS7_SIG:
        raise NotSmime(f"multipart/signed with protocol {protocol}")
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedMessage("multipart/signed without boundary")
    parts = mime.split_multipart(entity.body, boundary).parts
    if len(parts) != 2:
        raise MalformedMessage(f"multipart/signed with {len(parts)} parts, expected 2")
    signature = mime.split_message(parts[1], require_fields=False)
    if signature.content_type()[0] not in _PKCS7_SIG:
        raise NotSmime("second part of multipart/signed is not a PKCS#7 signature")
    return parts[0], mime.decode_body(signature.body, signature.transfer_encoding)


def _judge(
    entity: Entity,
    signed: cms.VerifiedSignedData,
    body: bytes,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    at: datetime | None,
    is_revoked: Callable[[x509.Certificate, x509.Certificate], bool | None] | None,
) -> VerificationResult:
    signer = signed.signer_certificate
    certs = signed.certificates

    path: list[x509.Certificate] = []

    def result(status: Status, reason: str, email_: str | None = None) -> VerificationResult:
        return VerificationResult(
            status, email_, signer, certs, body, reason, signed.signing_time, tuple(path)
        )

    if signer is None:
        return result("unknown-signer", "signer certificate not in the message")
    emails = certificate_emails(signer)
    first = emails[0] if emails else None
    try:
        path = cms.verify_chain(
            signer,
            [*intermediates, *certs],  # the configured ones first: a path search is bounded
            anchors,
            at=at,
            required_eku=ExtendedKeyUsageOID.EMAIL_PROTECTION,
        )
    except cmc_errors.UntrustedSigner as exc:
        # No path found (also when the search gave up): unknown; a broken link: invalid.
        no_path = type(exc) in (cmc_errors.UntrustedSigner, cmc_errors.PathSearchExhausted)
        status: Status = "unknown-signer" if no_path else "invalid"
        return result(status, f"certificate: {exc}", first)
    except cmc_errors.CmcError as exc:
        return result("unknown-signer", f"certificate: {exc}", first)
    notes = []
    if is_revoked is not None:
        below_anchor = path[:-1] or [signer]
        for cert, issuer in zip(below_anchor, path[1:] or [signer], strict=True):
            revoked = is_revoked(cert, issuer)
            if revoked:
                return result("invalid", f"revoked: {cert.subject.rfc4514_string()}", first)
            if revoked is None:
                notes.append("revocation status unknown")
    senders = from_addresses(entity)
    matched = next((e for e in emails if e in senders), None)
    if matched is None:
        return result(
            "invalid",
            f"From {', '.join(sorted(senders)) or '(none)'} does not match the signer "
            f"certificate ({', '.join(emails) or 'no email address'})",
            first,
        )
    return result("valid", "; ".join(sorted(set(notes))), matched)


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """Lower-cased rfc822Name SANs, then subject emailAddress values, without duplicates."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
    except (x509.ExtensionNotFound, ValueError):
        pass
    try:
        found += [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    except ValueError:
        pass
    out: list[str] = []
    for value in found:
        value = value.strip().lower()
        if value and value not in out:
            out.append(value)
    return out


def from_addresses(entity: Entity) -> set[str]:
    values = entity.get_all("From")
    return {addr.strip().lower() for _, addr in email.utils.getaddresses(values) if addr}


def strip_signature_headers(message: bytes) -> bytes:
    """Remove every X-Cmcgate-Signature field (so outsiders cannot forge our verdict)."""
    entity = mime.split_message(message)
    kept = [f for f in entity.fields if f.lname != SIGNATURE_HEADER.lower()]
    return b"".join(mime.canonical(f.raw) + CRLF for f in kept) + CRLF + entity.body


def add_signature_header(message: bytes, result: VerificationResult) -> bytes:
    """Strip incoming X-Cmcgate-Signature fields, prepend ours with the verdict and signer."""
    value: str = result.status
    if result.signer_email:
        value += f"; signer={_SAFE_EMAIL.sub('', result.signer_email)}"
    return f"{SIGNATURE_HEADER}: {value}\r\n".encode("ascii") + strip_signature_headers(message)
