"""The CMC client: the protocol's steps (enrol, poll, getCert, revoke) over one transport.

Like acme's ``client`` it only sequences :mod:`cmc.messages` (wire objects) and a transport
(:class:`cmc.transport.CmcTransport`, or anything with its ``send``); every answer goes through
:func:`cmc.messages.validate_response`, the one place that turns a reply into a result or a
typed error.

Who signs a Full PKI Request (RFC 5272 §3.2.1.3, §6.3).  The PKCS#10 request is always
self-signed by the end-entity key, and that signature is the proof of possession.  The
PKIData around it is signed by the *access credential* when the client has one (the
SwissSign/Totemo practice: the RA account is bound to that certificate, which also serves as
the TLS client certificate, and the RA authorises requests by that signature), otherwise by
the end-entity key itself (identified by subjectKeyIdentifier, RFC 5272 §3.2.1.3.1).

Errors, for the gateway (:func:`classify`): :class:`cmc.errors.CMCFailure` is permanent (the
CA said no: failInfo and text), :class:`EnrollmentPending` (a :class:`cmc.errors.CMCPending`)
carries a :class:`PendingEnrollment` to persist and :meth:`CmcClient.poll` later, and every
:class:`cmc.errors.TemporaryFailure` (``tryLater``, CA unreachable or overloaded) may clear
by itself: SMTP 4xx.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from cryptography import x509

from cmc.errors import CmcError, CMCPending, IssuerMismatch, ResponseMismatch, TemporaryFailure
from cmc.issuer import IssuerChains, check_issuer, names_match, revoke_unkept
from cmc.messages import (
    FullPKIRequest,
    FullPKIResponse,
    RevokeRequest,
    Signer,
    ValidatedResponse,
    build_full_request,
    build_get_cert_request,
    build_revoke_request,
    control,
    parse_request,
    parse_response,
    validate_response,
)
from cmc.pkcs12 import AccessCredentialError, load_pkcs12
from cmc.request_checks import requested_public_keys
from cmc.signing import SigningKey
from cmc.transport import CmcTransport, TransportSettings
from config.closing import Closing
from config.errors import CmcgateError

__all__ = [
    "CmcClient",
    "CmcExchange",
    "EnrollmentPending",
    "EnrollmentResult",
    "NoRequestSigner",
    "Outcome",
    "PendingEnrollment",
    "RevocationResult",
    "classify",
    "client_from_settings",
]

Outcome = Literal["temporary", "permanent", "pending"]
SignedBy = Literal["access", "end-entity"]


class CmcExchange(Protocol):
    """What the client needs from a transport: one request out, one response back (DER)."""

    def send(self, body_der: bytes, *, full: bool) -> bytes: ...


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
    """Everything :meth:`CmcClient.poll` needs after a ``pending`` answer (RFC 5272 §6.1.1).

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


