"""The bundled CA: one order from CSR to certificate, through the RA manual's statuses.

An order moves NEW → [PENDING_AUTHORIZATION] → KEY_VALIDATION → GENERATE_TBS →
PRE_VALIDATION → PRE_ISSUE → ISSUE → POST_VALIDATION → FINALIZE_ISSUANCE → ISSUED, each step
recorded with a timestamp.  A bad request never reaches ISSUE: the order goes FAILED with the
reason, the refusal is audited, and :class:`OrderRefused` carries the reason and a category
the CMC server maps to a failInfo (RFC 5272 §6.1.4).  The HSM key signs only a certificate
whose throwaway-signed twin passed pkilint (pre-issuance lint) and the issued certificate is
linted again (post-issuance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority_checks import (
    OrderChecks,
    csr_emails,
    public_key_type,
    shared_linter,
    uses_internal_urls,
)
from ca.authority_crl import Revocations
from ca.inflight import working_on
from ca.keys import KeyBackend, KeyBackendError, backend_from_settings
from ca.profiles.builder import build_tbs
from ca.profiles.errors import EmailNotAllowed, ProfileError, ValidityTooLong
from ca.profiles.lint import DEVELOPMENT_IGNORED_CODES, LintFailed
from ca.profiles.types import CaEndpoints, IssuanceRequest
from ca.ra.caa import CaaRefused
from ca.ra.dns import DnsUnavailable
from ca.settings.loader import load_ca_settings
from ca.settings.types import Approval, CaSettings, KeyGeneration, ProductSettings
from ca.store.model import (
    IllegalTransition,
    OrderStatus,
    OrderView,
    StoreConflict,
    StoreError,
)
from ca.store.orders import Store
from config.closing import Closing
from config.errors import CmcgateError

S = OrderStatus
__all__ = [
    "CertificateAuthority",
    "IssueResult",
    "OrderRefused",
    "csr_emails",
    "public_key_type",
    "shared_linter",
    "uses_internal_urls",
]


class OrderRefused(CmcgateError):
    """An order failed; ``category`` is what the CMC server turns into a failInfo.

    Categories: ``bad_request`` (malformed or not allowed), ``bad_identity`` (account,
    product or email not authorised), ``pop_failed`` (CSR signature), ``bad_alg`` (key type),
    ``unavailable`` (HSM or database down: try later), ``internal`` (the CA itself failed).
    """

    #: the HTTP status the RA API and the RA services answer each category with
    HTTP_STATUS = {"bad_identity": 403, "bad_request": 400, "pop_failed": 400, "bad_alg": 400,
                   "unavailable": 503, "internal": 500}  # fmt: skip

    def __init__(self, message: str, *, category: str, order_id: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.order_id = order_id

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self.category, 500)


@dataclass(frozen=True)
class IssueResult:
    order: OrderView
    certificate: x509.Certificate | None
    chain: tuple[x509.Certificate, ...]

    @property
    def pending(self) -> bool:
        return self.certificate is None


class CertificateAuthority(OrderChecks, Revocations, Closing):
    """Issues, revokes and publishes CRLs for one ``ca.yaml``."""

    def __init__(
        self,
        settings: CaSettings,
        store: Store,
        keys: KeyBackend,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.clock = clock or (lambda: datetime.now(UTC))
        ca = settings.ca
        self.root_cert = _load_cert(ca.root.certificate)
        self.issuing_cert = _load_cert(ca.issuing.certificate)
        ignored = DEVELOPMENT_IGNORED_CODES if uses_internal_urls(ca.base_url) else frozenset()
        self.linter = shared_linter(frozenset(ignored))
        #: Hooks the RA service (:mod:`ca.ra`) sets: an order now waits in PENDING_VALIDATION
        #: for these mailboxes (it sends the email challenges; without it the order waits for
        #: :meth:`resume`), and an order was issued (FINALIZE_ISSUANCE notifications).
        self.on_pending_validation: Callable[[OrderView, tuple[str, ...]], None] = _nothing
        self.on_issued: Callable[[OrderView, x509.Certificate], None] = _nothing

    @classmethod
    def open(cls, ca_yaml: str | Path, **kwargs: object) -> CertificateAuthority:
        settings = load_ca_settings(Path(ca_yaml))
        store = Store.open(settings.ca.database, audit_hmac_key=settings.ca.audit_hmac_key_file)
        store.create_all()
        keys = backend_from_settings(settings.ca.keys.backend, **settings.ca.keys.backend_kwargs())
        return cls(settings, store, keys, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.keys.close()
        self.store.close()

    # -- URLs the certificates name ---------------------------------------------------------
    def endpoints(self) -> CaEndpoints:
        base = self.settings.ca.base_url.rstrip("/")
        return CaEndpoints(
            crl_url=f"{base}/crl/issuing.crl", ca_issuers_url=f"{base}/certs/issuing-ca.cer"
        )

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        return (self.issuing_cert, self.root_cert)

    # -- issuance ---------------------------------------------------------------------------
    def submit(
        self,
        csr_der: bytes,
        account_id: str,
        product_id: str,
        validity: str | None = None,
        *,
        requested_by: str,
        given_name: str | None = None,
        surname: str | None = None,
        transaction_id: int | None = None,
        sender_nonce: bytes | None = None,
        server_side_key: bool = False,
    ) -> IssueResult:
        """Open an order and issue it now, or leave it PENDING_AUTHORIZATION (manual products).

        ``server_side_key``: the CSR was made by the CA's own key generation (:mod:`ca.ra.keygen`);
        a product with ``key_generation: pkcs12`` refuses any other CSR."""
        csr: x509.CertificateSigningRequest | None = None
        subject_text, unreadable = "", ""
        emails: tuple[str, ...] = ()
        try:
            csr = x509.load_der_x509_csr(csr_der)
            subject_text = csr.subject.rfc4514_string()
            emails = csr_emails(csr)
        except ValueError as exc:
            unreadable = f"not a PKCS#10 request: {exc}"
        order = self.store.new_order(
            account_id[:128] or "-",
            product_id[:128] or "-",
            subject_text[:1024],
            emails,
            (validity or "default")[:16],
            requested_by=requested_by[:256] or "-",
            csr_der=csr_der,
            transaction_id=transaction_id,
            sender_nonce=sender_nonce,
        )
        if csr is None:  # even an unreadable request leaves a FAILED, audited order
            self._refuse(order, unreadable, "bad_request")
        product = self._checked(order, csr, emails, validity)
        if not product.key_generation.allows(server_side_key):
            how = (
                "server-side key generation (PKCS#12)"
                if product.key_generation is KeyGeneration.PKCS12
                else "a CSR of the subscriber's own key"
            )
            self._refuse(order, f"product {product.id} is issued only with {how}", "bad_request")
        return self._proceed(order, csr, product, given_name, surname)

    def _proceed(
        self,
        order: OrderView,
        csr: x509.CertificateSigningRequest,
        product: ProductSettings,
        given_name: str | None,
        surname: str | None,
    ) -> IssueResult:
        """After the checks: wait for mailbox confirmation or an operator, or issue now."""
        unconfirmed = self.unvalidated_emails(order, order.emails)
        if unconfirmed and order.status is not S.PENDING_VALIDATION:
            order = self.store.transition(
                order.id, S.PENDING_VALIDATION,
                "waiting for the mailbox holder: " + ", ".join(unconfirmed),
            )  # fmt: skip
            self.on_pending_validation(order, unconfirmed)
            return IssueResult(order, None, self.chain)
        if unconfirmed:
            return IssueResult(order, None, self.chain)
        if product.approval is Approval.MANUAL:
            order = self.store.transition(
                order.id, S.PENDING_AUTHORIZATION, "waiting for an RA operator"
            )
            return IssueResult(order, None, self.chain)
        return self._issue(order, csr, product, given_name, surname)

    def resume(self, order_id: str, *, actor: str, csr_der: bytes | None = None) -> IssueResult:
        """Go on with an order that waited in PENDING_VALIDATION (its mailboxes are confirmed
        now) or PENDING_CSR_RENEWAL (``csr_der`` is the renewal request): the same checks as
        at submission, then an operator's authorization if the product wants one, else
        issuance. Still unconfirmed mailboxes leave it waiting."""
        order = self.store.get_order(order_id)
        if order.status not in (S.PENDING_VALIDATION, S.PENDING_CSR_RENEWAL):
            raise OrderRefused(
                f"order {order_id} is {order.status.value}, not waiting for a mailbox or a CSR",
                category="bad_request",
                order_id=order_id,
            )
        if csr_der is not None:
            try:  # of two uploads at once only the first is used
                order = self.store.set_csr(order_id, csr_der, first=True)
            except StoreConflict:
                raise OrderRefused(
                    f"order {order_id} has its CSR already",
                    category="bad_request",
                    order_id=order_id,
                ) from None
        if order.csr_der is None:
            raise OrderRefused(
                f"order {order_id} has no CSR yet", category="bad_request", order_id=order_id
            )
        try:
            csr = x509.load_der_x509_csr(order.csr_der)
        except ValueError as exc:
            self._refuse(order, f"not a PKCS#10 request: {exc}", "bad_request")
        validity = None if order.validity == "default" else order.validity
        product = self._checked(order, csr, order.emails, validity)
        return self._proceed(order, csr, product, None, None)

    def approve(
        self,
        order_id: str,
        operator: str,
        *,
        given_name: str | None = None,
        surname: str | None = None,
    ) -> IssueResult:
        """An RA operator authorizes a PENDING_AUTHORIZATION order: it is issued now.

        The order does not keep the personal name given at submission: for a sponsor order
        whose CSR does not carry it, the operator gives the validated name here.
        """
        order = self.store.get_order(order_id)
        if order.status is not S.PENDING_AUTHORIZATION:
            raise OrderRefused(
                f"order {order_id} is {order.status.value}, not waiting for approval",
                category="bad_request",
                order_id=order_id,
            )
        assert order.csr_der is not None
        csr = x509.load_der_x509_csr(order.csr_der)
        product = self._checked(
            order, csr, order.emails, None if order.validity == "default" else order.validity
        )
        self.store.transition(order_id, S.KEY_VALIDATION, "authorized", actor=operator)
        return self._issue(
            self.store.get_order(order_id), csr, product, given_name, surname, validated=True
        )

    def _issue(
        self,
        order: OrderView,
        csr: x509.CertificateSigningRequest,
        product: ProductSettings,
        given_name: str | None,
        surname: str | None,
        *,
        validated: bool = False,
    ) -> IssueResult:
        with working_on(order.id):  # the lost-order clean-up leaves it alone (ca.inflight)
            return self._issue_now(order, csr, product, given_name, surname, validated)

    def _issue_now(
        self,
        order: OrderView,
        csr: x509.CertificateSigningRequest,
        product: ProductSettings,
        given_name: str | None,
        surname: str | None,
        validated: bool,
    ) -> IssueResult:
        account = self.settings.account(order.account)
        assert account is not None
        step = order.status
        # Statuses with no work between them share one transaction (each is recorded).
        steps = (S.GENERATE_TBS,) if validated else (S.KEY_VALIDATION, S.GENERATE_TBS)
        try:
            step = self.store.advance(order.id, *steps)
        except IllegalTransition:
            return self._taken(order.id)
        try:
            validity = self._validity(
                order, product, None if order.validity == "default" else order.validity
            )
            request = IssuanceRequest(
                public_key=csr.public_key(),  # type: ignore[arg-type]
                requested_subject=csr.subject,
                emails=order.emails,
                validity=validity,
                given_name=given_name,
                surname=surname,
            )
            prepared = build_tbs(
                product.profile, request, self.organization(account, order), self.issuing_cert,
                self.endpoints(), now=self.clock(),
            )  # fmt: skip
            changes = list(prepared.changes)
            if changes:
                self.store.record_subject_changes(order.id, changes)
            step = self.store.advance(order.id, S.PRE_VALIDATION)
            self.check_caa(order)
            self.linter.check_prepared(prepared)
            step = self.store.advance(order.id, S.PRE_ISSUE)
            issuer_key = self.keys.load(self.settings.ca.issuing.key_label)
            step = self.store.advance(order.id, S.ISSUE)
            certificate = prepared.sign(issuer_key)
        except ValidityTooLong as exc:
            self._refuse(order, str(exc), "bad_request")
        except (EmailNotAllowed, CaaRefused) as exc:
            self._refuse(order, str(exc), "bad_identity")
        except DnsUnavailable as exc:
            self._refuse(order, f"CAA lookup failed, nothing issued: {exc}", "unavailable")
        except LintFailed as exc:
            self._refuse(order, f"pre-issuance lint failed: {exc}", "bad_request")
        except ProfileError as exc:
            self._refuse(order, str(exc), "bad_request")
        except (KeyBackendError, StoreError) as exc:
            self._refuse(order, f"CA back end unavailable at {step.value}: {exc}", "unavailable")
        except CmcgateError as exc:
            self._refuse(order, f"CA error at {step.value}: {exc}", "internal")
        except Exception as exc:  # noqa: BLE001 - an HSM/library failure: do not strand the order
            self._refuse(
                order, f"CA error at {step.value}: {type(exc).__name__}: {exc}", "internal"
            )
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.store.record_certificate(order.id, der)
        done = self.complete_issuance(order, certificate, product)
        return IssueResult(done, certificate, self.chain)

    def _taken(self, order_id: str) -> IssueResult:
        """Another worker claimed the order first (two mailbox confirmations at once): its
        issuance is not failed from here. The order as it is now (refused when final)."""
        current = self.store.get_order(order_id)
        if current.status is S.ISSUED and current.certificate_serial:
            der = self.store.get_certificate(current.certificate_serial).der
            return IssueResult(current, x509.load_der_x509_certificate(der), self.chain)
        if current.status.is_final:
            text = f"order {order_id} is {current.status.value}"
            raise OrderRefused(text, category="bad_request", order_id=order_id)
        return IssueResult(current, None, self.chain)

    def complete_issuance(
        self,
        order: OrderView,
        certificate: x509.Certificate,
        product: ProductSettings,
        *,
        actor: str = "ca",
    ) -> OrderView:
        """The steps after the stored certificate: POST_VALIDATION (lint again), then
        FINALIZE_ISSUANCE with the LDAP publication jobs, and ISSUED.

        Also how :mod:`ca.recovery` finishes an order a killed CA left in ISSUE or
        POST_VALIDATION. A lint failure revokes the certificate (superseded), fails the
        order and raises OrderRefused.
        """
        if self.store.get_order(order.id).status is S.ISSUE:
            self.store.advance(order.id, S.POST_VALIDATION)
        der = certificate.public_bytes(serialization.Encoding.DER)
        try:
            self.linter.check(der, product.profile)
        except LintFailed as exc:
            self.store.revoke(
                certificate.serial_number, "superseded", by=actor,
                comment="post-issuance lint failed",
            )  # fmt: skip
            self.write_crl()
            self._refuse(order, f"post-issuance lint failed: {exc}", "internal")
        publish = product.publish_ldap and self.settings.ca.ldap is not None
        done = self.store.finish_issuance(
            order.id, [(certificate.serial_number, e) for e in order.emails] if publish else ()
        )
        self.on_issued(done, certificate)
        return done

    def _refuse(self, order: OrderView, reason: str, category: str) -> NoReturn:
        current = self.store.get_order(order.id)
        if not current.status.is_final:
            self.store.fail(order.id, reason)
        raise OrderRefused(reason, category=category, order_id=order.id)


def _nothing(*_args: object) -> None:
    """The default of the RA hooks."""


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CmcgateError(f"{path}: cannot read CA certificate: {exc}") from None
