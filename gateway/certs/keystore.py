"""Users' private keys, in whatever key backend the gateway is configured with.

Keys are labelled ``user:<email>:<n>``: the lowercased address the key belongs to and a
counter (1, 2, ...) because one address has several keys over time (renewals with a new key,
an RSA and an EC key). On a PKCS#11 token that is the object's CKA_LABEL, so the token's
content reads as a list of addresses; the ``user:`` prefix keeps them apart from the CA's and
CMC signer's keys when the token is shared.

Keys the gateway makes (auto-enrolment) are generated inside the backend. Keys an
administrator brings (``gateway certs import --key``) are imported: into the software backend
as a passphrase-encrypted PKCS#8 file like every other key there, onto a PKCS#11 token as a
sensitive, non-extractable token object with CKA_ID = the key's SHA-1 key identifier. Before a
key is accepted as the partner of a certificate their public keys are compared
(:func:`check_pair`); :meth:`KeyStore.key_for` checks again on every load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keys import KeyBackend, KeyExists, KeyNotFound, KeyType, PrivateKeyHandle
from config.closing import Closing
from config.errors import CmcgateError
from config.values import is_number
from gateway.certs.models import CertificateRecord, certificate_emails, normalise_email

LABEL_PREFIX = "user:"
PlainKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyStoreError(CmcgateError):
    """A user's key could not be imported, found or paired with a certificate."""


class KeyMismatch(KeyStoreError):
    """A private key and a certificate that do not belong together."""


def user_label(email: str, n: int) -> str:
    """``user:alice@example.org:1``."""
    return f"{LABEL_PREFIX}{normalise_email(email)}:{int(n)}"


def parse_user_label(label: str) -> tuple[str, int] | None:
    """``user:alice@example.org:1`` -> ``("alice@example.org", 1)``; other labels -> None."""
    if not label.startswith(LABEL_PREFIX):
        return None
    email, sep, n = label[len(LABEL_PREFIX) :].rpartition(":")
    if not sep or not email or not is_number(n):
        return None
    return email, int(n)


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def check_pair(cert: x509.Certificate, public_key: Any, *, label: str | None = None) -> None:
    """Raise :class:`KeyMismatch` unless ``public_key`` is the key certified by ``cert``."""
    if _spki(cert.public_key()) != _spki(public_key):
        what = f"key {label!r}" if label else "the private key"
        raise KeyMismatch(
            f"{what} does not belong to certificate {format(cert.serial_number, 'x')}"
            f" ({cert.subject.rfc4514_string()}): their public keys differ"
        )


def load_private_key_pem(data: bytes | str, password: bytes | str | None = None) -> PlainKey:
    """An RSA or EC private key from PEM (PKCS#8, PKCS#1 or SEC1; encrypted or not)."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    secret = password.encode() if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(raw, password=secret)
    except TypeError as ex:  # password given for a plain key, or missing for an encrypted one
        raise KeyStoreError(f"cannot read the private key: {ex}") from ex
    except ValueError as ex:
        reason = "wrong password?" if secret else "not a PEM private key"
        raise KeyStoreError(f"cannot read the private key: {reason}") from ex
    if not isinstance(key, PlainKey):
        raise KeyStoreError(f"{type(key).__name__} keys are not supported: use RSA or EC")
    return key


def key_type_of(key: PlainKey | PublicKey) -> KeyType:
    """The backend key type of an RSA/EC key (UnknownKeyType for other sizes/curves)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyType.from_rsa_bits(key.key_size)
    return KeyType.from_curve_name(key.curve.name)


