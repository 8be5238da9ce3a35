"""What the CA decides before it touches an order: linter policy, key type, CSR addresses,
and the checks of an order against its account and product (:class:`OrderChecks`).

Split out of :mod:`ca.authority` (which re-exports these names).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NoReturn
from urllib.parse import urlsplit

from cryptography import x509

from ca.keys import KeyType
from ca.profiles.builder import check_public_key
from ca.profiles.errors import KeyNotAllowed, ProfileError
from ca.profiles.lint import CertificateLinter
from ca.profiles.types import Organization
from ca.ra.caa import CaaDecision, require_issuemail
from ca.settings.types import AccountSettings, CaSettings, ProductSettings, Validity
from ca.store.model import OrderView
from ca.store.orders import Store
from config.errors import CmcgateError

_linters: dict[frozenset[str], CertificateLinter] = {}
_linters_lock = threading.Lock()


def shared_linter(ignored: frozenset[str] = frozenset()) -> CertificateLinter:
    """pkilint's validators take ~0.7 s to build: one linter per process and policy."""
    with _linters_lock:
        if ignored not in _linters:
            _linters[ignored] = CertificateLinter(ignored_codes=ignored)
        return _linters[ignored]


def uses_internal_urls(base_url: str) -> bool:
    """True for a loopback/private CRL and AIA host, which only a development CA uses."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".test", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def public_key_type(public_key: object) -> KeyType:
    """The KeyType of a public key (RSA by size, EC by curve); ValueError otherwise."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.from_rsa_bits(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyType.from_curve_name(public_key.curve.name)
    raise ValueError(f"{type(public_key).__name__} keys are not supported")


def csr_emails(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    """rfc822Names of the CSR's SAN, else its emailAddress, else an email-like CN."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    if not emails:
        for oid in (x509.NameOID.EMAIL_ADDRESS, x509.NameOID.COMMON_NAME):
            values = [str(a.value) for a in csr.subject.get_attributes_for_oid(oid)]
            emails = [v for v in values if "@" in v]
            if emails:
                break
    return tuple(dict.fromkeys(e.strip().lower() for e in emails))


class OrderChecks:
    """The checks of :class:`ca.authority.CertificateAuthority` before a key is touched."""

    settings: CaSettings
    store: Store
    clock: Callable[[], datetime]

    def _refuse(self, order: OrderView, reason: str, category: str) -> NoReturn:
        raise NotImplementedError

    def _checked(
        self,
        order: OrderView,
        csr: x509.CertificateSigningRequest,
        emails: tuple[str, ...],
        validity: str | None,
    ) -> ProductSettings:
        """Everything that can be refused before a key is touched; fails the order if not."""
        account = self.settings.account(order.account)
        product = self.settings.product(order.product)
        if account is None:
            self._refuse(order, f"unknown account {order.account!r}", "bad_identity")
        if product is None:
            self._refuse(order, f"unknown product {order.product!r}", "bad_identity")
        if account.products and product.id not in account.products:
            self._refuse(
                order,
                f"product {order.product!r} is not available to account {order.account!r}",
                "bad_identity",
            )
        assert account is not None and product is not None
        if not csr.is_signature_valid:
            self._refuse(
                order, "the CSR's signature does not verify (no proof of possession)", "pop_failed"
            )
        try:
            public_key = csr.public_key()
            check_public_key(public_key)  # type: ignore[arg-type]
            key_type = public_key_type(public_key)
        except (KeyNotAllowed, ProfileError, CmcgateError, ValueError) as exc:
            self._refuse(order, f"key not allowed: {exc}", "bad_alg")
        if key_type not in product.key_types:
            allowed = ", ".join(k.value for k in product.key_types)
            self._refuse(
                order,
                f"key type {key_type.value} not allowed for product {product.id}"
                f" (allowed: {allowed})",
                "bad_alg",
            )
        if not emails:
            self._refuse(
                order, "the request names no email address (SAN rfc822Name)", "bad_request"
            )
        if not product.mailbox_validation:
            for email in self.unvalidated_emails(order, emails):
                self._refuse(
                    order,
                    f"email {email} is outside the account's validated domains",
                    "bad_identity",
                )
        self._validity(order, product, validity)
        return product

    # -- identity hooks (the RA service extends these) --------------------------------------
    def email_validated(self, account: AccountSettings, email: str) -> bool:
        """The address lies in one of the account's validated domains: ca.yaml's
        ``email_domains`` (validated by the operator) or a domain the account validated
        through DNS (:mod:`ca.ra.domains`, not lapsed), each with its subdomains."""
        if account.email_allowed(email):
            return True
        domain = email.rpartition("@")[2].strip().lower()
        return bool(domain) and self.store.domain_validated(account.id, domain, self.clock())

    def organization(self, account: AccountSettings, order: OrderView) -> Organization:
        """The account's organisation for the profile builder, whose validated domains are
        ca.yaml's plus those of the order's addresses that :meth:`email_validated` or
        :meth:`mailbox_confirmed` covers (the builder refuses any other address)."""
        org = Organization.from_account(account)
        extra = tuple(
            e.rpartition("@")[2].lower() for e in order.emails
            if not account.email_allowed(e)
            and (self.email_validated(account, e) or self.mailbox_confirmed(order, e))
        )  # fmt: skip
        if not extra:
            return org
        return dataclasses.replace(org, validated_domains=org.validated_domains + extra)

    def check_caa(self, order: OrderView) -> tuple[CaaDecision, ...]:
        """RFC 9495 ``issuemail`` at PRE_VALIDATION for the domain of every address
        (:mod:`ca.ra.caa`); raises CaaRefused or DnsUnavailable, which the authority turns
        into a failed order (badIdentity, resp. try later)."""
        return require_issuemail(self.settings.ra, order.emails)

    def mailbox_confirmed(self, order: OrderView, email: str) -> bool:
        """The holder of ``email`` answered this order's email challenge (mailbox control)."""
        return self.store.mailbox_confirmed(order.id, email)

    def unvalidated_emails(self, order: OrderView, emails: tuple[str, ...]) -> tuple[str, ...]:
        """The order's addresses that neither a validated domain nor a confirmed mailbox
        covers: refused (badIdentity), or, for a product with ``mailbox_validation``, the
        addresses an email challenge must confirm before issuance."""
        account = self.settings.account(order.account)
        if account is None:
            return emails
        return tuple(
            e for e in emails
            if not self.email_validated(account, e) and not self.mailbox_confirmed(order, e)
        )  # fmt: skip

    def _validity(self, order: OrderView, product: ProductSettings, text: str | None) -> timedelta:
        if text is None:
            chosen = product.validities[0]
        else:
            try:
                chosen = Validity.parse(text)
            except ValueError as exc:
                self._refuse(order, str(exc), "bad_request")
            if chosen not in product.validities:
                allowed = ", ".join(v.text for v in product.validities)
                self._refuse(
                    order,
                    f"validity {text} not offered by product {product.id} (allowed: {allowed})",
                    "bad_request",
                )
        now = self.clock()
        return chosen.add_to(now) - now
