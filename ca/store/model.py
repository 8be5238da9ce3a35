"""Values of the CA's order store: statuses, reasons, the order state machine, views, errors.

Pure module (no I/O). The order statuses and job statuses are the ones of a SwissSign-style RA
(certificate order ``ord-<uuid4>`` moving NEW -> KEY_VALIDATION -> ... -> ISSUED), plus
``PENDING_AUTHORIZATION`` for products with ``approval: manual``: the RA manual calls that step
an *authorization* ("may trigger an authorization if a rule is defined"), so the status is named
after it; ``OrderStatus.PENDING_APPROVAL`` is an alias of the same member.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from ca.profiles.subject import SubjectChange
from config.errors import CmcgateError
from config.values import is_number


class StoreError(CmcgateError):
    """The order store refused an operation or could not reach its database."""


class StoreConflict(StoreError):
    """A write collided with stored data (a unique value in use, a row that does not exist)."""


class UnknownOrder(StoreError):
    """No order with this id."""


class UnknownCertificate(StoreError):
    """No certificate with this serial number."""


class UnknownJob(StoreError):
    """No publication job with this id."""


class IllegalTransition(StoreError):
    """The order state machine does not allow this status change."""

    def __init__(self, order_id: str, current: OrderStatus, wanted: OrderStatus) -> None:
        super().__init__(
            f"order {order_id}: illegal status change {current.value} -> {wanted.value}"
        )
        self.order_id = order_id
        self.current = current
        self.wanted = wanted


class RevocationRefused(StoreError):
    """A revocation the S/MIME Baseline Requirements forbid, or of a revoked certificate."""


class DuplicateCertificate(StoreError):
    """A certificate with this serial number is stored already."""


class OrderStatus(enum.StrEnum):
    """Certificate order statuses (the RA manual's, plus the authorization wait)."""

    NEW = "NEW"
    PENDING_CSR_RENEWAL = "PENDING_CSR_RENEWAL"
    PENDING_VALIDATION = "PENDING_VALIDATION"
    PENDING_AUTHORIZATION = "PENDING_AUTHORIZATION"
    KEY_VALIDATION = "KEY_VALIDATION"
    GENERATE_TBS = "GENERATE_TBS"
    PRE_VALIDATION = "PRE_VALIDATION"
    PRE_ISSUE = "PRE_ISSUE"
    ISSUE = "ISSUE"
    POST_VALIDATION = "POST_VALIDATION"
    FINALIZE_ISSUANCE = "FINALIZE_ISSUANCE"
    ISSUED = "ISSUED"
    REVOKED = "REVOKED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    # alias: the same member under the name CMC's "waiting for approval" suggests
    PENDING_APPROVAL = "PENDING_AUTHORIZATION"

    @property
    def has_certificate(self) -> bool:
        """True from ISSUE on (the manual's "Has certificate" column)."""
        return self in _WITH_CERTIFICATE

    @property
    def in_progress(self) -> bool:
        """The CA is working on the order (NEW ... FINALIZE_ISSUANCE): one that stays here
        was interrupted (:mod:`ca.recovery`). ISSUED, the final statuses, UNKNOWN (lost, left
        to the clean-up) and the three waits (PENDING_AUTHORIZATION, PENDING_CSR_RENEWAL,
        PENDING_VALIDATION) are settled."""
        return self in _IN_PROGRESS

    @property
    def is_final(self) -> bool:
        """REVOKED and FAILED end an order; nothing follows them."""
        return self in (OrderStatus.REVOKED, OrderStatus.FAILED)


_WITH_CERTIFICATE = frozenset(
    {
        OrderStatus.ISSUE,
        OrderStatus.POST_VALIDATION,
        OrderStatus.FINALIZE_ISSUANCE,
        OrderStatus.ISSUED,
        OrderStatus.REVOKED,
    }
)

_IN_PROGRESS = frozenset(
    {
        OrderStatus.NEW,
        OrderStatus.KEY_VALIDATION,
        OrderStatus.GENERATE_TBS,
        OrderStatus.PRE_VALIDATION,
        OrderStatus.PRE_ISSUE,
        OrderStatus.ISSUE,
        OrderStatus.POST_VALIDATION,
        OrderStatus.FINALIZE_ISSUANCE,
    }
)

_S = OrderStatus
#: Allowed forward moves. FAILED is added for every status that is neither ISSUED nor final
#: (an issued order is revoked, not failed: the manual revokes a certificate whose processing
#: fails after ISSUE, which the caller does with Store.revoke before Store.fail). UNKNOWN
#: ("undefined state, the order is lost") is reachable from every unsettled status; the
#: clean-up moves it on to FAILED, or REVOKED when it has a valid certificate.
#: PENDING_VALIDATION waits for the mailbox holder's answer to an email challenge.
_FORWARD: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.NEW: frozenset(
        {_S.PENDING_CSR_RENEWAL, _S.PENDING_VALIDATION, _S.PENDING_AUTHORIZATION, _S.KEY_VALIDATION}
    ),  # fmt: skip
    _S.PENDING_CSR_RENEWAL: frozenset(
        {_S.PENDING_VALIDATION, _S.PENDING_AUTHORIZATION, _S.KEY_VALIDATION}
    ),
    _S.PENDING_VALIDATION: frozenset({_S.PENDING_AUTHORIZATION, _S.KEY_VALIDATION}),
    _S.PENDING_AUTHORIZATION: frozenset({_S.KEY_VALIDATION}),
    _S.KEY_VALIDATION: frozenset({_S.GENERATE_TBS}),
    _S.GENERATE_TBS: frozenset({_S.PRE_VALIDATION}),
    _S.PRE_VALIDATION: frozenset({_S.PRE_ISSUE}),
    _S.PRE_ISSUE: frozenset({_S.ISSUE}),
    _S.ISSUE: frozenset({_S.POST_VALIDATION}),
    _S.POST_VALIDATION: frozenset({_S.FINALIZE_ISSUANCE}),
    _S.FINALIZE_ISSUANCE: frozenset({_S.ISSUED}),
    _S.ISSUED: frozenset({_S.REVOKED}),
    _S.REVOKED: frozenset(),
    _S.FAILED: frozenset(),
    _S.UNKNOWN: frozenset({_S.REVOKED}),
}

ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    status: (nxt | {_S.FAILED}) if not (status.is_final or status is _S.ISSUED) else nxt
    for status, nxt in _FORWARD.items()
}
for _status in _FORWARD:
    if not (_status.is_final or _status in (_S.ISSUED, _S.UNKNOWN)):
        ALLOWED_TRANSITIONS[_status] = ALLOWED_TRANSITIONS[_status] | {_S.UNKNOWN}

