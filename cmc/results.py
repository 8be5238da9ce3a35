"""What the CMC client's steps give back: results, the pending state a caller keeps, outcomes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography import x509

from cmc.errors import CmcError, CMCPending, TemporaryFailure
from cmc.messages.api import (
    FullPKIRequest,
    parse_request,
)
from config.errors import CmcgateError

#: who signs a Full PKI Request: the RA access certificate or the end entity itself
SignedBy = Literal["access", "end-entity"]

Outcome = Literal["temporary", "permanent", "pending"]


class NoRequestSigner(CmcError):
    """A request that needs a signer (getCert, revoke, an access-signed poll) has none."""


@dataclass(frozen=True)
class EnrollmentResult:
    """An issued certificate that passed every check of :func:`validate_response`.

    ``chain`` runs from the issuer up to the trust anchor; ``signer_chain`` is the response
    signer's (the CA or its CMC signing certificate).
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    transaction_id: int
    signer_chain: tuple[x509.Certificate, ...] = ()
    status_string: str | None = None


@dataclass(frozen=True)
class RevocationResult:
    """The CA confirmed the revokeRequest (RFC 5272 §6.11)."""

    issuer: x509.Name
    serial_number: int
    transaction_id: int
    status_string: str | None = None


@dataclass(frozen=True)
class PendingEnrollment:
    """Everything :meth:`CmcClient.poll` needs after a ``pending`` answer (RFC 5272 §6.1.1),
    or, with an empty ``pend_token``, to send a request :meth:`CmcClient.prepare_enrollment`
    built (again, when its answer was lost).

    ``request_der`` is the original Full PKI Request (its CSR names the key to be certified,
    and it is resent unchanged when the CA gave no token); ``server_nonce`` is the CA's
    senderNonce, echoed as recipientNonce in the queryPending (RFC 5272 §6.6).  Holds no
    secret: :meth:`to_dict` gives a JSON-ready form for the gateway's store.
    """

    transaction_id: int
    pend_token: bytes
    pend_time: datetime
    request_der: bytes
    signed_by: SignedBy
    server_nonce: bytes | None = None
    status_string: str | None = None

    @property
    def request(self) -> FullPKIRequest:
        parsed = parse_request(self.request_der)
        if not isinstance(parsed, FullPKIRequest):
            raise ValueError("PendingEnrollment.request_der is not a Full PKI Request")
        return parsed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as base64, the time as ISO 8601."""
        data = {name: getattr(self, name) for name in _PENDING_BYTES}
        encoded = {k: None if v is None else base64.b64encode(v).decode() for k, v in data.items()}
        return {
            **encoded,
            "transaction_id": self.transaction_id,
            "pend_time": self.pend_time.isoformat(),
            "signed_by": self.signed_by,
            "status_string": self.status_string,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingEnrollment:
        """The inverse of :meth:`to_dict` (ValueError/KeyError on a damaged record)."""
        if data["signed_by"] not in ("access", "end-entity"):
            raise ValueError(f"unknown signed_by {data['signed_by']!r}")
        raw = {k: data.get(k) for k in _PENDING_BYTES}
        decoded = {
            k: None if v is None else base64.b64decode(v, validate=True) for k, v in raw.items()
        }
        return cls(
            transaction_id=int(data["transaction_id"]),
            pend_token=decoded["pend_token"] or b"",
            pend_time=datetime.fromisoformat(data["pend_time"]),
            request_der=decoded["request_der"] or b"",
            signed_by=data["signed_by"],
            server_nonce=decoded["server_nonce"],
            status_string=data.get("status_string"),
        )


_PENDING_BYTES = ("pend_token", "request_der", "server_nonce")


class EnrollmentPending(CMCPending):
    """``pending`` for an enrolment: :attr:`pending` is what to persist and poll with."""

    def __init__(self, pending: PendingEnrollment) -> None:
        self.pending = pending
        super().__init__(pending.pend_token, pending.pend_time, pending.status_string)


def classify(exc: BaseException) -> Outcome:
    """How the gateway treats a failure: ``pending`` (queue and poll), ``temporary`` (4xx), or
    ``permanent`` (5xx / operator action).

    Only errors cmcgate raises on purpose and knows to be permanent are ``permanent``;
    anything unexpected (a bug, an OS error) is ``temporary`` so that mail is retried, never
    bounced for a reason the sender cannot fix.
    """
    if isinstance(exc, CMCPending):
        return "pending"
    if isinstance(exc, TemporaryFailure):
        return "temporary"
    return "permanent" if isinstance(exc, CmcgateError) else "temporary"
