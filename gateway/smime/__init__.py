"""S/MIME transforms (RFC 8551) as pure functions on message bytes.

Outbound: :func:`sign`, :func:`encrypt`, :func:`sign_then_encrypt`.
Already encrypted (by parsing the CMS, never by header): :func:`encrypted_kind`.
Inbound: :func:`decrypt`, :func:`verify`, :func:`add_signature_header`,
:func:`strip_signature_headers`, :func:`smime_kind`.
All failures are :class:`SmimeError` subclasses (or ``cmc``/``ca`` project errors raised by
key handles); see each module for the decisions taken where RFC 8551 leaves a choice.
"""

from gateway.smime.encrypt import encrypt, sign_then_encrypt
from gateway.smime.encrypted import EncryptedKind, encrypted_kind, is_encrypted
from gateway.smime.errors import (
    DecryptionFailed,
    MalformedMessage,
    NoRecipients,
    NotForRecipient,
    NotSmime,
    SigningFailed,
    SmimeError,
    UnsupportedAlgorithm,
    UnsupportedRecipient,
)
from gateway.smime.inbound import (
    SIGNATURE_HEADER,
    VerificationResult,
    add_signature_header,
    certificate_emails,
    decrypt,
    rejoin,
    smime_kind,
    strip_signature_headers,
    verify,
)
from gateway.smime.sign import sign

__all__ = [
    "SIGNATURE_HEADER",
    "DecryptionFailed",
    "EncryptedKind",
    "MalformedMessage",
    "NoRecipients",
    "NotForRecipient",
    "NotSmime",
    "SigningFailed",
    "SmimeError",
    "UnsupportedAlgorithm",
    "UnsupportedRecipient",
    "VerificationResult",
    "add_signature_header",
    "certificate_emails",
    "decrypt",
    "encrypt",
    "encrypted_kind",
    "is_encrypted",
    "rejoin",
    "sign",
    "sign_then_encrypt",
    "smime_kind",
    "strip_signature_headers",
    "verify",
]
