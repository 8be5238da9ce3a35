"""The key types cmcgate generates, by name (shared by the backends and their key handles)."""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives.asymmetric import ec

from ca.keys.errors import KeyBackendError


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
