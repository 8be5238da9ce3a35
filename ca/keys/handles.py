"""Private-key handles: cryptography key objects whose secret half stays in a backend.

A handle *is* an ``RSAPrivateKey`` or ``EllipticCurvePrivateKey``, so it goes straight into
``CertificateBuilder.sign``, ``CertificateRevocationListBuilder.sign``,
``CertificateSigningRequestBuilder.sign``, ``PKCS7SignatureBuilder`` and ``pkcs7_decrypt_*``.
cryptography calls back into the Python methods below; each hashes locally (pure) and hands
the digest to the backend's :class:`KeyOperations`, which signs where the key lives.  RSA
decryption and ECDH (``exchange``) run in the backend too.
``private_bytes`` and ``private_numbers`` always refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer

from ca.keys.digests import digest_info, digest_of, pss_mgf_hash, pss_salt_length
from ca.keys.errors import KeyNotExportable, UnsupportedKeyOperation

if TYPE_CHECKING:
    from ca.keys.types import KeyType


class KeyOperations(Protocol):
    """What a backend does with the private half of the key called ``label``."""

    kind: str

    def rsa_sign_pkcs1v15(self, label: str, payload: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over ``payload`` (a DER DigestInfo), i.e. CKM_RSA_PKCS."""
        ...

    def rsa_sign_pss(
        self,
        label: str,
        digest: bytes,
        algorithm: hashes.HashAlgorithm,
        mgf_hash: hashes.HashAlgorithm,
        salt_length: int,
    ) -> bytes: ...

    def rsa_decrypt(self, label: str, ciphertext: bytes, pad: AsymmetricPadding) -> bytes: ...

    def ec_sign_digest(self, label: str, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """DER ECDSA-Sig-Value over ``digest``."""
        ...

    def ec_derive(self, label: str, peer_point: bytes) -> bytes:
        """ECDH shared secret (the x coordinate) with the uncompressed X9.62 ``peer_point``,
        i.e. CKM_ECDH1_DERIVE with CKD_NULL."""
        ...


class _HandleBase:
    """Identity of a handle and the refusals common to RSA and EC handles."""

    def __init__(self, label: str, key_type: KeyType, ops: KeyOperations) -> None:
        self._label = label
        self._key_type = key_type
        self._ops = ops

    @property
    def label(self) -> str:
        """The non-secret locator callers store."""
        return self._label

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def backend_kind(self) -> str:
        """``"pkcs11"`` or ``"software"``."""
        return self._ops.kind

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise KeyNotExportable(f"private key {self._label!r} is not exportable")

    def private_numbers(self) -> Any:
        raise KeyNotExportable(f"private key {self._label!r} is not exportable")

    def __copy__(self) -> Any:
        return self  # immutable: a copy may share the locator

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._ops.kind}:{self._label!r} {self._key_type.value}>"


class RsaKeyHandle(_HandleBase, rsa.RSAPrivateKey):
    """An RSA private key living in a backend."""

    def __init__(
        self, label: str, key_type: KeyType, ops: KeyOperations, public: rsa.RSAPublicKey
    ) -> None:
        super().__init__(label, key_type, ops)
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        if isinstance(padding, _PKCS1v15):
            if isinstance(algorithm, utils.NoDigestInfo):
                return self._ops.rsa_sign_pkcs1v15(self._label, bytes(data))
            digest, hash_alg = digest_of(data, algorithm)
            return self._ops.rsa_sign_pkcs1v15(self._label, digest_info(hash_alg, digest))
        if isinstance(padding, _PSS):
            if isinstance(algorithm, utils.NoDigestInfo):
                raise UnsupportedKeyOperation("NoDigestInfo is only valid with PKCS1v15")
            digest, hash_alg = digest_of(data, algorithm)
            mgf_hash = pss_mgf_hash(padding)
            salt = pss_salt_length(padding, hash_alg, self.key_size)
            return self._ops.rsa_sign_pss(self._label, digest, hash_alg, mgf_hash, salt)
        raise UnsupportedKeyOperation(f"RSA signing with {padding.name} is not supported")

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if not isinstance(padding, _PKCS1v15 | _OAEP):
            raise UnsupportedKeyOperation(f"RSA decryption with {padding.name} not supported")
        return self._ops.rsa_decrypt(self._label, ciphertext, padding)


class EcKeyHandle(_HandleBase, ec.EllipticCurvePrivateKey):
    """An EC private key living in a backend (ECDSA signing, ECDH key agreement)."""

    def __init__(
        self, label: str, key_type: KeyType, ops: KeyOperations, public: ec.EllipticCurvePublicKey
    ) -> None:
        super().__init__(label, key_type, ops)
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedKeyOperation("EC keys sign with ECDSA only")
        if signature_algorithm.deterministic_signing:
            raise UnsupportedKeyOperation("deterministic ECDSA (RFC 6979) is not supported")
        digest, hash_alg = digest_of(bytes(data), signature_algorithm.algorithm)
        return self._ops.ec_sign_digest(self._label, digest, hash_alg)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """ECDH inside the backend (S/MIME to EC recipients, RFC 5753)."""
        if not isinstance(algorithm, ec.ECDH):
            raise UnsupportedKeyOperation("EC key exchange is ECDH only")
        if peer_public_key.curve.name != self.curve.name:
            raise ValueError(f"peer key is on {peer_public_key.curve.name}, not {self.curve.name}")
        point = peer_public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return self._ops.ec_derive(self._label, point)


_PKCS1v15 = padding.PKCS1v15
_PSS = padding.PSS
_OAEP = padding.OAEP

PrivateKeyHandle = RsaKeyHandle | EcKeyHandle
"""What every backend's ``generate``/``load`` returns."""