#: The happy path of an order that needs neither a renewal CSR nor an authorization.
ISSUANCE_PATH: tuple[OrderStatus, ...] = (
    _S.NEW,
    _S.KEY_VALIDATION,
    _S.GENERATE_TBS,
    _S.PRE_VALIDATION,
    _S.PRE_ISSUE,
    _S.ISSUE,
    _S.POST_VALIDATION,
    _S.FINALIZE_ISSUANCE,
    _S.ISSUED,
)


def check_transition(order_id: str, current: OrderStatus, wanted: OrderStatus) -> None:
    """Raise IllegalTransition unless ``current -> wanted`` is allowed."""
    if wanted not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(order_id, current, wanted)


class CertificateStatus(enum.StrEnum):
    VALID = "VALID"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class JobStatus(enum.StrEnum):
    """Publication job statuses (the manual's job statuses that a single queue needs)."""

    WAITING = "WAITING"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    RETRY = "RETRY"


class JobKind(enum.StrEnum):
    PUBLISH = "PUBLISH"
    UNPUBLISH = "UNPUBLISH"


class RevocationReason(enum.IntEnum):
    """RFC 5280 CRLReason codes (value 7 is unused in RFC 5280)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        """``keyCompromise``, ``cessationOfOperation``... as RFC 5280 and the RA spell them."""
        return _REASON_NAMES[self]

    @property
    def crl_flag(self) -> x509.ReasonFlags | None:
        """The CRL entry reasonCode to write; None for unspecified (the extension is omitted)."""
        if self is RevocationReason.UNSPECIFIED:
            return None
        return x509.ReasonFlags(self.rfc_name)

    @classmethod
    def parse(cls, value: RevocationReason | int | str) -> RevocationReason:
        """A member from a code (``1``, ``"1"``) or a name (``keyCompromise``)."""
        if isinstance(value, RevocationReason):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str):
            norm = value.strip().replace("_", "").replace("-", "").lower()
            if is_number(norm):
                return cls.parse(int(norm))
            for member in cls:
                if norm in (member.rfc_name.lower(), member.name.replace("_", "").lower()):
                    return member
        names = ", ".join(f"{m.rfc_name}({m.value})" for m in cls)
        raise RevocationRefused(f"unknown revocation reason {value!r}: use one of {names}")


_REASON_NAMES = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "keyCompromise",
    RevocationReason.CA_COMPROMISE: "cACompromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    RevocationReason.CERTIFICATE_HOLD: "certificateHold",
    RevocationReason.REMOVE_FROM_CRL: "removeFromCRL",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    RevocationReason.AA_COMPROMISE: "aACompromise",
}

#: Why the S/MIME Baseline Requirements (7.2.2) forbid a reason for a subscriber certificate.
_REFUSED_REASONS = {
    RevocationReason.CERTIFICATE_HOLD: "certificateHold is not allowed for S/MIME certificates "
    "(S/MIME BR 4.9.13: suspension is not allowed)",
    RevocationReason.REMOVE_FROM_CRL: "removeFromCRL only undoes a certificateHold, which "
    "S/MIME certificates never have",
    RevocationReason.CA_COMPROMISE: "cACompromise is for CA certificates, not subscriber "
    "certificates",
    RevocationReason.AA_COMPROMISE: "aACompromise is for attribute authorities, not "
    "subscriber certificates",
}


def check_subscriber_reason(reason: RevocationReason) -> None:
    """Raise RevocationRefused for reasons an S/MIME subscriber certificate cannot carry."""
    why = _REFUSED_REASONS.get(reason)
    if why is not None:
        raise RevocationRefused(why)


def normalise_serial(serial: int | str) -> str:
    """Lower-case hex without separators or leading zeros: ``0x00:AB`` -> ``ab``."""
    if isinstance(serial, bool):
        raise UnknownCertificate(f"not a serial number: {serial!r}")
    if isinstance(serial, int):
        if serial < 0:
            raise UnknownCertificate(f"not a serial number: {serial!r}")
        return format(serial, "x")
    text = str(serial).strip().lower().replace(":", "").replace(" ", "")
    if text.startswith("0x"):
        text = text[2:]
    try:
        return format(int(text, 16), "x")
    except ValueError:
        raise UnknownCertificate(f"not a hexadecimal serial number: {serial!r}") from None


def normalise_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class StatusChange:
    order_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    at: datetime
    note: str | None


@dataclass(frozen=True)
class OrderView:
    id: str
    account: str
    product: str
    subject: str
    emails: tuple[str, ...]
    validity: str
    csr_der: bytes | None
    status: OrderStatus
    failure_reason: str | None
    subject_changes: tuple[SubjectChange, ...]
    transaction_id: int | None
    sender_nonce: bytes | None
    pend_token: bytes | None
    requested_by: str
    created_at: datetime
    updated_at: datetime
    certificate_serial: str | None


@dataclass(frozen=True)
class CertificateView:
    serial: str
    order_id: str | None
    subject: str
    issuer: str
    emails: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    status: CertificateStatus
    der: bytes
    recorded_at: datetime

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)


@dataclass(frozen=True)
class RevocationView:
    serial: str
    reason: RevocationReason
    revoked_at: datetime
    invalidity_date: datetime | None
    comment: str | None
    revoked_by: str

    @property
    def reason_name(self) -> str:
        return self.reason.rfc_name


@dataclass(frozen=True)
class RevokedEntry:
    """One CRL entry: what a CRL builder needs and nothing else."""

    serial_number: int
    revoked_at: datetime
    reason: RevocationReason
    invalidity_date: datetime | None


@dataclass(frozen=True)
class CommentView:
    id: int
    order_id: str
    author: str
    at: datetime
    text: str


@dataclass(frozen=True)
class JobView:
    id: int
    kind: JobKind
    serial: str
    email: str
    order_id: str | None
    status: JobStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
