"""Server-side key generation with PKCS#12 pick-up (RA manual 3.4.3, "PKCS#12" products).

The manual's PKCS#12 policy type: the CA makes the subscriber's key pair, issues the
certificate and hands out key + certificate + chain as a PKCS#12 protected by a PIN; the PIN
and the download link are mailed separately, the file can be downloaded until it is picked
up and is purged after three months (``ra.pkcs12.retention_days``, default 90).

There is one issuance path: the key signs a CSR that goes through
:meth:`CertificateAuthority.submit` like any subscriber's request, with the same checks,
statuses and audit records. The private key lives only in this process's memory; what is
stored is the PKCS#12 encrypted with the PIN (AES-256-CBC, PBKDF2-HMAC-SHA256, HMAC-SHA256
MAC), and of the one-time pick-up token only its SHA-256.

An order that would wait (an email challenge to answer, an RA operator to approve) is refused
*before* a key exists: keeping a key for days until someone acts would mean storing it, and a
key made later would not match the CSR the waiting order holds. So server-side key generation
needs every address in a validated domain and a product approved automatically (403 / 409);
a subscriber outside them orders with a CSR.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.authority import OrderRefused
from ca.keys import KeyType
from ca.periodic import add_periodic
from ca.ra.errors import RaError
from ca.settings.types import Approval
from ca.store.notifications import NotificationStatus
from ca.store.p12 import PickupGone, Pkcs12View, UnknownPickup
from config.errors import CmcgateError

if TYPE_CHECKING:
    from aiohttp import web

    from ca.authority import CertificateAuthority

log = logging.getLogger(__name__)

#: PIN alphabet: no 0/O, 1/I/L look-alikes; 12 characters ≈ 60 bits
PIN_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PIN_LENGTH = 12
PBKDF2_ROUNDS = 200_000
PICKUP_PATH = "/pki/api/v2/p12/"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")


class Notifier(Protocol):
    """What the RA's mail notifier (:mod:`ca.ra.notify`) offers its callers."""

    def send(
        self,
        kind: str,
        recipient: str,
        *,
        order_id: str | None = None,
        serial: str | None = None,
        **fields: Any,
    ) -> object: ...


class KeygenError(RaError):
    """Server-side key generation or a pick-up refused; ``status`` is the HTTP answer."""


@dataclass(frozen=True)
class KeygenResult:
    """An issued server-side-key order: no key, no PIN, no token (those went by mail)."""

    order_id: str
    status: str
    serial: str
    key_type: str
    certificate_der: bytes
    pkcs12: Pkcs12View
    pickup_expires: datetime


def new_pin() -> str:
    return "".join(secrets.choice(PIN_ALPHABET) for _ in range(PIN_LENGTH))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def generate_key(key_type: KeyType) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type.is_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_bits)
    return ec.generate_private_key(key_type.curve)


