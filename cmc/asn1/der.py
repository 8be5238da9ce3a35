"""DER helpers shared by the CMC modules: safe decoding, names, algorithm identifiers.

asn1crypto parses lazily and signals malformed input with whatever built-in exception the
failing step raises; :func:`decoding` turns all of those into :class:`MalformedMessage` so
the package's parsers raise only its own types.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from asn1crypto import core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.x509.name import _ASN1Type

from cmc.errors import MalformedMessage

#: What asn1crypto and cryptography raise on malformed input.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    AttributeError,
    RecursionError,
    NotImplementedError,
    x509.InvalidVersion,  # cryptography: certificate/CSR version out of range
    _CryptoUnsupported,  # cryptography: algorithm it cannot parse
)

T = TypeVar("T")


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Re-raise any decoding failure inside the block as :class:`MalformedMessage`."""
    try:
        yield
    except MalformedMessage:
        raise
    except DECODE_ERRORS as exc:
        raise MalformedMessage(f"malformed {what}: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def load(spec: type[T], data: bytes, what: str) -> T:
    """Decode ``data`` as ``spec`` (no trailing bytes) and parse it fully."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    with decoding(what):
        value = spec.load(bytes(data), strict=True)  # type: ignore[attr-defined]
        value.native  # noqa: B018 - forces the lazy parser over every field
    return value


def reencode(value: Any) -> bytes:
    """The bytes of an asn1crypto value as received (or as built)."""
    return bytes(value.dump())


def integer(value: Any) -> int:
    """An INTEGER's value, rejecting non-integers."""
    native = value.native
    if not isinstance(native, int) or isinstance(native, bool):
        raise MalformedMessage(f"expected an INTEGER, got {type(native).__name__}")
    return native


def usable_public_key(holder: Any) -> Any:
    """``holder.public_key()`` (certificate or CSR), or None for keys cryptography cannot use."""
    try:
        return holder.public_key()
    except (_CryptoUnsupported, ValueError):
        return None


def to_utc(value: datetime) -> datetime:
    """Timezone-aware UTC (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class AlgorithmId:
    """An AlgorithmIdentifier (RFC 5280 §4.1.1.2): OID and DER parameters, if any."""

    oid: str
    parameters: bytes | None = None

    @classmethod
    def from_asn1(cls, value: Any) -> AlgorithmId:
        params = value["parameters"]
        raw = None if isinstance(params, core.Void) else reencode(params)
        return cls(value["algorithm"].dotted, raw)

    def to_asn1(self) -> dict[str, Any]:
        params = core.Any.load(self.parameters) if self.parameters is not None else None
        return {"algorithm": self.oid, "parameters": params}


_STRING_DECODERS = {
    12: "utf-8",  # UTF8String
    18: "ascii",  # NumericString
    19: "ascii",  # PrintableString
    20: "latin-1",  # T61String (as most implementations read it)
    22: "ascii",  # IA5String
    26: "ascii",  # VisibleString
    28: "utf-32-be",  # UniversalString
    30: "utf-16-be",  # BMPString
}


def name_from_der(der: bytes) -> x509.Name:
    """A cryptography :class:`x509.Name` from DER, keeping each value's string type."""
    with decoding("distinguished name"):
        return name_from_asn1(asn1_x509.Name.load(der, strict=True))


def name_from_asn1(name: Any) -> x509.Name:
    """A cryptography :class:`x509.Name` from an asn1crypto Name (see :func:`name_from_der`)."""
    with decoding("distinguished name"):
        rdns = []
        for rdn in name.chosen:
            attributes = []
            for atv in rdn:
                oid = x509.ObjectIdentifier(atv["type"].dotted)
                _class, _method, tag, _header, contents, _trailer = parser.parse(
                    reencode(atv["value"]), strict=True
                )
                if tag == 3:  # BIT STRING, e.g. x500UniqueIdentifier
                    attributes.append(x509.NameAttribute(oid, contents[1:], _ASN1Type.BitString))
                    continue
                if tag not in _STRING_DECODERS:
                    raise MalformedMessage(f"name attribute {oid.dotted_string}: tag {tag}")
                text = contents.decode(_STRING_DECODERS[tag])
                attributes.append(x509.NameAttribute(oid, text, _ASN1Type(tag)))
            rdns.append(x509.RelativeDistinguishedName(attributes))
        return x509.Name(rdns)


def name_to_asn1(name: x509.Name) -> asn1_x509.Name:
    """asn1crypto Name with the exact encoding cryptography produces."""
    return asn1_x509.Name.load(name.public_bytes())


def directory_name(value: Any) -> x509.Name:
    """The Name inside a GeneralName, which CMC uses for issuers (RFC 5272 §6.9)."""
    if value.name != "directory_name":
        raise MalformedMessage(f"issuer GeneralName is {value.name}, not a directoryName")
    return name_from_asn1(value.chosen)
