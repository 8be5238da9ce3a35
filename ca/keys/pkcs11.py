"""Keys on a PKCS#11 token (an HSM, or SoftHSM2 for development and tests).

Keys are generated on the token as sensitive, non-extractable token objects labelled with the
caller's label (CKA_LABEL) and identified by the SHA-1 of their public key (CKA_ID, the RFC 5280
method-1 key identifier, so tools that pair certificates and keys by id find them). Signing and
decryption happen on the token: RSA PKCS#1 v1.5 as CKM_RSA_PKCS over a DigestInfo built in
Python, RSA-PSS as CKM_RSA_PKCS_PSS over the digest, ECDSA as CKM_ECDSA over the digest
(converted from raw r||s to DER), decryption as CKM_RSA_PKCS or CKM_RSA_PKCS_OAEP, ECDH as
CKM_ECDH1_DERIVE (EC keys are made with CKA_DERIVE for that: S/MIME to EC recipients).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from pkcs11 import KDF, MGF, Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as px
from pkcs11.util.ec import encode_named_curve_parameters

from ca.keys.base import KeyBackend, KeyType, key_type_of, read_secret, validate_label
from ca.keys.digests import oaep_decode
from ca.keys.errors import (
    DecryptionFailed,
    KeyBackendError,
    KeyExists,
    KeyNotFound,
    UnsupportedKeyOperation,
)
from ca.keys.handles import EcKeyHandle, PrivateKeyHandle, RsaKeyHandle
from ca.keys.pkcs11_templates import PlainKey, import_templates
from ca.keys.pool import PooledSession, acquire_pool, release_pool

SOFTHSM_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
)

_HASH_MECH = {  # sha1 only reaches here for OAEP decryption: signing refuses SHA-1 earlier
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha224": (Mechanism.SHA224, MGF.SHA224),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
_RSA_CAPABILITIES = (
    MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
)
_CURVE_NAMES = {KeyType.EC_P256: "secp256r1", KeyType.EC_P384: "secp384r1"}


def find_softhsm_module() -> str | None:
    """Real path of libsofthsm2.so: ``$SOFTHSM2_MODULE`` if set, else the usual places.

    The path is resolved (symlinks followed) because python-pkcs11 caches loaded modules by
    path string: the same library loaded under two names fails with "already initialized".
    """
    env = os.environ.get("SOFTHSM2_MODULE")
    candidates = (env,) if env else SOFTHSM_CANDIDATES
    found = next((p for p in candidates if Path(p).is_file()), None)
    return os.path.realpath(found) if found else None


class _Pkcs11Ops:
    """The private-key operations of :class:`Pkcs11Backend`, run in pooled sessions."""

    kind = "pkcs11"

    def __init__(self, backend: Pkcs11Backend) -> None:
        self._backend = backend

    def rsa_sign_pkcs1v15(self, label: str, payload: bytes) -> bytes:
        def op(s: PooledSession) -> bytes:
            key = _private_key(s, label)
            return bytes(key.sign(payload, mechanism=Mechanism.RSA_PKCS))

        return self._backend._run(f"RSA signing with {label!r}", op)

    def rsa_sign_pss(
        self,
        label: str,
        digest: bytes,
        algorithm: hashes.HashAlgorithm,
        mgf_hash: hashes.HashAlgorithm,
        salt_length: int,
    ) -> bytes:
        param = (_HASH_MECH[algorithm.name][0], _HASH_MECH[mgf_hash.name][1], salt_length)

        def op(s: PooledSession) -> bytes:
            key = _private_key(s, label)
            return bytes(key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=param))

        return self._backend._run(f"RSA-PSS signing with {label!r}", op)

    def rsa_decrypt(self, label: str, ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        if not isinstance(pad, padding.OAEP):
            return self._decrypt(label, ciphertext, Mechanism.RSA_PKCS, None)
        mgf = pad.mgf
        if not isinstance(mgf, padding.MGF1) or pad.algorithm.name not in _HASH_MECH:
            raise UnsupportedKeyOperation(f"OAEP with {pad.algorithm.name} is not supported")
        mgf_hash = mgf._algorithm
        if mgf_hash.name not in _HASH_MECH:
            raise UnsupportedKeyOperation(f"OAEP with MGF1-{mgf_hash.name} is not supported")
        param = (_HASH_MECH[pad.algorithm.name][0], _HASH_MECH[mgf_hash.name][1], pad._label)
        try:
            return self._decrypt(label, ciphertext, Mechanism.RSA_PKCS_OAEP, param)
        except UnsupportedKeyOperation:
            pass  # e.g. SoftHSM2: OAEP with SHA-1 only. Decrypt raw, decode OAEP here.
        em = self._decrypt(label, ciphertext, Mechanism.RSA_X_509, None)
        key_size = len(ciphertext) * 8
        try:
            return oaep_decode(em, key_size, pad.algorithm, mgf_hash, pad._label)
        except ValueError:
            msg = f"decryption with key {label!r} failed: wrong key or data"
            raise DecryptionFailed(msg) from None

    def _decrypt(self, label: str, ciphertext: bytes, mech: Mechanism, param: Any) -> bytes:
        def op(s: PooledSession) -> bytes:
            key = _private_key(s, label)
            try:
                return bytes(key.decrypt(ciphertext, mechanism=mech, mechanism_param=param))
            except px.GeneralError as ex:  # SoftHSM2's answer to a bad padding
                msg = f"decryption with key {label!r} failed: wrong key or data"
                raise DecryptionFailed(msg) from ex
            except (px.ArgumentsBad, px.MechanismParamInvalid, px.MechanismInvalid) as ex:
                raise UnsupportedKeyOperation(
                    f"the token refused {mech.name} decryption with these parameters"
                ) from ex

        return self._backend._run(f"RSA decryption with {label!r}", op)

    def ec_sign_digest(self, label: str, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        def op(s: PooledSession) -> bytes:
            key = _private_key(s, label)
            return bytes(key.sign(digest, mechanism=Mechanism.ECDSA))

        raw = self._backend._run(f"ECDSA signing with {label!r}", op)
        half = len(raw) // 2
        r, s_ = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return utils.encode_dss_signature(r, s_)

    def ec_derive(self, label: str, peer_point: bytes) -> bytes:
        """CKM_ECDH1_DERIVE (CKD_NULL) into a short-lived, extractable session secret whose
        value is read and which is destroyed at once; the private key never leaves."""
        size = (len(peer_point) - 1) // 2  # the field size in bytes: Z's length

        def op(s: PooledSession) -> bytes:
            key = _private_key(s, label)
            if not key[Attribute.DERIVE]:
                raise UnsupportedKeyOperation(
                    f"EC key {label!r} on the token does not allow ECDH (CKA_DERIVE is false:"
                    " it was made for signing only); re-import the key, or set CKA_DERIVE"
                )
            secret = key.derive_key(
                P11KeyType.GENERIC_SECRET,
                size * 8,
                mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, peer_point),
                template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                secret.destroy()

        return self._backend._run(f"ECDH with {label!r}", op)


def _private_key(s: PooledSession, label: str) -> Any:
    """The private key object labelled ``label`` in this session (cached per session)."""
    key = s.cache.get((label, ObjectClass.PRIVATE_KEY))
    if key is None:
        found = _find(s, label, ObjectClass.PRIVATE_KEY)
        if not found:
            raise KeyNotFound(f"no private key labelled {label!r} on the token")
        if len(found) > 1:
            raise KeyBackendError(f"{len(found)} private keys are labelled {label!r}")
        key = s.cache[(label, ObjectClass.PRIVATE_KEY)] = found[0]
    return key


def _find(s: PooledSession, label: str | None, cls: ObjectClass) -> list[Any]:
    attrs: dict[Attribute, Any] = {Attribute.CLASS: cls}
    if label is not None:
        attrs[Attribute.LABEL] = label
    return list(s.session.get_objects(attrs))  # consume inside the session


class Pkcs11Backend(KeyBackend):
    """Keys on the token labelled ``token_label`` in the PKCS#11 module ``module_path``.

    ``module_path`` None means SoftHSM2 where it is installed (:func:`find_softhsm_module`).
    The user PIN is given as ``pin``, or read from ``pin_file`` or the environment variable
    ``pin_env`` (exactly one). ``pool_size`` bounds concurrent sessions on the token.
    """

    kind = "pkcs11"

    def __init__(
        self,
        module_path: str | os.PathLike[str] | None,
        token_label: str,
        pin: str | None = None,
        *,
        pin_file: str | os.PathLike[str] | None = None,
        pin_env: str | None = None,
        pool_size: int = 4,
    ) -> None:
        given = [x for x in (pin, pin_file, pin_env) if x is not None]
        if len(given) != 1:
            raise KeyBackendError("give the token PIN as exactly one of pin, pin_file, pin_env")
        if pin is None:
            pin = read_secret(file=pin_file, env=pin_env)
        if module_path is None:
            module_path = find_softhsm_module()
            if module_path is None:
                raise KeyBackendError(
                    "no PKCS#11 module given and SoftHSM2 not found; install softhsm2 or"
                    " set the module path"
                )
        self.module_path = os.fspath(module_path)
        if not Path(self.module_path).is_file():
            raise KeyBackendError(f"PKCS#11 module {self.module_path} does not exist")
        self.token_label = token_label
        self._pool = acquire_pool(self.module_path, token_label, pin, pool_size)
        self._ops = _Pkcs11Ops(self)
        self._write_lock = threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "module": self.module_path, "token": self.token_label}

    def _run(self, action: str, fn: Any) -> Any:
        if self._closed:
            raise KeyBackendError(f"the key backend for token {self.token_label!r} is closed")
        return self._pool.run(action, fn)

    # -- the interface ----------------------------------------------------------------
    def generate(self, label: str, key_type: KeyType) -> PrivateKeyHandle:
        validate_label(label)
        key_type = KeyType.parse(key_type)
        with self._write_lock:
            return self._run(
                f"generating {key_type.value} key {label!r}",
                lambda s: self._generate(s, label, key_type),
            )

    def _generate(self, s: PooledSession, label: str, key_type: KeyType) -> PrivateKeyHandle:
        if _find(s, label, ObjectClass.PRIVATE_KEY):
            raise KeyExists(f"a key labelled {label!r} exists already on the token")
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        }
        if key_type.is_rsa:
            pub, priv = s.session.generate_keypair(
                P11KeyType.RSA,
                key_type.rsa_bits,
                label=label,
                store=True,
                capabilities=_RSA_CAPABILITIES,
                private_template=private_template,
            )
        else:
            params = encode_named_curve_parameters(_CURVE_NAMES[key_type])
            pub, priv = s.session.generate_keypair(
                P11KeyType.EC,
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.DERIVE,
                public_template={Attribute.EC_PARAMS: params},
                private_template=private_template,
            )
        handle = self._handle(label, key_type, priv, pub)
        key_id = x509.SubjectKeyIdentifier.from_public_key(handle.public_key()).digest
        pub[Attribute.ID] = key_id
        priv[Attribute.ID] = key_id
        return handle

    def import_key(self, label: str, key: PlainKey) -> PrivateKeyHandle:
        validate_label(label)
        private, public = import_templates(label, key)  # reads the key before any I/O

        def op(s: PooledSession) -> PrivateKeyHandle:
            if _find(s, label, ObjectClass.PRIVATE_KEY):
                raise KeyExists(f"a key labelled {label!r} exists already on the token")
            priv = s.session.create_object(private)
            pub = s.session.create_object(public)
            return self._handle(label, key_type_of(key), priv, pub)

        with self._write_lock:
            return self._run(f"importing key {label!r}", op)

    def load(self, label: str) -> PrivateKeyHandle:
        validate_label(label)

        def op(s: PooledSession) -> PrivateKeyHandle:
            priv = _private_key(s, label)
            key_type = _key_type_of(priv)
            pubs = [] if key_type.is_rsa else _find(s, label, ObjectClass.PUBLIC_KEY)
            if not key_type.is_rsa and len(pubs) != 1:
                raise KeyBackendError(f"EC key {label!r} has no unique public key object")
            return self._handle(label, key_type, priv, pubs[0] if pubs else None)

        return self._run(f"loading key {label!r}", op)

    def _handle(self, label: str, key_type: KeyType, priv: Any, pub: Any) -> PrivateKeyHandle:
        if key_type.is_rsa:
            n = int.from_bytes(priv[Attribute.MODULUS], "big")
            e = int.from_bytes(priv[Attribute.PUBLIC_EXPONENT], "big")
            return RsaKeyHandle(label, key_type, self._ops, rsa.RSAPublicNumbers(e, n).public_key())
        point = bytes(pub[Attribute.EC_POINT])
        if len(point) != 1 + 2 * ((key_type.curve.key_size + 7) // 8):
            point = asn1_core.OctetString.load(point).native  # DER-wrapped, as PKCS#11 says
        public = ec.EllipticCurvePublicKey.from_encoded_point(key_type.curve, point)
        return EcKeyHandle(label, key_type, self._ops, public)

    def exists(self, label: str) -> bool:
        validate_label(label)
        return bool(
            self._run(
                f"looking up key {label!r}", lambda s: _find(s, label, ObjectClass.PRIVATE_KEY)
            )
        )

    def delete(self, label: str) -> None:
        validate_label(label)

        def op(s: PooledSession) -> None:
            private = _find(s, label, ObjectClass.PRIVATE_KEY)
            if not private:
                raise KeyNotFound(f"no private key labelled {label!r} on the token")
            for obj in private + _find(s, label, ObjectClass.PUBLIC_KEY):
                obj.destroy()

        with self._write_lock:
            try:
                self._run(f"deleting key {label!r}", op)
            finally:
                self._pool.invalidate_cache()

    def labels(self) -> list[str]:
        def op(s: PooledSession) -> list[str]:
            return sorted({o.label for o in _find(s, None, ObjectClass.PRIVATE_KEY)})

        return list(self._run("listing keys", op))

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        release_pool(self._pool)

    def __repr__(self) -> str:
        return f"<Pkcs11Backend token={self.token_label!r} module={self.module_path}>"


def _key_type_of(priv: Any) -> KeyType:
    kt = priv[Attribute.KEY_TYPE]
    if kt == P11KeyType.RSA:
        return KeyType.from_rsa_bits(int.from_bytes(priv[Attribute.MODULUS], "big").bit_length())
    if kt == P11KeyType.EC:
        params = asn1_keys.ECDomainParameters.load(bytes(priv[Attribute.EC_PARAMS]))
        if params.name != "named":
            raise KeyBackendError("EC keys with explicit curve parameters are not supported")
        return KeyType.from_curve_name(str(params.chosen.native))
    raise KeyBackendError(f"keys of PKCS#11 type {kt!r} are not supported")
