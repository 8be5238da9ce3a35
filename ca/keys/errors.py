"""Errors raised by the key backends.

Every one derives from :class:`config.errors.CmcgateError`. PKCS#11 and file-system errors are
re-raised as one of these with a sentence a human can act on (``raise ... from ex`` keeps the
original for the log). No message ever contains a PIN, a passphrase or key material.
"""

from __future__ import annotations

from config.errors import CmcgateError


class KeyBackendError(CmcgateError):
    """A key backend could not do what was asked (token missing, wrong PIN, HSM failure...)."""


class TokenUnavailable(KeyBackendError):
    """The token stayed unusable after its sessions were re-opened (an HSM outage): temporary,
    the operation may succeed later (the gateway answers 4xx, the CA a temporary failure)."""


class KeyNotFound(KeyBackendError):
    """No key with this label exists in the backend."""


class KeyExists(KeyBackendError):
    """A key with this label exists already: labels are unique within a backend."""


class KeyNotExportable(KeyBackendError):
    """Private key material never leaves a backend; private_bytes()/private_numbers() refuse."""


class SecretNotFound(KeyBackendError):
    """A PIN or passphrase could not be read from the file or environment variable named."""


class UnsupportedKeyOperation(KeyBackendError, ValueError):
    """A padding, hash or operation this backend does not implement (e.g. PSS AUTO salt)."""


class DecryptionFailed(KeyBackendError, ValueError):
    """RSA decryption failed (wrong key or bad padding).

    It is also a :class:`ValueError`, which is what cryptography's callers (PKCS#7 decryption)
    expect from ``key.decrypt``.
    """