def build_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, emails: tuple[str, ...], subject: str
) -> bytes:
    name = x509.Name.from_rfc4514_string(subject)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def encrypt_pkcs12(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    chain: tuple[x509.Certificate, ...],
    friendly_name: str,
    pin: str,
) -> bytes:
    """Key + certificate + chain, encrypted with ``pin`` (AES-256-CBC / PBKDF2-SHA256)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(PBKDF2_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(pin.encode("ascii"))
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode("utf-8"), key, certificate, list(chain), encryption
    )


class KeygenService:
    """Orders with a server-made key, their PKCS#12 pick-up and purge."""

    def __init__(self, ca: CertificateAuthority, notifier: Notifier) -> None:
        self.ca = ca
        self.notifier = notifier

    def order(
        self,
        account: str,
        product: str,
        emails: str | tuple[str, ...] | list[str],
        *,
        requested_by: str,
        validity: str | None = None,
        given_name: str | None = None,
        surname: str | None = None,
        subject: str | None = None,
        key_type: KeyType | str | None = None,
    ) -> KeygenResult:
        """Make a key, order its certificate through ``ca.submit`` and mail PIN and link."""
        if isinstance(emails, str):
            emails = [emails]
        addresses = tuple(dict.fromkeys(str(e).strip().lower() for e in emails if str(e).strip()))
        if not addresses or any(not re.fullmatch(r"[^@\s]+@[^@\s]+", e) for e in addresses):
            raise KeygenError("give at least one email address (local@domain)", status=400)
        chosen = self._preflight(account, product, addresses, key_type)
        key = generate_key(chosen)
        try:
            csr_der = build_csr(key, addresses, subject or f"CN={addresses[0]}")
        except ValueError as exc:
            raise KeygenError(f"subject {subject!r}: {exc}", status=400) from None
        try:
            result = self.ca.submit(
                csr_der, account, product, validity, requested_by=requested_by,
                given_name=given_name, surname=surname, server_side_key=True,
            )  # fmt: skip
        except OrderRefused as exc:
            raise KeygenError(str(exc), status=exc.http_status, order_id=exc.order_id) from None
        if result.certificate is None:  # a domain validation lapsed since the preflight
            reason = f"server-side key generation cannot wait ({result.order.status.value})"
            self.ca.store.fail(result.order.id, reason + "; the key was discarded")
            raise KeygenError(reason, status=409, order_id=result.order.id)
        pin = new_pin()
        p12 = encrypt_pkcs12(key, result.certificate, result.chain, addresses[0], pin)
        del key  # nothing else refers to it; it was never serialised unencrypted
        token = secrets.token_urlsafe(32)
        now = self.ca.clock()
        view = self.ca.store.store_pkcs12(
            result.order.id, token_digest(token), addresses[0], p12, actor=requested_by, now=now
        )
        expires = now + timedelta(days=self.ca.settings.ra.pkcs12.retention_days)
        self._mail(result.order.id, addresses[0], pin, token, expires, result.certificate)
        return KeygenResult(
            order_id=result.order.id,
            status=result.order.status.value,
            serial=format(result.certificate.serial_number, "x"),
            key_type=chosen.value,
            certificate_der=result.certificate.public_bytes(serialization.Encoding.DER),
            pkcs12=view,
            pickup_expires=expires,
        )

    def _preflight(
        self, account_id: str, product_id: str, emails: tuple[str, ...], wanted: object
    ) -> KeyType:
        """Everything that would make the order wait or fail, checked before a key exists."""
        account = self.ca.settings.account(account_id)
        product = self.ca.settings.product(product_id)
        if account is None:
            raise KeygenError(f"unknown account {account_id!r}", status=404)
        if product is None or (account.products and product.id not in account.products):
            raise KeygenError(
                f"product {product_id!r} is not available to {account_id}", status=404
            )
        if not product.key_generation.allows(True):
            raise KeygenError(f"product {product.id} takes a CSR, not server-side key "
                              "generation (key_generation: csr)", status=400)  # fmt: skip
        if product.approval is Approval.MANUAL:
            raise KeygenError(
                f"product {product.id} needs an RA operator's approval; a server-made key "
                "cannot wait for it: order with a CSR",
                status=409,
            )
        outside = [e for e in emails if not self.ca.email_validated(account, e)]
        if outside:
            raise KeygenError(
                "not in a validated domain of the account: " + ", ".join(outside)
                + " (server-side key generation cannot wait for an email challenge)",
                status=403,
            )  # fmt: skip
        if wanted is None:
            return product.key_types[0]
        try:
            key_type = KeyType.parse(str(wanted))
        except CmcgateError as exc:
            raise KeygenError(str(exc), status=400) from None
        if key_type not in product.key_types:
            allowed = ", ".join(k.value for k in product.key_types)
            raise KeygenError(f"key type {key_type.value} not offered by product {product.id} "
                              f"(allowed: {allowed})", status=400)  # fmt: skip
        return key_type

    def _mail(
        self,
        order_id: str,
        email: str,
        pin: str,
        token: str,
        expires: datetime,
        certificate: x509.Certificate,
    ) -> None:
        """PIN and link in two mails. If either cannot be sent, nobody can ever open the
        PKCS#12 (neither PIN nor token is kept): it is purged and its certificate revoked."""
        url = self.ca.settings.ra.link_base() + PICKUP_PATH + token
        try:
            _delivered(self.notifier.send("p12_pin", email, order_id=order_id, pin=pin))
            _delivered(self.notifier.send(
                "p12_pickup", email, order_id=order_id, url=url,
                expires=expires.isoformat().replace("+00:00", "Z"),
            ))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any mail failure strands the key: undo
            self.ca.store.purge_pkcs12(self.ca.clock() + timedelta(days=1), only=order_id)
            self.ca.revoke(
                certificate.serial_number, "cessationOfOperation", by="ca",
                comment="the PKCS#12 PIN or link could not be mailed",
            )  # fmt: skip
            raise KeygenError(
                f"the PKCS#12 could not be mailed ({exc}); its certificate was revoked",
                status=503, order_id=order_id,
            ) from None  # fmt: skip

    # -- pick-up and purge -----------------------------------------------------------------
    def pickup(self, token: str) -> bytes:
        """The PKCS#12 behind a mailed link, once (404 unknown; 410 picked up, purged or
        past ``ra.pkcs12.retention_days``)."""
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
            raise KeygenError("no PKCS#12 for this link", status=404)
        try:
            now = self.ca.clock()
            retention = timedelta(days=self.ca.settings.ra.pkcs12.retention_days)
            return self.ca.store.take_pkcs12(
                token_digest(token), created_after=now - retention, now=now
            )
        except UnknownPickup as exc:
            raise KeygenError(str(exc), status=404) from None
        except PickupGone as exc:
            raise KeygenError(str(exc), status=410) from None

    def purge_due(self, now: datetime | None = None) -> int:
        """Purge PKCS#12 files older than ``ra.pkcs12.retention_days``; how many."""
        return purge_expired(self.ca, now)

    def status(self, order_id: str) -> Pkcs12View:
        view = self.ca.store.pkcs12_of(order_id)
        if view is None:
            raise KeygenError(f"order {order_id} has no server-generated PKCS#12", status=404)
        return view


