"""Pure builders of PKCS#11 attribute templates for importing an existing key onto a token."""

from __future__ import annotations

from typing import Any

from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11.util.ec import encode_named_curve_parameters

from ca.keys.base import key_type_of

PlainKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _big(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def import_templates(label: str, key: PlainKey) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """(private, public) object templates: a sensitive, non-extractable token key pair.

    CKA_ID is the RFC 5280 method-1 key identifier, as for keys generated on the token.
    """
    key_type = key_type_of(key)
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    common = {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id}
    private: dict[Any, Any] = {
        **common,
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
    }
    public: dict[Any, Any] = {
        **common,
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.VERIFY: True,
    }
    if isinstance(key, rsa.RSAPrivateKey):
        priv = key.private_numbers()
        pub = {
            Attribute.KEY_TYPE: P11KeyType.RSA,
            Attribute.MODULUS: _big(priv.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: _big(priv.public_numbers.e),
        }
        private.update(pub)
        private[Attribute.DECRYPT] = True
        private[Attribute.PRIVATE_EXPONENT] = _big(priv.d)
        private[Attribute.PRIME_1] = _big(priv.p)
        private[Attribute.PRIME_2] = _big(priv.q)
        private[Attribute.EXPONENT_1] = _big(priv.dmp1)
        private[Attribute.EXPONENT_2] = _big(priv.dmq1)
        private[Attribute.COEFFICIENT] = _big(priv.iqmp)
        public.update(pub)
        public[Attribute.ENCRYPT] = True
        return private, public
    curve = {
        Attribute.KEY_TYPE: P11KeyType.EC,
        Attribute.EC_PARAMS: encode_named_curve_parameters(key.curve.name),
    }
    size = (key_type.curve.key_size + 7) // 8
    private.update(curve)
    private[Attribute.VALUE] = key.private_numbers().private_value.to_bytes(size, "big")
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private[Attribute.DERIVE] = True  # ECDH: S/MIME decryption for EC recipients (RFC 5753)
    public.update(curve)
    public[Attribute.EC_POINT] = asn1_core.OctetString(point).dump()
    return private, public