class KeyStore(Closing):
    """Users' private keys in ``backend``, labelled by e-mail address. Thread-safe as the
    backend is; the caller owns the backend (``close`` closes it)."""

    def __init__(self, backend: KeyBackend) -> None:
        self.backend = backend

    def close(self) -> None:
        self.backend.close()

    # -- labels -----------------------------------------------------------------------------
    def labels_for(self, email: str) -> list[str]:
        """Labels of the keys of ``email``, oldest first."""
        norm = normalise_email(email)
        found = []
        for label in self.backend.labels():
            parsed = parse_user_label(label)
            if parsed is not None and parsed[0] == norm:
                found.append((parsed[1], label))
        return [label for _, label in sorted(found)]

    def _next_label(self, email: str) -> str:
        numbers = [parse_user_label(label) for label in self.labels_for(email)]
        return user_label(email, max((p[1] for p in numbers if p), default=0) + 1)

    def find_label(self, email: str, public_key: Any) -> str | None:
        """The label of ``email``'s key whose public half is ``public_key``, if any."""
        wanted = _spki(public_key)
        for label in self.labels_for(email):
            try:
                if _spki(self.backend.load(label).public_key()) == wanted:
                    return label
            except KeyNotFound:  # deleted meanwhile
                continue
        return None

    # -- making and bringing keys --------------------------------------------------------------
    def generate_for(
        self,
        email: str,
        key_type: KeyType | str,
        *,
        before: Callable[[str], object] | None = None,
    ) -> PrivateKeyHandle:
        """A new key for ``email``, generated in the backend under the next free label.

        ``before(label)`` runs first (the enroller records the label there): when it raises,
        no key is made.
        """
        kt = KeyType.parse(key_type)
        for _ in range(5):
            label = self._next_label(email)
            if before is not None:
                before(label)
            try:
                return self.backend.generate(label, kt)
            except KeyExists:  # another process took the label: count on
                continue
        raise KeyStoreError(f"could not find a free key label for {email}")

    def import_key(
        self, email: str, key_pem: bytes | str, password: bytes | str | None = None
    ) -> str:
        """Import a PEM private key for ``email``; returns its label (the existing label if
        the backend holds this key for ``email`` already)."""
        return self.import_private_key(email, load_private_key_pem(key_pem, password))

    def import_private_key(self, email: str, key: PlainKey) -> str:
        key_type_of(key)  # refuse sizes and curves the backends cannot handle, before writing
        existing = self.find_label(email, key.public_key())
        if existing is not None:
            return existing
        for _ in range(5):
            label = self._next_label(email)
            try:
                handle = self.backend.import_key(label, key)
            except KeyExists:
                continue
            check_pair_handle(handle, key.public_key())
            return label
        raise KeyStoreError(f"could not find a free key label for {email}")

    def import_for_certificate(self, cert: x509.Certificate, email: str, key: PlainKey) -> str:
        """Import ``key`` as the partner of ``cert`` for ``email``, after checking that the
        certificate carries ``email`` and that the two belong together; returns the label."""
        norm = normalise_email(email)
        if norm not in certificate_emails(cert):
            raise KeyStoreError(
                f"certificate {format(cert.serial_number, 'x')} is not for {norm}"
                f" (it names {', '.join(certificate_emails(cert)) or 'no address'})"
            )
        check_pair(cert, key.public_key())
        return self.import_private_key(norm, key)

    # -- using keys -------------------------------------------------------------------------
    def key_for(self, record: CertificateRecord) -> PrivateKeyHandle:
        """The private key of a stored certificate, checked against the certificate."""
        if record.key_label is None:
            raise KeyStoreError(
                f"the gateway holds no private key for certificate {record.serial}"
                f" ({', '.join(record.emails)})"
            )
        try:
            handle = self.backend.load(record.key_label)
        except KeyNotFound as ex:
            raise KeyStoreError(
                f"private key {record.key_label!r} of certificate {record.serial} is missing"
                f" from the {self.backend.kind} key backend"
            ) from ex
        check_pair(record.certificate, handle.public_key(), label=record.key_label)
        return handle

    def delete(self, label: str) -> None:
        self.backend.delete(label)


def check_pair_handle(handle: PrivateKeyHandle, public_key: Any) -> None:
    if _spki(handle.public_key()) != _spki(public_key):
        raise KeyMismatch(f"key {handle.label!r} in the backend is not the key imported")