def p12_pickup_handler(
    get_service: Callable[[], KeygenService],
) -> Callable[[web.Request], Any]:
    """``GET /pki/api/v2/p12/{token}`` for the REST app; the token in the link is the only
    credential (no JWT). Errors are RFC 9457 problem+json."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        loop = asyncio.get_running_loop()
        try:
            p12 = await loop.run_in_executor(None, get_service().pickup, token)
        except KeygenError as exc:
            return problem(exc.status, str(exc))
        except CmcgateError as exc:
            return problem(503, f"PKCS#12 pick-up is not available now: {exc}")
        return web.Response(
            body=p12, content_type="application/x-pkcs12",
            headers={"Content-Disposition": 'attachment; filename="certificate.p12"',
                     "Cache-Control": "no-store"},
        )  # fmt: skip

    return handle


def _delivered(sent: object) -> None:
    """The notifier records an SMTP failure (a FAILED row, :mod:`ca.ra.notify`) rather than
    raising it: raise it here, a PIN or link that did not leave strands the PKCS#12."""
    status = getattr(sent, "status", None)
    if status is not None and status != NotificationStatus.SENT:
        error = getattr(sent, "last_error", None) or f"not sent ({status})"
        raise CmcgateError(str(error))


def problem(status: int, detail: str) -> web.Response:
    from aiohttp import web

    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail}  # fmt: skip
    return web.json_response(body, status=status, content_type="application/problem+json")


def purge_expired(ca: CertificateAuthority, now: datetime | None = None) -> int:
    """Delete the bytes of PKCS#12 files made more than ``ra.pkcs12.retention_days`` ago
    (the manual's three months) and not picked up; how many."""
    at = now or ca.clock()
    return ca.store.purge_pkcs12(at - timedelta(days=ca.settings.ra.pkcs12.retention_days), now=at)


def schedule_p12_purge(scheduler: Any, get_ca: Callable[[], CertificateAuthority]) -> None:
    """Daily purge of PKCS#12 files nobody picked up within the retention period."""

    add_periodic(scheduler, "ra-p12-purge", "PKCS#12 purge", lambda: purge_expired(get_ca()),
                 hours=24)  # fmt: skip


__all__ = [
    "KeygenError",
    "KeygenResult",
    "KeygenService",
    "Notifier",
    "p12_pickup_handler",
    "purge_expired",
    "schedule_p12_purge",
]
