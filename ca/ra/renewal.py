"""Certificate renewal (RA manual: status PENDING_CSR_RENEWAL, "automatic certificate renewal
... the recipient must provide a CSR"; 3.5.4.2 renewal info and preceding certificates).

A renewal is a new order with the predecessor's account, product, addresses, requested
subject and validity, linked to the predecessor's serial (:mod:`ca.store.renewals`). It
starts in PENDING_CSR_RENEWAL; the CSR (given at once, or later with :meth:`provide_csr`
after the ``renewal_csr_needed`` mail) releases it through :meth:`CertificateAuthority.resume`,
so it passes the very checks of a first order (validated domains, mailbox challenge,
operator approval, key type) on the one issuance path. A renewal CSR that names addresses
must name the renewed certificate's (the renewal continues those mailboxes, nobody else's).
A certificate whose key the CA made (a PKCS#12 product, or a "both" product whose
predecessor was a PKCS#12) is renewed with a new server-made key
(:class:`ca.ra.keygen.KeygenService`) unless a CSR is given.

A revoked certificate is not renewed (409): revocation ends the subscriber relation the
renewal would continue. An expired one may be renewed, as SwissSign allows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ca.authority import IssueResult, OrderRefused, csr_emails
from ca.ra.errors import RaError
from ca.ra.keygen import KeygenError, KeygenResult, KeygenService, Notifier
from ca.settings.types import KeyGeneration, ProductSettings
from ca.store.model import (
    CertificateStatus,
    CertificateView,
    OrderStatus,
    OrderView,
    UnknownCertificate,
    UnknownOrder,
)
from config.errors import CmcgateError

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority

log = logging.getLogger(__name__)
_DER = serialization.Encoding.DER
#: where the ``renewal_csr_needed`` mail sends the subscriber (the REST API's upload)
CSR_UPLOAD_PATH = "/pki/api/v2/orders/{order_id}/csr"


class RenewalError(RaError):
    """A renewal refused; ``status`` is the HTTP answer (404 unknown, 409 wrong state...)."""


def read_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request in DER or PEM whose signature verifies (400 otherwise)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise RenewalError(f"not a PKCS#10 request: {exc}", status=400) from None
    if not csr.is_signature_valid:
        raise RenewalError("the CSR's signature does not verify", status=400)
    return csr


class RenewalService:
    """Renew certificates, wait for renewal CSRs, list preceding certificates."""

    def __init__(
        self,
        ca: CertificateAuthority,
        notifier: Notifier,
        keygen: KeygenService | None = None,
    ) -> None:
        self.ca = ca
        self.notifier = notifier
        self.keygen = keygen or KeygenService(ca, notifier)

    def renew(
        self, serial: int | str, *, by: str, csr_der: bytes | None = None
    ) -> OrderView | IssueResult | KeygenResult:
        """Order the successor of certificate ``serial``.

        With ``csr_der``: the result of issuance (IssueResult, possibly pending). Without: a
        server-made key for PKCS#12 certificates (KeygenResult), else the order waiting in
        PENDING_CSR_RENEWAL (OrderView) after the ``renewal_csr_needed`` mail.
        """
        store = self.ca.store
        try:
            cert = store.get_certificate(serial)
        except UnknownCertificate as exc:
            raise RenewalError(str(exc), status=404) from None
        if cert.status is CertificateStatus.REVOKED:
            raise RenewalError(f"certificate {cert.serial} is revoked: not renewed", status=409)
        if cert.order_id is None:
            raise RenewalError(f"certificate {cert.serial} has no order to renew", status=409)
        previous = store.get_order(cert.order_id)
        product = self.ca.settings.product(previous.product)
        if product is None:
            raise RenewalError(f"product {previous.product!r} is no longer offered", status=409)
        csr = None if csr_der is None else read_csr(csr_der)
        if csr is not None and not product.key_generation.allows(False):
            raise RenewalError(f"product {product.id} makes the key itself: no CSR", status=400)
        if csr is None and self._server_side(product, previous):
            return self._renew_with_new_key(cert, previous, by)
        order = store.new_order(
            previous.account, previous.product, previous.subject, previous.emails,
            previous.validity, requested_by=by, note=f"renewal of certificate {cert.serial}",
        )  # fmt: skip
        store.transition(
            order.id, OrderStatus.PENDING_CSR_RENEWAL, f"renews {cert.serial}", actor=by
        )
        store.record_renewal(order.id, cert.serial, requested_by=by)
        if csr is not None:
            return self.provide_csr(order.id, csr.public_bytes(_DER), by=by)
        url = self.ca.settings.ra.link_base() + CSR_UPLOAD_PATH.format(order_id=order.id)
        for email in order.emails:
            try:
                self.notifier.send(
                    "renewal_csr_needed", email, order_id=order.id, serial=cert.serial, url=url
                )
            except CmcgateError as exc:  # the order waits anyway; the mail can be resent
                log.warning("renewal mail for %s to %s failed: %s", order.id, email, exc)
                store.add_comment(order.id, "ca", f"renewal mail to {email} failed: {exc}")
        return store.get_order(order.id)

    def _server_side(self, product: ProductSettings, previous: OrderView) -> bool:
        if product.key_generation is KeyGeneration.PKCS12:
            return True
        return product.key_generation is KeyGeneration.BOTH and (
            self.ca.store.pkcs12_of(previous.id) is not None
        )

    def _renew_with_new_key(
        self, cert: CertificateView, previous: OrderView, by: str
    ) -> KeygenResult:
        issued = x509.load_der_x509_certificate(cert.der).subject
        given = [str(a.value) for a in issued.get_attributes_for_oid(NameOID.GIVEN_NAME)]
        surname = [str(a.value) for a in issued.get_attributes_for_oid(NameOID.SURNAME)]
        try:
            result = self.keygen.order(
                previous.account, previous.product, previous.emails, requested_by=by,
                validity=None if previous.validity == "default" else previous.validity,
                given_name=given[0] if given else None, surname=surname[0] if surname else None,
                subject=previous.subject or None,
            )  # fmt: skip
        except KeygenError as exc:
            if exc.order_id is not None:
                self.ca.store.record_renewal(exc.order_id, cert.serial, requested_by=by)
            raise RenewalError(str(exc), status=exc.status, order_id=exc.order_id) from None
        self.ca.store.record_renewal(result.order_id, cert.serial, requested_by=by)
        return result

    def provide_csr(self, order_id: str, csr_der: bytes, *, by: str) -> IssueResult:
        """The CSR a PENDING_CSR_RENEWAL order waits for: checked and issued (or left
        waiting for a mailbox or an operator) like a first order."""
        try:
            order = self.ca.store.get_order(order_id)
        except UnknownOrder as exc:
            raise RenewalError(str(exc), status=404) from None
        if order.status is not OrderStatus.PENDING_CSR_RENEWAL:
            raise RenewalError(
                f"order {order_id} is {order.status.value}, not waiting for a renewal CSR",
                status=409, order_id=order_id,
            )  # fmt: skip
        csr = read_csr(csr_der)
        named = set(csr_emails(csr))
        if named and named != set(order.emails):
            raise RenewalError(
                f"the CSR names {', '.join(sorted(named))}; the renewal is for "
                f"{', '.join(order.emails)}",
                status=400, order_id=order_id,
            )  # fmt: skip
        der = csr.public_bytes(_DER)
        try:
            return self.ca.resume(order_id, actor=by, csr_der=der)
        except OrderRefused as exc:
            raise RenewalError(str(exc), status=exc.http_status, order_id=order_id) from None

    def predecessors(self, serial: int | str) -> tuple[CertificateView, ...]:
        """The certificates ``serial`` renewed, newest first (the manual's renewal info)."""
        store = self.ca.store
        try:
            cert = store.get_certificate(serial)
        except UnknownCertificate as exc:
            raise RenewalError(str(exc), status=404) from None
        found: list[CertificateView] = []
        seen = {cert.serial}
        while cert.order_id is not None:
            previous = store.renewed_serial(cert.order_id)
            if previous is None or previous in seen:
                break
            seen.add(previous)
            cert = store.get_certificate(previous)
            found.append(cert)
        return tuple(found)


__all__ = ["CSR_UPLOAD_PATH", "RenewalError", "RenewalService", "read_csr"]
