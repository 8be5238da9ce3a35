"""The CA's CMC server half without sockets: one HTTP body in, one HTTP answer out.

:meth:`CmcService.handle` takes what the web layer knows (body, Content-Type, the URL's
account/product/validity, the TLS client certificate) and returns a :class:`CmcReply`.
Non-CMC input gets HTTP 400/413/415; everything that parses as a PKI Request gets a CMC
answer: a Simple PKI Response (issued, Simple request), or a Full PKI Response signed by the
CA's CMC signing key, with statusInfoV2 per body part, the transactionId echoed and the
client's senderNonce as recipientNonce.  A refusal names its failInfo (RFC 5272 §6.1.4) and
a readable statusString, and is appended to the audit log as ``refusal``.

Checks, in order: the client certificate speaks for the URL's account
(:func:`ca.service.certs.access_account`); the product is the account's; the request
signature verifies (``badMessageCheck``) and, when a certificate signed it, that certificate
speaks for the same account (``badIdentity``); transactionId and senderNonce are present; a
pair seen before is a replay, answered from what its original did or refused (``badRequest``,
see :mod:`ca.service.replay`); every control is supported; then each operation
(:mod:`ca.service.operations`) runs and says its own status.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ca.authority import CertificateAuthority
from ca.service.certs import access_account
from ca.service.operations import Outcome, Refusal, Subject, run_operations, unexpected
from ca.service.replay import REPLAY_WINDOW, TransactionLocks, replayed_orders
from ca.store.audit import AuditEvent, append_audit
from cmc import errors as cmc_errors
from cmc.messages.api import (
    CMCFailInfo,
    CMCStatus,
    FullPKIRequest,
    Signer,
    SimplePKIRequest,
    StatusInfo,
    build_full_response,
    build_simple_response,
    parse_request,
    verify_request,
)
from cmc.messages.cms import verify_signed_data

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
FULL_RESPONSE_TYPE = "application/pkcs7-mime; smime-type=CMC-response"
SIMPLE_RESPONSE_TYPE = "application/pkcs7-mime; smime-type=certs-only"
_FULL_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_SIMPLE_TYPES = {"application/pkcs10", "application/x-pkcs10"}
F = CMCFailInfo


@dataclass(frozen=True)
class CmcReply:
    """The HTTP answer, and what the service's request log says about it: the account, the
    CMC status (``success``, ``pending``, ``failed``...; None for an HTTP-level refusal),
    the failInfo, the statusString and the serials of issued certificates."""

    status: int
    body: bytes
    content_type: str
    account: str | None = None
    cmc_status: str | None = None
    fail_info: str | None = None
    detail: str | None = None
    serials: tuple[str, ...] = ()

    @classmethod
    def text(cls, status: int, message: str) -> CmcReply:
        body = (message.rstrip() + "\n").encode()
        return cls(status, body, "text/plain; charset=utf-8", detail=message.strip()[:200])


@dataclass(frozen=True)
class Query:
    """What the URL says: ``/ws/cmc?account=&product=&validity=`` (or nothing for /cmc)."""

    account: str | None = None
    product: str | None = None
    validity: str | None = None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def decode_get_message(value: str) -> bytes:
    """The DER of a GET request's ``message`` value: base64 (RFC 4648 §4, as
    :func:`cmc.transport.codec.get_request_url` sends it, or §5 URL-safe), already
    percent-decoded by the web layer. A ``+`` that arrived unencoded and was read as a space
    is put back. Raises ``ValueError`` when it is not base64."""
    text = "".join(value.replace(" ", "+").split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the message parameter is not base64: {exc}") from None
    if not der:
        raise ValueError("the message parameter is empty")
    return der


def decode_body(body: bytes, transfer_encoding: str | None) -> bytes:
    """DER as sent, or base64 (Totemo's ``encodeRequestBase64=true``) decoded."""
    stripped = body.strip()
    if (transfer_encoding or "").strip().lower() == "base64" or (
        stripped and stripped[:1] != b"\x30" and stripped[:1].isalnum()
    ):
        try:
            return base64.b64decode(b"".join(stripped.split()), validate=True)
        except (binascii.Error, ValueError):
            return body
    return body


class CmcService:
    """Answers CMC requests for one :class:`CertificateAuthority`."""

    def __init__(
        self,
        ca: CertificateAuthority,
        signer: Signer,
        infra_cert: x509.Certificate,
        *,
        clock: Callable[[], datetime] | None = None,
        replay_window: timedelta = REPLAY_WINDOW,
    ) -> None:
        self.ca = ca
        self.signer = signer
        self.infra_cert = infra_cert
        self.clock = clock or (lambda: datetime.now(UTC))
        self.replay_window = replay_window
        self._transactions = TransactionLocks()

    # -- entry point ------------------------------------------------------------------------
    def handle(
        self,
        body: bytes,
        content_type: str | None,
        query: Query,
        client_cert: x509.Certificate | None,
        *,
        transfer_encoding: str | None = None,
        typed_by_content: bool = False,
    ) -> CmcReply:
        """``typed_by_content``: the request came without a Content-Type (GET ``?message=``);
        :func:`parse_request` tells a Full PKI Request from a PKCS#10 one by its content."""
        media = _media_type(content_type)
        if not typed_by_content and media not in _FULL_TYPES | _SIMPLE_TYPES:
            return CmcReply.text(
                415, "send application/pkcs7-mime (Full PKI Request) or application/pkcs10"
            )
        if len(body) > MAX_BODY:
            return CmcReply.text(413, f"a PKI Request is at most {MAX_BODY} bytes")
        try:
            request = parse_request(decode_body(body, transfer_encoding))
        except cmc_errors.CmcError as exc:
            return CmcReply.text(400, f"not a PKI Request: {exc}")
        full = request if isinstance(request, FullPKIRequest) else None
        subject = Subject(query.account, None)
        try:
            subject = self._subject(query, client_cert)
            if full is None:
                assert isinstance(request, SimplePKIRequest)
                reply = self._simple(request, subject, query)
            else:
                reply = self._full(full, subject, query)
        except Refusal as refusal:
            reply = self._refused(full, subject, refusal)
        except Exception as exc:  # noqa: BLE001 - the CA answers in CMC, never with a trace
            reply = self._refused(full, subject, unexpected(exc))
        return replace(reply, account=subject.account)

    # -- identity ---------------------------------------------------------------------------
    def _subject(self, query: Query, client_cert: x509.Certificate | None) -> Subject:
        if client_cert is None:
            raise Refusal(F.BAD_IDENTITY, "no client certificate was presented")
        caller = access_account(client_cert, self.ca, self.infra_cert, now=self.clock())
        if caller is None:
            raise Refusal(
                F.BAD_IDENTITY,
                f"the client certificate {client_cert.subject.rfc4514_string()} is not an "
                "access certificate of any account",
            )
        account = query.account or caller
        if account != caller:
            raise Refusal(
                F.BAD_IDENTITY,
                f"the client certificate speaks for account {caller}, not {account}",
            )
        settings = self.ca.settings.account(account)
        assert settings is not None  # access_account only names known accounts
        product_id = query.product
        if product_id is None:
            if len(settings.products) != 1:
                raise Refusal(
                    F.BAD_REQUEST,
                    f"account {account} has {len(settings.products)} products: name one "
                    "with ?product=",
                )
            product_id = settings.products[0]
        product = self.ca.settings.product(product_id)
        if product is None or (settings.products and product.id not in settings.products):
            raise Refusal(
                F.BAD_IDENTITY, f"product {product_id!r} is not available to account {account}"
            )
        return Subject(account, product.id, client_cert)

    def _verify_signer(self, request: FullPKIRequest, subject: Subject) -> None:
        try:
            try:
                verified = verify_request(request)
            except cmc_errors.SignerNotFound:
                key = self._pending_key(request, subject)
                if key is None:
                    raise
                verified = verify_signed_data(request.der, signer_public_key=key)
        except cmc_errors.UnsupportedAlgorithm as exc:
            raise Refusal(F.BAD_ALG, f"request signature algorithm not supported: {exc}") from None
        except (cmc_errors.SignatureInvalid, cmc_errors.SignerNotFound) as exc:
            raise Refusal(F.BAD_MESSAGE_CHECK, f"the request signature does not verify: {exc}")
        except cmc_errors.MalformedMessage as exc:
            raise Refusal(F.BAD_REQUEST, f"malformed request: {exc}") from None
        signer = verified.signer_certificate
        if signer is None:
            return  # signed by the key being certified: POP by self-signature
        owner = access_account(signer, self.ca, self.infra_cert, now=self.clock())
        if owner != subject.account:
            raise Refusal(
                F.BAD_IDENTITY,
                f"the request is signed by {signer.subject.rfc4514_string()}, which does not "
                f"speak for account {subject.account}",
            )

    def _pending_key(self, request: FullPKIRequest, subject: Subject) -> PublicKeyTypes | None:
        """A poll signed by the end-entity key: the key of the order it asks about."""
        tokens = request.pki_data.find("queryPending")
        if len(tokens) != 1:
            return None
        order = self.ca.store.find_order_by_pend_token(bytes(tokens[0].value))
        if order is None or order.account != subject.account or order.csr_der is None:
            return None
        return x509.load_der_x509_csr(order.csr_der).public_key()

    # -- Simple and Full PKI Requests -------------------------------------------------------
    def _simple(self, request: SimplePKIRequest, subject: Subject, query: Query) -> CmcReply:
        product = self.ca.settings.product(subject.product or "")
        if product is None or not product.allow_simple_request:
            raise Refusal(
                F.BAD_REQUEST,
                f"product {subject.product} accepts only Full PKI Requests (signed, with "
                "transactionId and senderNonce)",
            )
        outcome = run_operations(self.ca, None, request.der, subject, query.validity, self.clock())
        status = outcome.statuses[0]
        if status.status is CMCStatus.SUCCESS and outcome.certificates:
            simple = build_simple_response(outcome.certificates)
            return _summarised(CmcReply(200, simple.der, SIMPLE_RESPONSE_TYPE), outcome)
        self._audit_outcome(None, subject, outcome)
        return self._respond(None, outcome)

    def _full(self, request: FullPKIRequest, subject: Subject, query: Query) -> CmcReply:
        self._verify_signer(request, subject)
        try:
            txid = request.transaction_id
            nonce = request.sender_nonce
        except cmc_errors.MalformedMessage as exc:
            raise Refusal(F.BAD_REQUEST, str(exc)) from None
        if txid is None or nonce is None:
            raise Refusal(F.BAD_REQUEST, "a Full PKI Request needs transactionId and senderNonce")
        if txid <= 0 or len(nonce) > 128 or len(str(txid)) > 80:
            raise Refusal(F.BAD_REQUEST, "transactionId or senderNonce out of range")
        with self._transactions.hold(txid):  # a replay waits for its original's answer
            now = self.clock()
            first_seen = self.ca.store.record_nonce(txid, nonce, now=now)
            replayed = None
            if first_seen is not None:
                replayed = replayed_orders(
                    self.ca, request, subject, first_seen=first_seen, now=now,
                    window=self.replay_window,
                )  # fmt: skip
            outcome = run_operations(
                self.ca, request, None, subject, query.validity, now, replayed=replayed
            )
        self._audit_outcome(request, subject, outcome)
        return self._respond(request, outcome)

    # -- answers ----------------------------------------------------------------------------
    def _respond(self, request: FullPKIRequest | None, outcome: Outcome) -> CmcReply:
        response = build_full_response(
            signer=self.signer,
            statuses=outcome.statuses,
            request=request,
            certificates=outcome.certificates,
        )
        return _summarised(CmcReply(200, response.der, FULL_RESPONSE_TYPE), outcome)

    def _refused(
        self, request: FullPKIRequest | None, subject: Subject, refusal: Refusal
    ) -> CmcReply:
        status = StatusInfo(
            CMCStatus.FAILED, refusal.body_list, str(refusal), fail_info=refusal.fail_info
        )
        self._audit(request, subject, status)
        try:
            return self._respond(request, Outcome([status], []))
        except Exception:  # noqa: BLE001 - e.g. the signing key is unreachable
            log.exception("cannot sign a CMC refusal")
            return CmcReply.text(503, "the CA cannot answer right now; try again later")

    def _audit_outcome(
        self, request: FullPKIRequest | None, subject: Subject, outcome: Outcome
    ) -> None:
        for status in outcome.statuses:
            if status.status is CMCStatus.FAILED or status.status is CMCStatus.NO_SUPPORT:
                self._audit(request, subject, status)

    def _audit(self, request: FullPKIRequest | None, subject: Subject, status: StatusInfo) -> None:
        txid = None
        try:
            txid = request.transaction_id if request is not None else None
        except cmc_errors.MalformedMessage:
            pass
        details = {
            "fail_info": status.fail_info_name,
            "reason": status.status_string,
            "transaction_id": txid,
            "product": subject.product,
            "client": subject.client.subject.rfc4514_string() if subject.client else None,
        }
        try:
            append_audit(
                self.ca.store, AuditEvent.REFUSAL, f"cmc:{subject.account or '-'}", None, details
            )
        except Exception:  # noqa: BLE001 - the answer must still go out
            log.exception("cannot append a refusal to the audit log")


def _summarised(reply: CmcReply, outcome: Outcome) -> CmcReply:
    """The reply with the outcome's log fields: the worst status of its body parts."""
    order = (CMCStatus.FAILED, CMCStatus.NO_SUPPORT, CMCStatus.PENDING, CMCStatus.SUCCESS)
    ranked = sorted(
        outcome.statuses, key=lambda s: order.index(s.status) if s.status in order else 0
    )
    worst = ranked[0] if ranked else None
    return replace(
        reply,
        cmc_status=None if worst is None else worst.status.rfc_name,
        fail_info=None if worst is None else worst.fail_info_name,
        detail=None if worst is None or not worst.status_string else worst.status_string[:200],
        serials=tuple(format(c.serial_number, "x") for c in outcome.certificates if not _is_ca(c)),
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


__all__ = ["CmcReply", "CmcService", "Query", "decode_body"]
