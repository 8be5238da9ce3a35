"""The one interface every home for private keys implements.

A :class:`KeyBackend` creates, finds and deletes keys by *label* (a CA name, ``cmc-signer``, a
user's e-mail address...). What callers keep is only that non-secret locator; the backend hands
back a :data:`~ca.keys.handles.PrivateKeyHandle`, which is a cryptography ``RSAPrivateKey`` /
``EllipticCurvePrivateKey`` whose ``sign``/``decrypt`` run inside the backend and whose
``private_bytes`` refuses. PINs and passphrases come from a file or an environment variable
(:func:`read_secret`), never from the command line or the properties file itself.
"""

from __future__ import annotations

import abc
import enum
import os
import stat
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keys.errors import KeyBackendError, KeyExists, KeyNotFound, SecretNotFound
from ca.keys.handles import PrivateKeyHandle
from config.closing import Closing

MAX_LABEL_LENGTH = 200


class UnknownKeyType(KeyBackendError, ValueError):
    """A key type name that is not one of :class:`KeyType`'s values."""


class KeyType(enum.StrEnum):
    """The key types cmcgate generates: the CA/B Forum's RSA sizes and NIST curves."""

    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @classmethod
    def parse(cls, value: str | KeyType) -> KeyType:
        """``"RSA2048"``, ``" ec-p256 "`` -> a member; anything else raises UnknownKeyType."""
        if isinstance(value, KeyType):
            return value
        if isinstance(value, str):
            norm = value.strip().lower().replace("_", "-")
            for member in cls:
                if norm == member.value:
                    return member
        valid = ", ".join(m.value for m in cls)
        raise UnknownKeyType(f"unknown key type {value!r}: use one of {valid}")

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")

    @property
    def rsa_bits(self) -> int:
        """Modulus size of an RSA type (ValueError for EC types)."""
        if not self.is_rsa:
            raise UnknownKeyType(f"{self.value} is not an RSA key type")
        return int(self.value[3:])

    @property
    def curve(self) -> ec.EllipticCurve:
        """cryptography curve of an EC type (ValueError for RSA types)."""
        if self is KeyType.EC_P256:
            return ec.SECP256R1()
        if self is KeyType.EC_P384:
            return ec.SECP384R1()
        raise UnknownKeyType(f"{self.value} is not an EC key type")

    @classmethod
    def from_rsa_bits(cls, bits: int) -> KeyType:
        try:
            return cls.parse(f"rsa{bits}")
        except UnknownKeyType:
            raise UnknownKeyType(f"RSA keys of {bits} bits are not supported") from None

    @classmethod
    def from_curve_name(cls, name: str) -> KeyType:
        """``secp256r1``/``prime256v1`` -> EC_P256, ``secp384r1`` -> EC_P384."""
        names = {"secp256r1": cls.EC_P256, "prime256v1": cls.EC_P256, "secp384r1": cls.EC_P384}
        try:
            return names[name.lower()]
        except KeyError:
            raise UnknownKeyType(f"EC curve {name!r} is not supported") from None


def key_type_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> KeyType:
    """The KeyType of a cryptography key (UnknownKeyType for other sizes, curves, types)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return KeyType.from_rsa_bits(key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return KeyType.from_curve_name(key.curve.name)
    raise UnknownKeyType(f"keys of type {type(key).__name__} are not supported")


def validate_label(label: object) -> str:
    """A label is a non-empty string of printable characters, at most 200 long."""
    if not isinstance(label, str) or not label:
        raise KeyBackendError(f"a key label must be a non-empty string, not {label!r}")
    if len(label) > MAX_LABEL_LENGTH:
        raise KeyBackendError(f"key label is {len(label)} characters long, {MAX_LABEL_LENGTH} max")
    if not label.isprintable():
        raise KeyBackendError(f"key label {label!r} contains control characters")
    return label


def read_secret(file: str | os.PathLike[str] | None = None, env: str | None = None) -> str:
    """Read a PIN or passphrase from exactly one of a file or an environment variable.

    A file's trailing newline is dropped (``echo 1234 > pin`` works). A file readable by group
    or others is refused: a secret file must be mode 0600/0400.
    """
    if (file is None) == (env is None):
        raise SecretNotFound("give exactly one of a secret file or an environment variable")
    if env is not None:
        value = os.environ.get(env)
        if value is None or value == "":
            raise SecretNotFound(f"environment variable {env} is not set or empty")
        return value
    path = Path(file)  # type: ignore[arg-type]
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as ex:
        raise SecretNotFound(f"cannot read secret file {path}: {ex.strerror}") from ex
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretNotFound(
            f"secret file {path} is readable by group or others (mode {stat.S_IMODE(mode):o});"
            " chmod 600 it"
        )
    value = text.rstrip("\r\n")
    if not value:
        raise SecretNotFound(f"secret file {path} is empty")
    return value


class KeyBackend(abc.ABC, Closing):
    """Somewhere private keys live: create, find and delete them by label; sign inside.

    Backends are safe to use from several threads at once. Use as a context manager or call
    :meth:`close` when done.
    """

    kind: ClassVar[str]

    @abc.abstractmethod
    def generate(self, label: str, key_type: KeyType) -> PrivateKeyHandle:
        """Create a new key called ``label`` (KeyExists if the label is taken)."""

    @abc.abstractmethod
    def import_key(
        self, label: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ) -> PrivateKeyHandle:
        """Store an existing key (e.g. from a user's PKCS#12) as ``label``, non-exportable.

        The key must be one of the :class:`KeyType` sizes/curves (UnknownKeyType otherwise);
        KeyExists if the label is taken. The caller should drop its copy afterwards.
        """

    @abc.abstractmethod
    def load(self, label: str) -> PrivateKeyHandle:
        """The key called ``label`` (KeyNotFound if there is none)."""

    @abc.abstractmethod
    def exists(self, label: str) -> bool:
        """Whether a key called ``label`` exists."""

    @abc.abstractmethod
    def delete(self, label: str) -> None:
        """Destroy the key called ``label`` (KeyNotFound if there is none)."""

    @abc.abstractmethod
    def labels(self) -> list[str]:
        """Labels of every key in the backend, sorted."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release sessions/caches. Idempotent; handles stop working afterwards."""

    @abc.abstractmethod
    def describe(self) -> dict[str, str]:
        """Non-secret settings that locate this backend (for logs and the audit trail)."""

    def load_or_generate(self, label: str, key_type: KeyType) -> PrivateKeyHandle:
        """The key called ``label``, created first if it does not exist yet."""
        try:
            return self.load(label)
        except KeyNotFound:
            pass
        try:
            return self.generate(label, key_type)
        except KeyExists:  # another thread or process was quicker
            return self.load(label)
