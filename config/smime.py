"""S/MIME choices an admin makes in the properties (``cmcgate.smime.*``): plain values.

The gateway maps them to algorithms and OIDs (:mod:`gateway.smime.algorithms`).
"""

from __future__ import annotations

import enum


class ContentCipher(enum.StrEnum):
    """Content encryption for outgoing mail (``cmcgate.smime.contentCipher``)."""

    AES128_CBC = "aes128-cbc"
    AES256_CBC = "aes256-cbc"
    AES128_GCM = "aes128-gcm"
    AES256_GCM = "aes256-gcm"

    @property
    def key_size(self) -> int:
        """Content-encryption key length in bytes."""
        return 16 if self.value.startswith("aes128") else 32

    @property
    def is_gcm(self) -> bool:
        """AES-GCM: the message becomes AuthEnvelopedData (RFC 5083), not EnvelopedData."""
        return self.value.endswith("-gcm")


class RsaKeyTransport(enum.StrEnum):
    """How the content key is encrypted to RSA recipients (``cmcgate.smime.rsaKeyTransport``).

    ``oaep`` is RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 8551 §2.3 SHOULD+, RFC 4055).
    """

    PKCS1V15 = "pkcs1v15"
    OAEP = "oaep"
