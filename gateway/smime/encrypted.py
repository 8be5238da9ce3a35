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

from typing import Literal

from asn1crypto import cms as asn1_cms
from asn1crypto import core

from cmc.asn1.der import DECODE_ERRORS
from gateway.smime import ber, mime
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
    if not _may_be_pkcs7(message):
        return None
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


def _may_be_pkcs7(message: mime.Buffer) -> bool:
    """A quick no for most mail: a header block that names neither pkcs7(-mime) nor .p7m nor
    an RFC 2231 parameter (which could spell either in another form) cannot be S/MIME."""
    data = bytes(message[:65536])
    end = min((i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=-1)
    if end < 0:
        return True  # no end of the header block in the first 64 KiB: let the parser decide
    head = data[:end].lower()
    return b"pkcs7" in head or b"p7m" in head or b"*=" in head


def is_encrypted(message: mime.Buffer) -> bool:
    return encrypted_kind(message) is not None


def cms_encrypted_kind(der: bytes) -> EncryptedKind | None:
    """What :func:`encrypted_kind` decides for the decoded body ``der``.

    The outer layers are walked by offset (:mod:`gateway.smime.ber`): a 25 MB envelope is
    checked without a copy of its ciphertext; only the small parts go through asn1crypto.
    """
    try:
        info = ber.read(der, 0)
        if info.tag != 0x30 or info.end != len(der):
            return None  # not exactly one ContentInfo
        parts = list(ber.children(der, info))
        if len(parts) != 2 or parts[0].tag != 0x06 or parts[1].tag != 0xA0:
            return None
        known = _CONTENT.get(core.ObjectIdentifier.load(ber.element_bytes(der, parts[0])).dotted)
        if known is None:
            return None
        kind = known[0]
        body = next(ber.children(der, parts[1]), None)
        if body is None or body.tag != 0x30:
            return None
        fields = [f for f in ber.children(der, body) if f.tag not in (0xA0, 0xA2)]
        if len(fields) < 3 or fields[0].tag != 0x02 or fields[1].tag & ~0x20 != 0x11:
            return None
        if next(ber.children(der, fields[1]), None) is None:
            return None  # no RecipientInfo
        sealed = list(ber.children(der, fields[2]))
        if len(sealed) < 3 or sealed[0].tag != 0x06 or sealed[1].tag != 0x30:
            return None
        algorithm = asn1_cms.EncryptionAlgorithm.load(ber.element_bytes(der, sealed[1]))
        algorithm["algorithm"].dotted  # noqa: B018 - an OID, or this raises
        if sealed[2].tag & ~0x20 != 0x80 or not _non_empty(der, sealed[2]):
            return None
        if kind == "authEnveloped-data":
            mac = next((f for f in fields[3:] if f.tag & ~0x20 == ber.OCTET_STRING), None)
            if mac is None or not _non_empty(der, mac):
                return None
    except MalformedMessage:
        return None
    except DECODE_ERRORS:
        return None
    return kind


def _non_empty(buf: bytes, element: ber.Tlv) -> bool:
    """An OCTET STRING (any tag, BER chunks) with at least one octet, without copying it."""
    return any(len(chunk) for chunk in ber.octets(buf, element))
