"""The client's one place that turns a CMC response into a result or a typed error.

:func:`validate_response` checks, in this order: the CMS signature (RFC 5652 §5.6), that the
signer chains to our trust anchors, transactionId echoed (RFC 5272 §6.6), recipientNonce ==
our senderNonce (§6.7), then the status of our body parts (§6.1): ``failed``/``noSupport``
raise :class:`CMCFailure` (:class:`CMCTryLater` for tryLater), ``pending`` raises
:class:`CMCPending`; on success the issued certificate must carry our public key, chain to
the anchors and, when configured, come from ``issuer_dn`` — a CA anywhere on its issuer
chain, root included (:func:`cmc.messages.issuer.check_issuer`).

A Simple PKI Response (certs-only, RFC 5272 §4.1) has no signature, nonce or transaction:
it is accepted only for a Simple PKI Request, and then only the certificate checks apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from cmc.asn1.der import usable_public_key
from cmc.asn1.values import CMCFailInfo, CMCStatus, StatusInfo
from cmc.errors import (
    CMCFailure,
    CMCPending,
    CMCTryLater,
    KeyMismatch,
    MalformedMessage,
    MissingCertificate,
    NonceMismatch,
    ResponseMismatch,
    SignerNotFound,
    TransactionIdMismatch,
    UntrustedSigner,
)
from cmc.messages.cms import verify_chain, verify_signed_data
from cmc.messages.issuer import check_issuer
from cmc.messages.request_checks import requested_public_keys
from cmc.messages.requests import FullPKIRequest, SimplePKIRequest
from cmc.messages.responses import FullPKIResponse, SimplePKIResponse, parse_response


@dataclass(frozen=True)
class ValidatedResponse:
    """A response that passed every check; ``issued`` is None for revoke-type requests."""

    response: FullPKIResponse | SimplePKIResponse
    issued: x509.Certificate | None
    issued_chain: tuple[x509.Certificate, ...]
    signer_chain: tuple[x509.Certificate, ...]
    statuses: tuple[StatusInfo, ...]


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _spki_of(cert: x509.Certificate) -> bytes | None:
    key = usable_public_key(cert)
    return None if key is None else _spki(key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def validate_response(
    response_bytes: bytes,
    *,
    request: FullPKIRequest | SimplePKIRequest,
    trust_anchors: Sequence[x509.Certificate],
    issuer_dn: x509.Name | None = None,
    our_public_key: PublicKeyTypes | None = None,
    at: datetime | None = None,
) -> ValidatedResponse:
    """Check a response against the request we sent; see the module docstring.

    ``our_public_key`` defaults to the key of the request's single certification request;
    with no key at all (getCert, revoke) an end-entity certificate is optional, and checked
    like an issued one when present.
    """
    when = at or datetime.now(UTC)
    response = parse_response(response_bytes)
    if our_public_key is None:
        keys = (
            [key for key in [usable_public_key(request.csr)] if key is not None]
            if isinstance(request, SimplePKIRequest)
            else requested_public_keys(request.pki_data)
        )
        our_public_key = keys[0] if len(keys) == 1 else None
    if isinstance(response, SimplePKIResponse):
        if isinstance(request, FullPKIRequest):
            raise ResponseMismatch(
                "a Full PKI Request was answered with an unauthenticated Simple PKI Response"
            )
        found, found_chain = _issued(response.certificates, our_public_key, trust_anchors, when)
        check_issuer(found, found_chain, issuer_dn, trust_anchors)
        return ValidatedResponse(response, found, found_chain, (), ())

    verified = verify_signed_data(response_bytes)
    if verified.signer_certificate is None:
        raise SignerNotFound("the response signer's certificate is not in the response")
    signer_chain = verify_chain(
        verified.signer_certificate, verified.certificates, trust_anchors, at=when
    )
    if isinstance(request, FullPKIRequest):
        if response.transaction_id != request.transaction_id:
            raise TransactionIdMismatch(
                f"response transactionId {response.transaction_id} is not ours "
                f"({request.transaction_id})"
            )
        if response.recipient_nonce is None or response.recipient_nonce != request.sender_nonce:
            raise NonceMismatch("response recipientNonce does not echo our senderNonce")
    statuses = _our_statuses(response, request)
    _raise_for_status(statuses)
    issued: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    returned = [c for c in response.certificates if c not in signer_chain and not _is_ca(c)]
    if our_public_key is not None or returned:
        # getCert/revoke carry no key of ours: then any end-entity certificate is the answer.
        issued, chain = _issued(
            response.certificates, our_public_key, trust_anchors, when, signer_chain
        )
        check_issuer(issued, chain, issuer_dn, trust_anchors)
    return ValidatedResponse(response, issued, chain, tuple(signer_chain), statuses)


def _our_statuses(
    response: FullPKIResponse, request: FullPKIRequest | SimplePKIRequest
) -> tuple[StatusInfo, ...]:
    """Statuses naming one of our body parts, or all of them when none names any."""
    statuses = response.statuses
    if isinstance(request, SimplePKIRequest):
        return statuses
    ours = {r.body_part_id for r in request.pki_data.requests}
    ours |= {c.body_part_id for c in request.pki_data.controls}
    mine = tuple(s for s in statuses if any(ref in ours for ref in s.body_list))
    return mine or statuses


def _raise_for_status(statuses: Sequence[StatusInfo]) -> None:
    for status in statuses:
        if status.status in (CMCStatus.FAILED, CMCStatus.NO_SUPPORT):
            extended = status.extended_fail_info
            error = CMCTryLater if status.fail_info == CMCFailInfo.TRY_LATER else CMCFailure
            raise error(
                status.fail_info_name,
                status.status_string,
                status=status.status.rfc_name,
                body_list=status.body_list,
                extended_fail_oid=extended.oid if extended else None,
            )
    for status in statuses:
        if status.status == CMCStatus.PENDING:
            if status.pend_info is None:
                raise MalformedMessage("status pending without pendInfo (RFC 5272 §6.1.1)")
            raise CMCPending(
                status.pend_info.pend_token, status.pend_info.pend_time, status.status_string
            )
    for status in statuses:
        if status.status not in (CMCStatus.SUCCESS, CMCStatus.PARTIAL):
            raise CMCFailure(None, status.status_string, status=status.status.rfc_name)


def _issued(
    certificates: Sequence[x509.Certificate],
    our_public_key: PublicKeyTypes | None,
    anchors: Sequence[x509.Certificate],
    when: datetime,
    signer_chain: Sequence[x509.Certificate] = (),
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    # the response signer's own certificate is never the answer (getCert carries no key)
    end_entities = [c for c in certificates if not _is_ca(c) and c not in signer_chain]
    if our_public_key is None:
        if not end_entities:
            raise MissingCertificate("the response carries no end-entity certificate")
        issued = end_entities[0]
    else:
        ours = _spki(our_public_key)
        matching = [cert for cert in certificates if _spki_of(cert) == ours]
        if not matching:
            if not end_entities:
                raise MissingCertificate("the response carries no certificate for our key")
            raise KeyMismatch("no certificate in the response carries our public key")
        issued = matching[0]
    try:
        chain = verify_chain(issued, certificates, anchors, at=when)
    except UntrustedSigner as exc:
        raise type(exc)(f"issued certificate: {exc}") from exc
    return issued, tuple(chain[1:])
