"""Is a message already encrypted? Decided by parsing its CMS, never by its header.

The pipeline passes mail its client encrypted on unchanged, and refuses every copy for a
mandatory-encryption recipient that is not encrypted (:func:`gateway.pipeline.
check_no_plaintext`). Both ask :func:`encrypted_kind`. The ``smime-type`` parameter of the
Content-Type is only a hint for the receiving client (RFC 8551 §3.2.2) and anybody can write
``smime-type=enveloped-data`` above a plain body, so it is not looked at. A message counts as
encrypted when:

* its top-level entity is ``application/pkcs7-mime`` (or ``x-pkcs7-mime``, or
  ``application/octet-stream`` named ``*.p7m``), and
* its body, with the transfer encoding undone, is exactly one CMS ContentInfo (RFC 5652 §3,
  DER or BER) holding EnvelopedData (RFC 5652 §6) or AuthEnvelopedData (RFC 5083), with at
  least one RecipientInfo, a content-encryption algorithm and non-empty encrypted content
  (and, for AuthEnvelopedData, a non-empty MAC).

SignedData, CompressedData, certificates-only messages and anything that does not parse are
not encrypted, whatever the header says.
"""

from __future__ import annotations

from typing import Any, Literal

from asn1crypto import cms as asn1_cms
from asn1crypto import core

from cmc.asn1.der import DECODE_ERRORS
from gateway.smime import mime
from gateway.smime.errors import MalformedMessage

EncryptedKind = Literal["enveloped-data", "authEnveloped-data"]

_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_CONTENT: dict[str, tuple[EncryptedKind, str]] = {
    "1.2.840.113549.1.7.3": ("enveloped-data", "encrypted_content_info"),
    "1.2.840.113549.1.9.16.1.23": ("authEnveloped-data", "auth_encrypted_content_info"),
}


def encrypted_kind(message: mime.Buffer) -> EncryptedKind | None:
    """``enveloped-data`` or ``authEnveloped-data`` if ``message`` really is encrypted S/MIME
    (see the module doc), else None. Never raises for malformed input."""
    try:
        head, body = mime.split_view(message)
        content_type, params = head.content_type()
        name = (params.get("name") or "").lower()
        if content_type not in _PKCS7_MIME and not (
            content_type == "application/octet-stream" and name.endswith(".p7m")
        ):
            return None
        der = mime.decode_body(body, head.transfer_encoding)
    except MalformedMessage:
        return None
    return cms_encrypted_kind(der)


def is_encrypted(message: mime.Buffer) -> bool:
    return encrypted_kind(message) is not None


def cms_encrypted_kind(der: bytes) -> EncryptedKind | None:
    """What :func:`encrypted_kind` decides for the decoded body ``der``."""
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        known = _CONTENT.get(info["content_type"].dotted)
        if known is None:
            return None
        kind, sealed_field = known
        content = info["content"]
        content["version"].native  # noqa: B018 - parse now, fail here
        if not content["recipient_infos"].native:
            return None
        sealed = content[sealed_field]
        sealed["content_type"].native  # noqa: B018
        sealed["content_encryption_algorithm"].native  # noqa: B018
        if not _octets(sealed["encrypted_content"]):
            return None
        if kind == "authEnveloped-data" and not _octets(content["mac"]):
            return None
    except DECODE_ERRORS:
        return None
    return kind


def _octets(value: Any) -> bytes:
    """An OCTET STRING's value (BER chunks joined); empty when absent."""
    if isinstance(value, core.Void):
        return b""
    return bytes(value.native or b"")
