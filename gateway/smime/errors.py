"""Errors raised by the S/MIME transforms.

Every failure a message or a certificate can cause surfaces as a subclass of
:class:`SmimeError` (itself a :class:`config.errors.CmcgateError`); nothing else escapes the
public functions of :mod:`gateway.smime`.
"""

from __future__ import annotations

from cryptography import x509

from config.errors import CmcgateError


class SmimeError(CmcgateError):
    """Base of every error raised by :mod:`gateway.smime`."""


class MalformedMessage(SmimeError):
    """The input is not a parseable RFC 5322 / MIME message (or S/MIME body)."""


class NotSmime(SmimeError):
    """The message is well formed but not of the S/MIME kind the operation needs."""


class UnsupportedRecipient(SmimeError):
    """A recipient certificate the gateway cannot encrypt to (neither an RSA nor an EC key)."""

    def __init__(self, message: str, certificate: x509.Certificate) -> None:
        super().__init__(message)
        self.certificate = certificate


class NoRecipients(SmimeError):
    """encrypt() was called without any recipient certificate."""


class SigningFailed(SmimeError):
    """The key or certificate given to sign() cannot produce an S/MIME signature."""


class DecryptionFailed(SmimeError):
    """The enveloped data could not be decrypted with the given key/certificate."""


class NotForRecipient(DecryptionFailed):
    """The enveloped data names no recipient that the given certificate/key is."""


class UnsupportedAlgorithm(DecryptionFailed):
    """The enveloped data uses a key transport, key agreement or cipher not implemented."""
