"""The CMS algorithms the gateway encrypts with and decrypts, by OID (RFC 8551 §2.7, 5753, 5084).

Sending is what an administrator chooses (:class:`ContentCipher`, :class:`RsaKeyTransport`);
the default, AES-256-CBC with RSA PKCS#1 v1.5, is what every S/MIME client reads.
Receiving accepts what real clients send: AES-128/192/256-CBC and Triple-DES (legacy
clients), AES-GCM in AuthEnvelopedData, RSA PKCS#1 v1.5 and RSAES-OAEP (any SHA-1/SHA-2
hashes), ECDH (RFC 5753 dhSinglePass standard and cofactor schemes, SHA-1/SHA-2 X9.63 KDF)
with AES key wrap.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, algorithms

from config.smime import ContentCipher

_CIPHER_OIDS = {
    ContentCipher.AES128_CBC: "2.16.840.1.101.3.4.1.2",
    ContentCipher.AES256_CBC: "2.16.840.1.101.3.4.1.42",
    ContentCipher.AES128_GCM: "2.16.840.1.101.3.4.1.6",
    ContentCipher.AES256_GCM: "2.16.840.1.101.3.4.1.46",
}

#: CBC content ciphers accepted inbound: OID -> (cipher, key length in bytes).
CBC_CIPHERS: dict[str, tuple[Callable[[bytes], BlockCipherAlgorithm], int]] = {
    "2.16.840.1.101.3.4.1.2": (algorithms.AES, 16),
    "2.16.840.1.101.3.4.1.22": (algorithms.AES, 24),
    "2.16.840.1.101.3.4.1.42": (algorithms.AES, 32),
    "1.2.840.113549.3.7": (TripleDES, 24),
}
#: GCM content ciphers accepted inbound (AuthEnvelopedData): OID -> key length in bytes.
GCM_CIPHERS = {
    "2.16.840.1.101.3.4.1.6": 16,
    "2.16.840.1.101.3.4.1.26": 24,
    "2.16.840.1.101.3.4.1.46": 32,
}
CIPHER_NAMES = {
    "1.2.840.113549.3.2": "RC2-CBC",
    "1.3.14.3.2.7": "DES-CBC",
    "1.2.840.113549.3.7": "3DES-CBC",
    "1.2.392.200011.61.1.1.1.2": "Camellia-128-CBC",
    "1.2.392.200011.61.1.1.1.4": "Camellia-256-CBC",
    "1.2.840.113549.1.9.16.3.18": "ChaCha20-Poly1305",
    **{oid: cipher.value.upper() for cipher, oid in _CIPHER_OIDS.items()},
}

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: RFC 5753 §7.1.4 key agreement schemes: OID -> (KDF hash, cofactor variant).
ECDH_SCHEMES: dict[str, tuple[type[hashes.HashAlgorithm], bool]] = {
    "1.3.133.16.840.63.0.2": (hashes.SHA1, False),  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.132.1.11.0": (hashes.SHA224, False),
    "1.3.132.1.11.1": (hashes.SHA256, False),
    "1.3.132.1.11.2": (hashes.SHA384, False),
    "1.3.132.1.11.3": (hashes.SHA512, False),
    "1.3.133.16.840.63.0.3": (hashes.SHA1, True),  # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.14.0": (hashes.SHA224, True),
    "1.3.132.1.14.1": (hashes.SHA256, True),
    "1.3.132.1.14.2": (hashes.SHA384, True),
    "1.3.132.1.14.3": (hashes.SHA512, True),
}
#: The standard-DH scheme the gateway sends with, by KDF hash.
ECDH_SEND_SCHEMES = {
    "sha256": "1.3.132.1.11.1",
    "sha384": "1.3.132.1.11.2",
    "sha512": "1.3.132.1.11.3",
}
#: AES key wrap (RFC 3394, RFC 3565): OID -> key-encryption key length in bytes.
KEY_WRAPS = {
    "2.16.840.1.101.3.4.1.5": 16,
    "2.16.840.1.101.3.4.1.25": 24,
    "2.16.840.1.101.3.4.1.45": 32,
}
KEY_WRAP_FOR_SIZE = {size: oid for oid, size in KEY_WRAPS.items()}
EC_PUBLIC_KEY = "1.2.840.10045.2.1"

ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"


def cipher_oid(cipher: ContentCipher) -> str:
    """The content-encryption algorithm's OID (RFC 3565, RFC 5084)."""
    return _CIPHER_OIDS[cipher]


def oid_der(dotted: str) -> bytes:
    """DER of an OBJECT IDENTIFIER (X.690 §8.19)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


def cipher_name(oid: str) -> str:
    return CIPHER_NAMES.get(oid, oid)