class CmcClient(Closing):
    """The CMC protocol steps against one CA; see the module docstring for who signs.

    ``trust_anchors`` are the roots the CA's response signature and every returned
    certificate must chain to; ``issuer_dn`` (Totemo's ``issuerDN``), when set, must name a
    CA on an enrolled certificate's issuer chain (:mod:`cmc.issuer`: checked before sending
    where the chain is known from ``issuer_chains`` — shared by a gateway's clients — and on
    every answer; a certificate issued all the same is revoked at the CA, best effort, and
    refused); ``signer_for_request`` is the access/RA credential that signs requests;
    ``clock`` gives "now" for certificate validity checks.
    """

    def __init__(
        self,
        transport: CmcExchange,
        *,
        trust_anchors: Sequence[x509.Certificate],
        issuer_dn: x509.Name | None = None,
        signer_for_request: Signer | None = None,
        clock: Callable[[], datetime] | None = None,
        issuer_chains: IssuerChains | None = None,
    ) -> None:
        if not trust_anchors:
            raise ValueError("CmcClient needs at least one trust anchor to check responses")
        self._transport = transport
        self._anchors = tuple(trust_anchors)
        self._issuer_dn = issuer_dn
        self._signer = signer_for_request
        self._clock = clock or (lambda: datetime.now(UTC))
        self.issuer_chains = issuer_chains or IssuerChains(self._anchors)

    # --- enrolment ------------------------------------------------------------------------

    def enroll(
        self,
        csr: x509.CertificateSigningRequest,
        key: SigningKey,
        *,
        access_signer: Signer | None = None,
    ) -> EnrollmentResult:
        """Send a Full PKI Request for ``csr`` and return the validated certificate.

        Raises :class:`EnrollmentPending` (poll later), :class:`cmc.errors.CMCFailure`,
        transport errors, or the validation errors of :func:`validate_response`.
        """
        if csr.public_key() != key.public_key():
            raise ValueError("the CSR does not carry the public key of the given private key")
        self.issuer_chains.check_before_sending(self._issuer_dn)
        signer = access_signer or self._signer
        signed_by: SignedBy = "end-entity" if signer is None else "access"
        request = build_full_request(signer=signer or Signer(key), requests=[csr])
        return self._exchange_enrollment(request, request, signed_by, csr.public_key())

    def poll(
        self,
        pending: PendingEnrollment,
        *,
        key: SigningKey | None = None,
        access_signer: Signer | None = None,
    ) -> EnrollmentResult:
        """Ask again about a pending enrolment, in the same transaction (RFC 5272 §6.13).

        With a pend token: a queryPending (RFC 5272 §6.10) signed like the original request
        (``key`` is needed when that was the end-entity key).  Without one: the original
        request is resent unchanged.  Pending again raises a fresh :class:`EnrollmentPending`.
        """
        original = pending.request
        keys = requested_public_keys(original.pki_data)
        if len(keys) != 1:
            raise ValueError("the pending request does not name exactly one key to certify")
        if not pending.pend_token:
            return self._exchange_enrollment(original, original, pending.signed_by, keys[0])
        if pending.signed_by == "access":
            signer = access_signer or self._signer
            if signer is None:
                raise NoRequestSigner(
                    "the pending request was signed by the access credential, which is not "
                    "configured"
                )
        else:
            if key is None:
                raise NoRequestSigner("polling a self-signed request needs the end-entity key")
            if key.public_key() != keys[0]:
                raise ValueError("the given key is not the one the pending request certifies")
            signer = Signer(key)
        controls = [control("queryPending", pending.pend_token)]
        if pending.server_nonce is not None:
            controls.append(control("recipientNonce", pending.server_nonce))
        query = build_full_request(
            signer=signer, controls=controls, transaction_id=pending.transaction_id
        )
        return self._exchange_enrollment(query, original, pending.signed_by, keys[0])

    def _exchange_enrollment(
        self,
        request: FullPKIRequest,
        original: FullPKIRequest,
        signed_by: SignedBy,
        public_key: Any,
    ) -> EnrollmentResult:
        answer = self._transport.send(request.der, full=True)
        try:
            validated = self._validate(answer, request, None, public_key)
        except CMCPending as exc:
            response = parse_response(answer)  # verified by validate_response already
            raise EnrollmentPending(
                PendingEnrollment(
                    transaction_id=_transaction_id(request),
                    pend_token=exc.pend_token,
                    pend_time=exc.pend_time,
                    request_der=original.der,
                    signed_by=signed_by,
                    server_nonce=(
                        response.sender_nonce if isinstance(response, FullPKIResponse) else None
                    ),
                    status_string=exc.status_string,
                )
            ) from None
        assert validated.issued is not None  # an enrolment always checks for our key
        self.issuer_chains.learn(validated.issued_chain)
        try:
            check_issuer(validated.issued, validated.issued_chain, self._issuer_dn, self._anchors)
        except IssuerMismatch as exc:
            revoke_unkept(self.revoke, validated.issued, exc)
            raise
        return EnrollmentResult(
            certificate=validated.issued,
            chain=validated.issued_chain,
            transaction_id=_transaction_id(request),
            signer_chain=validated.signer_chain,
            status_string=_status_string(validated),
        )

    # --- other requests -------------------------------------------------------------------

    def get_cert(
        self, issuer: x509.Name, serial_number: int, *, signer: Signer | None = None
    ) -> x509.Certificate:
        """RFC 5272 §6.9 getCert: the certificate ``issuer`` issued as ``serial_number``."""
        return self.fetch(issuer, serial_number, signer=signer)[0]

    def fetch(
        self, issuer: x509.Name, serial_number: int, *, signer: Signer | None = None
    ) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
        """:meth:`get_cert` with the chain (issuer first) the answer was validated with."""
        request = build_get_cert_request(
            issuer, serial_number, signer=self._required_signer(signer, "getCert")
        )
        answer = self._transport.send(request.der, full=True)
        validated = self._validate(answer, request, None)
        found = validated.issued
        if found is None or found.serial_number != serial_number:
            raise ResponseMismatch(
                f"getCert for serial {serial_number:x} was answered with "
                + ("no certificate" if found is None else f"serial {found.serial_number:x}")
            )
        if not names_match(found.issuer, issuer):
            raise IssuerMismatch(f"getCert answered with a certificate of {found.issuer}")
        return found, validated.issued_chain

    def revoke(
        self,
        issuer: x509.Name,
        serial_number: int,
        reason: str = "unspecified",
        *,
        comment: str | None = None,
        passphrase: bytes | None = None,
        invalidity_date: datetime | None = None,
        signer: Signer | None = None,
    ) -> RevocationResult:
        """RFC 5272 §6.11 revokeRequest; ``reason`` is an RFC 5280 CRLReason name."""
        revoke = RevokeRequest(
            issuer,
            serial_number,
            reason,
            invalidity_date=invalidity_date,
            passphrase=passphrase,
            comment=comment,
        )
        request = build_revoke_request(revoke, signer=self._required_signer(signer, "revoke"))
        answer = self._transport.send(request.der, full=True)
        validated = self._validate(answer, request, None)
        return RevocationResult(
            issuer, serial_number, _transaction_id(request), _status_string(validated)
        )

    # --- plumbing -------------------------------------------------------------------------

    def _required_signer(self, signer: Signer | None, what: str) -> Signer:
        chosen = signer or self._signer
        if chosen is None:
            raise NoRequestSigner(f"{what} needs a request signer (the access credential)")
        return chosen

    def _validate(
        self, answer: bytes, request: FullPKIRequest, issuer_dn: x509.Name | None, key: Any = None
    ) -> ValidatedResponse:
        return validate_response(
            answer,
            request=request,
            trust_anchors=self._anchors,
            issuer_dn=issuer_dn,
            our_public_key=key,
            at=self._clock(),
        )

    def close(self) -> None:
        closer = getattr(self._transport, "close", None)
        if callable(closer):
            closer()


