"""Homes for private keys behind one interface: a PKCS#11 token, or encrypted files.

Callers keep only a label; ``backend.load(label)`` gives a cryptography private key object whose
``sign``/``decrypt`` run inside the backend and whose ``private_bytes`` refuses::

    with backend_from_settings("pkcs11", module_path=..., token_label="cmcgate",
                               pin_file="/etc/cmcgate/pin") as keys:
        ca_key = keys.load_or_generate("root-ca", KeyType.RSA4096)
        cert = builder.sign(ca_key, hashes.SHA256())
"""

from __future__ import annotations

import os
from typing import Any

from ca.keys.base import KeyBackend, key_type_of, read_secret, validate_label
from ca.keys.errors import (
    DecryptionFailed,
    KeyBackendError,
    KeyExists,
    KeyNotExportable,
    KeyNotFound,
    SecretNotFound,
    TokenUnavailable,
    UnsupportedKeyOperation,
)
from ca.keys.handles import EcKeyHandle, PrivateKeyHandle, RsaKeyHandle
from ca.keys.rates import raw_sign_rate
from ca.keys.types import KeyType, UnknownKeyType

BACKEND_KINDS = ("pkcs11", "software")


def backend_from_settings(kind: str, **kwargs: Any) -> KeyBackend:
    """A backend by name, as configuration gives it.

    ``pkcs11``: ``token_label``, ``module_path`` (default: SoftHSM2 where installed), one of
    ``pin``/``pin_file``/``pin_env``, optional ``pool_size``. ``software``: ``directory``, one
    of ``passphrase``/``passphrase_file``/``passphrase_env``. Unknown kinds or settings raise
    KeyBackendError.
    """
    norm = str(kind).strip().lower()
    if norm == "pkcs11":
        from ca.keys.pkcs11 import Pkcs11Backend

        allowed = {"module_path", "token_label", "pin", "pin_file", "pin_env", "pool_size"}
        _check_kwargs(norm, kwargs, allowed, required={"token_label"})
        kwargs.setdefault("module_path", None)
        if "pool_size" in kwargs:
            kwargs["pool_size"] = int(kwargs["pool_size"])
        return Pkcs11Backend(**kwargs)
    if norm == "software":
        from ca.keys.software import SoftwareBackend

        allowed = {"directory", "passphrase", "passphrase_file", "passphrase_env"}
        _check_kwargs(norm, kwargs, allowed, required={"directory"})
        return SoftwareBackend(**kwargs)
    raise KeyBackendError(f"unknown key backend {kind!r}: use one of {', '.join(BACKEND_KINDS)}")


def _check_kwargs(kind: str, kwargs: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise KeyBackendError(f"unknown settings for the {kind} key backend: {', '.join(unknown)}")
    missing = sorted(k for k in required if kwargs.get(k) in (None, ""))
    if missing:
        raise KeyBackendError(f"the {kind} key backend needs: {', '.join(missing)}")
    for name, value in list(kwargs.items()):
        if value is None:
            del kwargs[name]
        elif isinstance(value, os.PathLike):
            kwargs[name] = os.fspath(value)


__all__ = [
    "BACKEND_KINDS",
    "DecryptionFailed",
    "EcKeyHandle",
    "KeyBackend",
    "KeyBackendError",
    "KeyExists",
    "KeyNotExportable",
    "KeyNotFound",
    "KeyType",
    "PrivateKeyHandle",
    "RsaKeyHandle",
    "SecretNotFound",
    "TokenUnavailable",
    "UnknownKeyType",
    "UnsupportedKeyOperation",
    "backend_from_settings",
    "key_type_of",
    "raw_sign_rate",
    "read_secret",
    "validate_label",
]
