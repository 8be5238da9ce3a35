"""Loading a PKCS#12 "access certificate" (RFC 7292) into memory.

The access certificate authenticates cmcgate to a CA: as the TLS client certificate of the
RFC 5273 transport, and (for the message library) as the signer of Full PKI Requests.  The
caller resolves the password (file, environment) and hands over bytes; nothing here touches
the disk.  :func:`encrypted_pem_bundle` renders the credential for APIs that only read files
(``ssl.SSLContext.load_cert_chain``): the key is always encrypted in that rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from cmc.errors import CmcError

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


class AccessCredentialError(CmcError):
    """The PKCS#12 file cannot be used: wrong password, corrupt, or key and certificate missing.

    A configuration problem: retrying will not help, an operator has to fix the file or password.
    """


@dataclass(frozen=True)
class AccessCredential:
    """A private key, its certificate and the certificates the PKCS#12 carried along."""

    private_key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


def load_pkcs12(data: bytes, password: bytes | None) -> AccessCredential:
    """Parse a PKCS#12 blob; the first certificate must belong to the private key.

    An empty password and no password are both tried the way the file was written: ``None``
    and ``b""`` are passed through as given (PKCS#12 distinguishes them).
    """
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError) as exc:
        raise AccessCredentialError(
            f"cannot open the access PKCS#12 (wrong password or not a PKCS#12 file): {exc}"
        ) from None
    if key is None:
        raise AccessCredentialError("the access PKCS#12 holds no private key")
    if cert is None:
        raise AccessCredentialError("the access PKCS#12 holds no certificate for its key")
    if not isinstance(key, PrivateKey):
        raise AccessCredentialError(
            f"the access PKCS#12 key type {type(key).__name__} is not supported"
        )
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise AccessCredentialError(
            "the access PKCS#12 certificate does not belong to its private key"
        )
    return AccessCredential(private_key=key, certificate=cert, chain=tuple(extra))


def encrypted_pem_bundle(credential: AccessCredential, password: bytes) -> bytes:
    """Certificate, chain and the key as PEM, the key encrypted (PKCS#8) under ``password``.

    This is what ``ssl.SSLContext.load_cert_chain(path, password=...)`` reads; the key never
    appears unencrypted in it.
    """
    if not password:
        raise AccessCredentialError("refusing to render the access key without a password")
    parts = [credential.certificate.public_bytes(serialization.Encoding.PEM)]
    parts.extend(c.public_bytes(serialization.Encoding.PEM) for c in credential.chain)
    parts.append(
        credential.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return b"".join(parts)


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
