"""The CMC client: the protocol's steps (enrol, poll, getCert, revoke) over one transport.

Like acme's ``client`` it only sequences :mod:`cmc.messages.api` (wire objects) and a transport
(:class:`cmc.transport.http.CmcTransport`, or anything with its ``send``); every answer goes through
:func:`cmc.messages.api.validate_response`, the one place that turns a reply into a result or a
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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509

from cmc.errors import CMCPending, IssuerMismatch, ResponseMismatch
from cmc.messages.api import (
    FullPKIRequest,
    FullPKIResponse,
    RevokeRequest,
    Signer,
    ValidatedResponse,
    build_full_request,
    build_get_cert_request,
    build_revoke_request,
    control,
    parse_response,
    validate_response,
)
from cmc.messages.issuer import IssuerChains, check_issuer, names_match, revoke_unkept
from cmc.messages.request_checks import requested_public_keys
from cmc.messages.signing import SigningKey
from cmc.results import (
    EnrollmentPending,
    EnrollmentResult,
    NoRequestSigner,
    Outcome,
    PendingEnrollment,
    RevocationResult,
    SignedBy,
    classify,
)
from cmc.transport.http import CmcTransport, TransportSettings
from cmc.transport.pkcs12 import AccessCredentialError, load_pkcs12
from config.closing import Closing

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


class CmcExchange(Protocol):
    """What the client needs from a transport: one request out, one response back (DER)."""

    def send(self, body_der: bytes, *, full: bool) -> bytes: ...


class CmcClient(Closing):
    """The CMC protocol steps against one CA; see the module docstring for who signs.

    ``trust_anchors`` are the roots the CA's response signature and every returned
    certificate must chain to; ``issuer_dn`` (Totemo's ``issuerDN``), when set, must name a
    CA on an enrolled certificate's issuer chain (:mod:`cmc.messages.issuer`: checked before sending
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
        return self.poll(self.prepare_enrollment(csr, key, access_signer=access_signer))

    def prepare_enrollment(
        self,
        csr: x509.CertificateSigningRequest,
        key: SigningKey,
        *,
        access_signer: Signer | None = None,
    ) -> PendingEnrollment:
        """The Full PKI Request of :meth:`enroll`, signed but not sent: a caller that must not
        lose the transaction persists it (:meth:`PendingEnrollment.to_dict`), then sends it
        with :meth:`poll` (unchanged, as often as needed: the CA answers a resend of a request
        it issued with the same certificate)."""
        if csr.public_key() != key.public_key():
            raise ValueError("the CSR does not carry the public key of the given private key")
        self.issuer_chains.check_before_sending(self._issuer_dn)
        signer = access_signer or self._signer
        signed_by: SignedBy = "end-entity" if signer is None else "access"
        request = build_full_request(signer=signer or Signer(key), requests=[csr])
        return PendingEnrollment(
            transaction_id=_transaction_id(request),
            pend_token=b"",
            pend_time=self._clock(),
            request_der=request.der,
            signed_by=signed_by,
        )

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
