"""What a verified CMC request asks the CA to do, one body part at a time.

Each certification request (``tcr``) becomes an order (:meth:`CertificateAuthority.submit`),
``queryPending`` looks an order up by its pendToken, ``getCert`` returns a certificate the
issuing CA issued, ``revokeRequest`` revokes one of the account's own certificates.  Each
operation yields one statusInfoV2 naming its body part; a refusal of one does not stop the
others.  Controls the CA does not implement refuse the whole request (RFC 5272 §3.2.1.2.1:
controls cannot be ignored).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import CertificateAuthority, OrderRefused
from ca.keys.errors import KeyBackendError
from ca.store.model import (
    OrderStatus,
    OrderView,
    RevocationRefused,
    StoreError,
    UnknownCertificate,
)
from cmc.messages.api import (
    CertificationRequest,
    CMCFailInfo,
    CMCStatus,
    FullPKIRequest,
    GetCert,
    PendInfo,
    RevokeRequest,
    StatusInfo,
    refusal_status,
    unsupported_controls,
)
from config.errors import CmcgateError

log = logging.getLogger(__name__)
F = CMCFailInfo

#: Controls this CA understands (RFC 5272 §6 names).
SUPPORTED_CONTROLS = frozenset(
    {"transactionId", "senderNonce", "recipientNonce", "queryPending", "getCert", "revokeRequest"}
)
#: How long a client should wait before polling a pending order.
POLL_AFTER = timedelta(minutes=10)
_CATEGORIES = {
    "bad_request": F.BAD_REQUEST,
    "bad_identity": F.BAD_IDENTITY,
    "pop_failed": F.POP_FAILED,
    "bad_alg": F.BAD_ALG,
}


class Refusal(CmcgateError):
    """A request or one body part refused with ``fail_info`` (RFC 5272 §6.1.4)."""

    def __init__(
        self, fail_info: CMCFailInfo, message: str, body_list: tuple[int, ...] = ()
    ) -> None:
        super().__init__(message)
        self.fail_info = fail_info
        self.body_list = body_list


@dataclass(frozen=True)
class Subject:
    """Who asks: the account (and product) the client certificate was accepted for."""

    account: str | None
    product: str | None
    client: x509.Certificate | None = None


@dataclass
class Outcome:
    statuses: list[StatusInfo]
    certificates: list[x509.Certificate] = field(default_factory=list)

    def add_certificates(self, certs: list[x509.Certificate]) -> None:
        for cert in certs:
            if cert not in self.certificates:
                self.certificates.append(cert)


def unexpected(exc: BaseException) -> Refusal:
    """An exception an operation did not turn into a status: tryLater or internalCAError."""
    if isinstance(exc, Refusal):
        return exc
    cause = exc.__context__ if isinstance(exc, OrderRefused) else exc
    unavailable = isinstance(exc, OrderRefused) and exc.category == "unavailable"
    if unavailable or isinstance(cause, KeyBackendError | StoreError):
        log.warning("CA back end unavailable: %s", cause)
        return Refusal(F.TRY_LATER, "the CA's key store or database is unavailable; try later")
    if isinstance(exc, OrderRefused):
        return Refusal(F.INTERNAL_CA_ERROR, f"the CA failed: {exc}")
    log.error("unexpected error answering a CMC request", exc_info=exc)
    return Refusal(F.INTERNAL_CA_ERROR, "internal CA error (logged on the server)")


class _Operations:
    def __init__(
        self,
        ca: CertificateAuthority,
        request: FullPKIRequest | None,
        subject: Subject,
        validity: str | None,
        now: datetime,
        replayed: Mapping[bytes, OrderView] | None = None,
    ) -> None:
        self.ca = ca
        self.request = request
        self.subject = subject
        self.validity = validity
        self.now = now
        self.replayed = replayed
        self.outcome = Outcome([])

    @property
    def account(self) -> str:
        return self.subject.account or "-"

    def run(self, body_part_id: int, operation: object, *args: object) -> None:
        try:
            status = operation(body_part_id, *args)  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - becomes this body part's status
            refusal = unexpected(exc)
            status = StatusInfo(
                CMCStatus.FAILED, (body_part_id,), str(refusal), fail_info=refusal.fail_info
            )
        self.outcome.statuses.append(status)

    # -- certification requests -------------------------------------------------------------
    def enrol(self, body_part_id: int, csr_der: bytes) -> StatusInfo:
        if self.replayed is not None:  # answered from the order the original made
            order = self.replayed.get(csr_der)
            if order is None:
                return _failed(body_part_id, F.BAD_REQUEST, "not a request of the original")
            if order.status is not OrderStatus.FAILED:
                return self._order_status(body_part_id, order, order.pend_token)
            # a failed order issued nothing: asked again, it is ordered again (the CA may have
            # been unavailable then); a refusal is simply repeated
        txid = self.request.transaction_id if self.request is not None else None
        nonce = self.request.sender_nonce if self.request is not None else None
        client = self.subject.client
        who = client.subject.rfc4514_string() if client else self.account
        try:
            result = self.ca.submit(
                csr_der, self.account, self.subject.product or "-", self.validity,
                requested_by=f"cmc:{who}"[:256], transaction_id=txid, sender_nonce=nonce,
            )  # fmt: skip
        except OrderRefused as exc:
            if exc.category not in _CATEGORIES:
                raise
            reason = f"order {exc.order_id or '-'} refused: {exc}"
            return _failed(body_part_id, _CATEGORIES[exc.category], reason)
        order = result.order
        if result.certificate is None:
            token = os.urandom(16)
            self.ca.store.set_pend_token(order.id, token)
            note = f"order {order.id} is {order.status.value}"
            return _pending(body_part_id, token, self.now, note)
        self.outcome.add_certificates([result.certificate, *result.chain])
        serial = f"{result.certificate.serial_number:x}"
        return StatusInfo(CMCStatus.SUCCESS, (body_part_id,), f"order {order.id} issued {serial}")

    # -- controls ---------------------------------------------------------------------------
    def query_pending(self, body_part_id: int, token: bytes) -> StatusInfo:
        order = self.ca.store.find_order_by_pend_token(bytes(token))
        if order is None or order.account != self.subject.account:
            return _failed(body_part_id, F.BAD_REQUEST, "unknown pendToken")
        txid = self.request.transaction_id if self.request is not None else None
        if order.transaction_id is not None and order.transaction_id != txid:
            return _failed(
                body_part_id, F.BAD_REQUEST, "queryPending must keep the original transactionId"
            )
        return self._order_status(body_part_id, order, bytes(token))

    def _order_status(self, body_part_id: int, order: OrderView, token: bytes | None) -> StatusInfo:
        """What an existing order says now: issued (its certificate), failed, or pending
        (with ``token``, or a new pendToken when the order has none yet)."""
        if order.status is OrderStatus.ISSUED and order.certificate_serial:
            view = self.ca.store.get_certificate(order.certificate_serial)
            cert = x509.load_der_x509_certificate(view.der)
            self.outcome.add_certificates([cert, *self.ca.chain])
            return StatusInfo(CMCStatus.SUCCESS, (body_part_id,), f"order {order.id} issued")
        if order.status is OrderStatus.FAILED:
            reason = f"order {order.id} failed: {order.failure_reason or 'refused'}"
            return _failed(body_part_id, F.BAD_REQUEST, reason)
        if order.status.is_final:
            return _failed(body_part_id, F.BAD_REQUEST, f"order {order.id} is {order.status}")
        if token is None:
            token = os.urandom(16)
            self.ca.store.set_pend_token(order.id, token)
        note = f"order {order.id} is {order.status.value}"
        return _pending(body_part_id, token, self.now, note)

    def _own_issuer(self, issuer: x509.Name, serial: int) -> str:
        if issuer != self.ca.issuing_cert.subject:
            raise Refusal(F.BAD_CERT_ID, f"this CA is not {issuer.rfc4514_string()}")
        try:
            return self.ca.store.get_certificate(serial).serial
        except UnknownCertificate:
            raise Refusal(F.BAD_CERT_ID, f"no certificate with serial {serial:x}") from None

    def get_cert(self, body_part_id: int, value: GetCert) -> StatusInfo:
        key = self._own_issuer(value.issuer, value.serial_number)
        cert = x509.load_der_x509_certificate(self.ca.store.get_certificate(key).der)
        self.outcome.add_certificates([cert, *self.ca.chain])
        return StatusInfo(CMCStatus.SUCCESS, (body_part_id,), f"certificate {key}")

    def revoke(self, body_part_id: int, value: RevokeRequest) -> StatusInfo:
        key = self._own_issuer(value.issuer, value.serial_number)
        view = self.ca.store.get_certificate(key)
        owner = self.ca.store.get_order(view.order_id).account if view.order_id else None
        if owner != self.subject.account:
            return _failed(
                body_part_id,
                F.BAD_IDENTITY,
                f"certificate {key} was not issued to account {self.subject.account}",
            )
        try:
            revoked = self.ca.revoke(
                key, value.reason, by=f"cmc:{self.account}", comment=value.comment
            )
        except RevocationRefused as exc:
            return _failed(body_part_id, F.BAD_REQUEST, str(exc))
        text = f"certificate {key} revoked ({revoked.reason.rfc_name})"
        return StatusInfo(CMCStatus.SUCCESS, (body_part_id,), text)


def _failed(body_part_id: int, fail_info: CMCFailInfo, text: str) -> StatusInfo:
    return StatusInfo(CMCStatus.FAILED, (body_part_id,), text, fail_info=fail_info)


def _pending(body_part_id: int, token: bytes, now: datetime, text: str) -> StatusInfo:
    info = PendInfo(token, now + POLL_AFTER)
    return StatusInfo(CMCStatus.PENDING, (body_part_id,), text, pend_info=info)


def run_operations(
    ca: CertificateAuthority,
    request: FullPKIRequest | None,
    simple_der: bytes | None,
    subject: Subject,
    validity: str | None,
    now: datetime,
    *,
    replayed: Mapping[bytes, OrderView] | None = None,
) -> Outcome:
    """Statuses (and certificates to return) for a verified request; see the module doc.

    ``replayed``: the request is a replay (:mod:`ca.service.replay`) and these are the orders its
    original made, by CSR (DER): each tcr is answered from its order, nothing is ordered.
    """
    ops = _Operations(ca, request, subject, validity, now, replayed)
    if request is None:
        assert simple_der is not None
        ops.run(1, ops.enrol, simple_der)
        ops.outcome.statuses = [replace(s, body_list=()) for s in ops.outcome.statuses]
        return ops.outcome
    pki_data = request.pki_data
    refused = unsupported_controls(pki_data, SUPPORTED_CONTROLS)
    if refused:
        ids = tuple(c.body_part_id for c in refused)
        if any(c.name == "addExtensions" for c in refused):
            text = "addExtensions is not supported: extensions come from the product profile"
            raise Refusal(F.UNSUPPORTED_EXT, text, ids)
        return Outcome([refusal_status(refused)])
    for item in pki_data.requests:
        if isinstance(item, CertificationRequest):
            ops.run(item.body_part_id, ops.enrol, item.csr.public_bytes(Encoding.DER))
        else:
            text = "only PKCS#10 requests (tcr) are accepted"
            ops.outcome.statuses.append(_failed(item.body_part_id, F.BAD_REQUEST, text))
    handlers = {
        "queryPending": ops.query_pending,
        "getCert": ops.get_cert,
        "revokeRequest": ops.revoke,
    }
    for ctl in pki_data.controls:
        handler = handlers.get(ctl.name)
        if handler is not None:
            ops.run(ctl.body_part_id, handler, ctl.value)
    if not ops.outcome.statuses:
        text = "the request asks for nothing (no tcr, queryPending, getCert or revokeRequest)"
        raise Refusal(F.BAD_REQUEST, text)
    return ops.outcome
