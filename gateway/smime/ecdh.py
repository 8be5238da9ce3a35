"""ECDH key agreement for CMS (RFC 5753 §3.1, RFC 8551 §2.3): the content key wrapped for EC keys.

Both sides do the same three steps: an ECDH shared secret Z between the originator's
(ephemeral) key and the recipient's key, the key-encryption key from Z with the ANSI X9.63
KDF over ``ECC-CMS-SharedInfo`` (§7.2), and AES key wrap (RFC 3394) of the content key.

``ECC-CMS-SharedInfo ::= SEQUENCE { keyInfo AlgorithmIdentifier, entityUInfo [0] EXPLICIT
OCTET STRING OPTIONAL, suppPubInfo [2] EXPLICIT OCTET STRING }``: keyInfo is the key-wrap
algorithm (AES wraps have absent parameters), entityUInfo the ukm if the sender gave one,
suppPubInfo the key-encryption key length in bits as four big-endian octets.

The recipient's private key may live in an HSM: :meth:`exchange` of a key handle runs
CKM_ECDH1_DERIVE on the token (:mod:`ca.keys.handles`); nothing here needs the key's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from gateway.smime.algorithms import (
    ECDH_SCHEMES,
    ECDH_SEND_SCHEMES,
    HASHES,
    KEY_WRAP_FOR_SIZE,
    KEY_WRAPS,
    oid_der,
)
from gateway.smime.errors import DecryptionFailed, MalformedMessage, UnsupportedAlgorithm

#: Curves whose cofactor is 1, where the cofactor schemes equal the standard ones.
_COFACTOR_ONE = ("secp", "brainpool")


@dataclass(frozen=True)
class WrappedKey:
    """What a KeyAgreeRecipientInfo carries for one recipient."""

    scheme_oid: str
    wrap_oid: str
    ephemeral_point: bytes  # uncompressed X9.62 point of the originator's ephemeral key
    encrypted_key: bytes


def _tlv(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def shared_info(wrap_oid: str, ukm: bytes | None, kek_bits: int) -> bytes:
    """DER ``ECC-CMS-SharedInfo`` (RFC 5753 §7.2)."""
    body = _tlv(0x30, oid_der(wrap_oid))
    if ukm is not None:
        body += _tlv(0xA0, _tlv(0x04, ukm))
    body += _tlv(0xA2, _tlv(0x04, kek_bits.to_bytes(4, "big")))
    return _tlv(0x30, body)


def key_encryption_key(
    z: bytes, hash_algorithm: hashes.HashAlgorithm, wrap_oid: str, ukm: bytes | None
) -> bytes:
    size = KEY_WRAPS[wrap_oid]
    info = shared_info(wrap_oid, ukm, size * 8)
    return X963KDF(algorithm=hash_algorithm, length=size, sharedinfo=info).derive(z)


def kdf_hash_for(curve: ec.EllipticCurve) -> str:
    """SHA-256 up to 256-bit curves, SHA-384 up to 384, else SHA-512 (as RFC 5008 pairs them)."""
    if curve.key_size <= 256:
        return "sha256"
    return "sha384" if curve.key_size <= 384 else "sha512"


def wrap(public_key: ec.EllipticCurvePublicKey, content_key: bytes) -> WrappedKey:
    """Wrap ``content_key`` for ``public_key`` with a fresh ephemeral key (sender side).

    The wrap is as strong as the content key (aes128-wrap for AES-128, aes256-wrap for
    AES-256), the KDF hash follows the curve (:func:`kdf_hash_for`).
    """
    wrap_oid = KEY_WRAP_FOR_SIZE[len(content_key)]
    hash_name = kdf_hash_for(public_key.curve)
    ephemeral = ec.generate_private_key(public_key.curve)
    z = ephemeral.exchange(ec.ECDH(), public_key)
    kek = key_encryption_key(z, HASHES[hash_name](), wrap_oid, None)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return WrappedKey(
        ECDH_SEND_SCHEMES[hash_name], wrap_oid, point, keywrap.aes_key_wrap(kek, content_key)
    )


def unwrap(
    private_key: ec.EllipticCurvePrivateKey,
    originator_point: bytes,
    scheme_oid: str,
    wrap_oid: str,
    ukm: bytes | None,
    encrypted_key: bytes,
) -> bytes:
    """The content key of a KeyAgreeRecipientInfo addressed to ``private_key`` (receiver)."""
    scheme = ECDH_SCHEMES.get(scheme_oid)
    if scheme is None:
        raise UnsupportedAlgorithm(f"key agreement scheme {scheme_oid} is not supported")
    hash_type, cofactor = scheme
    curve = private_key.curve
    if cofactor and not curve.name.startswith(_COFACTOR_ONE):
        raise UnsupportedAlgorithm(f"cofactor ECDH on {curve.name} is not supported")
    if wrap_oid not in KEY_WRAPS:
        raise UnsupportedAlgorithm(f"key wrap algorithm {wrap_oid} is not supported")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, originator_point)
    except ValueError as exc:
        raise MalformedMessage(f"originator key is not a point on {curve.name}") from exc
    try:
        z = private_key.exchange(ec.ECDH(), peer)
    except _CryptoUnsupported as exc:
        raise UnsupportedAlgorithm(f"ECDH on {curve.name}: {exc}") from exc
    kek = key_encryption_key(z, hash_type(), wrap_oid, ukm)
    try:
        return keywrap.aes_key_unwrap(kek, encrypted_key)
    except (InvalidKey, ValueError) as exc:
        raise DecryptionFailed("ECDH key unwrap failed: wrong key or damaged message") from exc
