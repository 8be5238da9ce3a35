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
import os
import stat
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keys.errors import KeyBackendError, KeyExists, KeyNotFound, SecretNotFound
from ca.keys.handles import PrivateKeyHandle
from ca.keys.types import KeyType, UnknownKeyType
from config.closing import Closing

MAX_LABEL_LENGTH = 200


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