def _transaction_id(request: FullPKIRequest) -> int:
    assert request.transaction_id is not None  # build_full_request always sets one
    return request.transaction_id


def _status_string(validated: ValidatedResponse) -> str | None:
    texts = [s.status_string for s in validated.statuses if s.status_string]
    return "; ".join(texts) if texts else None


def access_signer(p12: bytes, password: bytes | None) -> Signer:
    """The access credential (PKCS#12) as a request signer, its chain sent along."""
    credential = load_pkcs12(p12, password)
    key = credential.private_key
    if not isinstance(key, SigningKey):
        raise AccessCredentialError(
            f"the access PKCS#12 key type {type(key).__name__} cannot sign CMC requests"
        )
    return Signer(key, credential.certificate, credential.chain)


def client_from_settings(
    settings: TransportSettings,
    *,
    trust_anchors: Sequence[x509.Certificate] | None = None,
    issuer_dn: x509.Name | None = None,
    sign_with_access: bool = True,
    clock: Callable[[], datetime] | None = None,
    issuer_chains: IssuerChains | None = None,
) -> CmcClient:
    """A client over a fresh :class:`CmcTransport`; the adapter for the config loader.

    ``trust_anchors`` default to the transport's (Totemo imports one set of SwissSign roots
    for both TLS and CMC).  With ``sign_with_access`` and an access PKCS#12 in the settings,
    requests are signed by the access credential; otherwise by the end-entity key.
    """
    signer = None
    if sign_with_access and settings.access_p12 is not None:
        signer = access_signer(settings.access_p12, settings.access_p12_password)
    return CmcClient(
        CmcTransport(settings),
        trust_anchors=tuple(trust_anchors or settings.trust_anchors),
        issuer_dn=issuer_dn,
        signer_for_request=signer,
        clock=clock,
        issuer_chains=issuer_chains,
    )
