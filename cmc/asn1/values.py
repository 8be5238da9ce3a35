"""Values of CMC control attributes (RFC 5272 §6, RFC 6402 §2) as frozen dataclasses.

:mod:`cmc.asn1.controls` converts between these and the ASN.1 of :mod:`cmc.asn1.types`.  A
:class:`Control` is one TaggedAttribute (RFC 5272 §3.2.1.2.1); known controls carry the value
types below (int, bytes, str or a dataclass), unknown ones :class:`RawValue` items.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

from cmc.asn1 import types as asn1
from cmc.asn1.der import AlgorithmId
from cmc.errors import MalformedMessage


class CMCStatus(enum.IntEnum):
    """RFC 5272 §6.1 CMCStatus."""

    SUCCESS = 0
    FAILED = 2
    PENDING = 3
    NO_SUPPORT = 4
    CONFIRM_REQUIRED = 5
    POP_REQUIRED = 6
    PARTIAL = 7

    @property
    def rfc_name(self) -> str:
        return _camel(self.name)


class CMCFailInfo(enum.IntEnum):
    """RFC 5272 §6.1.4 CMCFailInfo."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4
    UNSUPPORTED_EXT = 5
    MUST_ARCHIVE_KEYS = 6
    BAD_IDENTITY = 7
    POP_REQUIRED = 8
    POP_FAILED = 9
    NO_KEY_REUSE = 10
    INTERNAL_CA_ERROR = 11
    TRY_LATER = 12
    AUTH_DATA_FAIL = 13

    @property
    def rfc_name(self) -> str:
        return _camel(self.name).replace("Ca", "CA")


def _camel(upper: str) -> str:
    head, *rest = upper.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


#: A BodyPartReference (RFC 6402): a body part ID, or a path into nested PKIData.
BodyPartRef = int | tuple[int, ...]


@dataclass(frozen=True)
class RawValue:
    """One attribute value kept as received (unknown or undecoded controls)."""

    der: bytes


@dataclass(frozen=True)
class PendInfo:
    """RFC 5272 §6.1.1 PendInfo: the token for queryPending and when to ask again."""

    pend_token: bytes
    pend_time: datetime


@dataclass(frozen=True)
class ExtendedFailInfo:
    """RFC 6402 extendedFailInfo, read from peers only (never emitted)."""

    oid: str
    value: bytes


@dataclass(frozen=True)
class StatusInfo:
    """statusInfoV2 (RFC 5272 §6.1.1), or statusInfo (§6.1.2) when ``version == 1``."""

    status: CMCStatus
    body_list: tuple[BodyPartRef, ...] = ()
    status_string: str | None = None
    fail_info: CMCFailInfo | int | None = None
    pend_info: PendInfo | None = None
    extended_fail_info: ExtendedFailInfo | None = None
    version: int = 2

    def __post_init__(self) -> None:
        others = [self.fail_info, self.pend_info, self.extended_fail_info]
        if sum(other is not None for other in others) > 1:
            raise ValueError("StatusInfo: at most one of fail_info, pend_info, extended")
        if self.version not in (1, 2):
            raise ValueError("StatusInfo.version must be 1 or 2")

    @property
    def fail_info_name(self) -> str | None:
        if isinstance(self.fail_info, CMCFailInfo):
            return self.fail_info.rfc_name
        return None if self.fail_info is None else str(self.fail_info)


@dataclass(frozen=True)
class RawExtension:
    """An X.509 extension as carried in addExtensions (RFC 5272 §6.5.2)."""

    oid: str
    critical: bool
    value: bytes


@dataclass(frozen=True)
class IdentityProofV2:
    """RFC 5272 §6.2.1."""

    proof_algorithm: AlgorithmId
    mac_algorithm: AlgorithmId
    witness: bytes


@dataclass(frozen=True)
class PopLinkWitnessV2:
    """RFC 5272 §6.3.1.1."""

    key_gen_algorithm: AlgorithmId
    mac_algorithm: AlgorithmId
    witness: bytes


@dataclass(frozen=True)
class AddExtensions:
    """RFC 5272 §6.5.2."""

    pki_data_reference: int
    cert_references: tuple[int, ...]
    extensions: tuple[RawExtension, ...]


@dataclass(frozen=True)
class LraPopWitness:
    """RFC 5272 §6.8."""

    pki_data_body_id: int
    body_ids: tuple[int, ...]


@dataclass(frozen=True)
class GetCert:
    """RFC 5272 §6.9; only directoryName issuers are supported."""

    issuer: x509.Name
    serial_number: int


@dataclass(frozen=True)
class GetCRL:
    """RFC 5272 §6.10; ``reasons`` are asn1crypto ReasonFlags names."""

    issuer: x509.Name
    crl_name_der: bytes | None = None
    time: datetime | None = None
    reasons: frozenset[str] | None = None


@dataclass(frozen=True)
class RevokeRequest:
    """RFC 5272 §6.11 RevokeRequest; ``reason`` is an RFC 5280 CRLReason name."""

    issuer: x509.Name
    serial_number: int
    reason: str = "unspecified"
    invalidity_date: datetime | None = None
    passphrase: bytes | None = None
    comment: str | None = None


@dataclass(frozen=True)
class DecryptedPOP:
    """RFC 5272 §6.7."""

    body_part_id: int
    algorithm: AlgorithmId
    pop: bytes


@dataclass(frozen=True)
class ModCertTemplate:
    """RFC 6402 modCertTemplate; the CRMF CertTemplate kept as DER."""

    pki_data_reference: tuple[int, ...]
    cert_references: tuple[int, ...]
    cert_template_der: bytes
    replace: bool = True


@dataclass(frozen=True)
class ChangeSubjectName:
    """RFC 6402 changeSubjectName."""

    subject: x509.Name | None = None
    subject_alt_der: bytes | None = None


@dataclass(frozen=True)
class CertId:
    """confirmCertAcceptance's CMCCertId (IssuerAndSerialNumber)."""

    issuer: x509.Name
    serial_number: int


@dataclass(frozen=True)
class Control:
    """One TaggedAttribute (RFC 5272 §3.2.1.2.1).

    ``body_part_id`` 0 in a builder's input means "number it for me".
    """

    oid: str
    values: tuple[Any, ...]
    body_part_id: int = 0
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return asn1.CONTROL_NAMES.get(self.oid, self.oid)

    @property
    def recognised(self) -> bool:
        """True when this library decodes the control's values."""
        return self.oid in asn1.CONTROL_VALUE_SPECS

    @property
    def value(self) -> Any:
        """The single value most controls carry."""
        if len(self.values) != 1:
            raise MalformedMessage(f"{self.name} carries {len(self.values)} values, not 1")
        return self.values[0]


def control(name: str, *values: Any, body_part_id: int = 0) -> Control:
    """A control by RFC name (``"transactionId"``) or dotted OID."""
    return Control(asn1.CONTROL_OIDS.get(name, name), tuple(values), body_part_id)
