"""Finding external recipients' encryption certificates: memory, the store, then LDAP.

:meth:`RecipientLookup.find` answers, in this order:

1. **memory** — positive entries (kept until the certificate's ``notAfter`` minus
   ``expiry_margin``) and negative ones (until the "missing" entry runs out), both re-read
   from the store at least every ``recheck`` so that an operator's import, removal or
   revocation mark is seen. A hit is a dict look-up: microseconds, no thread, no I/O.
2. **the store** (one read in a worker thread) — the newest usable certificate of any source
   (imported, enrolled, harvested, an earlier LDAP find), else the "missing" table.
3. **each configured directory** in configuration order (:mod:`gateway.certs.ldap`).
   Candidates, most preferred first (can encrypt, newest ``notBefore``, latest ``notAfter``),
   are used only if: the address is one of their rfc822Name SANs; they can encrypt
   (emailProtection, and keyEncipherment with an RSA key or keyAgreement with an EC key: RSA
   key transport or ECDH, :mod:`gateway.smime.recipients`);
   :func:`cmc.messages.cms.verify_chain` finds a path to a trust anchor valid now; neither the
   store nor the CRL (:class:`gateway.certs.revocation_policy.RevocationPolicy`) says revoked.
   An unreachable CRL means status *unknown*: with ``revocationCheck=soft`` (the
   default, CipherMail's) the certificate **is** used, with ``hard`` the lookup is a
   temporary failure. The first that passes is returned, cached in memory and — behind the
   answer, in one writer thread (:meth:`RecipientLookup.flush` waits for it) — added to the
   store with source ``ldap`` and its revocation status.

Nothing usable in any directory → the address is remembered as missing for ``negative_ttl``
(memory, and the store's table): later lookups do not ask LDAP. A directory that cannot be
asked while no other one had a usable certificate → :class:`DirectoryUnavailable`, a
:class:`cmc.errors.TemporaryFailure`: nothing is remembered, the pipeline answers 451. A
stored certificate that expires within ``expiry_margin`` is still used, but the directories
are asked for its renewal first (failing that, the stored one is used).

``security.pkiConnection.getFromPKIForNewRecipients=true`` adds the PKI's own directory
(``cmcgate.pki.directory.*``: where SwissSign, or the bundled CA, publishes the certificates it
issues) after the ``cmcgate.lookup.ldap.*`` directories; ``false`` leaves it out, and the
PKI is not asked for recipients at all.  CMC itself cannot serve this: RFC 5272 has no
search by address (getCert needs the issuer and serial number, which the gateway does not
know for a new recipient).  Intermediate CA certificates for the path come from
``intermediates`` and from the store's chain table (:meth:`CertStore.issuers_above`).

:class:`LookupCertificates` puts this behind the pipeline's ``Certificates`` protocol.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cmc import errors as cmc_errors
from cmc.errors import TemporaryFailure
from cmc.messages.cms import verify_chain
from config.errors import CmcgateError
from config.model import LdapDirectory, RevocationCheck
from gateway.certs.ldap import DirectoryClient, DirectoryUnavailable
from gateway.certs.models import (
    ENCRYPTION_ALGORITHMS,
    CertificateRecord,
    RevocationStatus,
    Source,
    StoreError,
    certificate_facts,
    normalise_email,
)
from gateway.certs.revocation import CrlChecker
from gateway.certs.revocation_policy import RevocationPolicy
from gateway.certs.store import CertStore
from gateway.certs.view import Certificates, DecryptionKey, SigningIdentity

log = logging.getLogger("cmcgate.gateway.lookup")


class NotAnAddress(CmcgateError):
    """The recipient to look up is not an e-mail address."""


# -- the lookup --------------------------------------------------------------------------------
class RecipientLookup:
    """Encryption certificates for recipients: memory, store, LDAP (see the module doc)."""

    def __init__(
        self,
        store: CertStore,
        directories: Sequence[LdapDirectory],
        *,
        trust_anchors: Sequence[x509.Certificate],
        negative_ttl: timedelta,
        intermediates: Sequence[x509.Certificate] = (),
        clock: Callable[[], datetime] | None = None,
        revocation: RevocationPolicy | CrlChecker | None = None,
        expiry_margin: timedelta = timedelta(days=1),
        recheck: timedelta = timedelta(minutes=5),
        pool_size: int = 4,
        max_entries: int = 200_000,
    ) -> None:
        self.store = store
        self.directories = [DirectoryClient(d, pool_size) for d in directories]
        self.trust_anchors = tuple(trust_anchors)
        self.intermediates = tuple(intermediates)
        self.negative_ttl = negative_ttl
        self.expiry_margin = expiry_margin
        self.recheck = recheck
        self.max_entries = max_entries
        self._clock = clock or (lambda: datetime.now(UTC))
        if not isinstance(revocation, RevocationPolicy):
            revocation = RevocationPolicy(RevocationCheck.SOFT, revocation, clock=self._clock)
        self.revocation = revocation
        self._positive: dict[str, tuple[x509.Certificate, datetime]] = {}
        self._negative: dict[str, datetime] = {}
        self._inflight: dict[str, asyncio.Future[x509.Certificate | None]] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="cmcgate-lookup-store")

    @property
    def searches(self) -> int:
        """LDAP searches sent so far, over all directories."""
        return sum(d.searches for d in self.directories)

    def peek(self, email: str) -> tuple[bool, x509.Certificate | None]:
        """From memory only: ``(True, cert)``, ``(True, None)`` if known missing, or
        ``(False, None)`` when memory does not know."""
        key = email.strip().lower()
        now = self._clock()
        hit = self._positive.get(key)
        if hit is not None and hit[1] > now:
            return True, hit[0]
        until = self._negative.get(key)
        if until is not None and until > now:
            return True, None
        return False, None

    async def find(self, email: str) -> x509.Certificate | None:
        """The certificate to encrypt to ``email``, or None when there is none anywhere.

        Raises :class:`DirectoryUnavailable` (a ``TemporaryFailure``) when a directory that
        had to be asked could not be, ``TemporaryFailure`` when the store cannot be read.
        """
        known, cert = self.peek(email)
        if known:
            return cert
        try:
            key = normalise_email(email)
        except StoreError as exc:
            raise NotAnAddress(str(exc)) from None
        future = self._inflight.get(key)
        if future is None:  # concurrent lookups of one address share one resolution
            future = asyncio.ensure_future(asyncio.to_thread(self._resolve, key))
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    def forget(self, *emails: str) -> None:
        """Drop what memory knows about these addresses (a certificate arrived, was removed)."""
        for email in emails:
            key = email.strip().lower()
            self._positive.pop(key, None)
            self._negative.pop(key, None)

    def flush(self) -> None:
        """Wait until the store writes queued so far are done."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        for directory in self.directories:
            directory.close()
        self.revocation.close()

    # -- slow path, in a worker thread ---------------------------------------------------------
    def _resolve(self, key: str) -> x509.Certificate | None:
        now = self._clock()
        try:
            records = self.store.find(email=key)
            record = _best(records, now)
            # missing for the whole recheck interval: memory may say so; missing for less:
            # answer from the store each time (it has no "until when" query)
            later = now + self.recheck
            long = record is None and self.store.is_known_missing(key, at=later)
            short = record is None and not long and self.store.is_known_missing(key, at=now)
        except StoreError as exc:
            raise TemporaryFailure(f"certificate store: {exc}") from exc
        if record is not None and record.not_after - self.expiry_margin > now:
            return self._remember(key, record.certificate, now)
        if long or (record is None and not self.directories):
            self._missing(key, later)
            return None
        if short:
            return None
        revoked = {r.fingerprint for r in records if r.revocation is RevocationStatus.REVOKED}
        try:
            found = self._ask_directories(key, now, revoked)
        except TemporaryFailure:
            if record is None:
                raise
            log.warning("%s: no renewal lookup possible; the stored certificate is used", key)
            found = None
        if found is None and record is not None:  # expiring soon and no renewal: keep it
            return self._remember(key, record.certificate, now)
        if found is None:
            self._later(key, lambda: self.store.remember_missing(key, self.negative_ttl, at=now))
            self._missing(key, min(later, now + self.negative_ttl))
            return None
        return self._remember(key, found, now)

    def _remember(self, key: str, cert: x509.Certificate, now: datetime) -> x509.Certificate:
        not_after = cert.not_valid_after_utc
        until = min(not_after - self.expiry_margin, now + self.recheck)
        if until <= now:  # expiring within the margin: the renewal is looked for each recheck
            until = min(not_after, now + self.recheck)
        self._negative.pop(key, None)
        _bounded(self._positive, self.max_entries, lambda v: v[1] > now)
        self._positive[key] = (cert, until)
        return cert

    def _missing(self, key: str, until: datetime) -> None:
        now = self._clock()
        self._positive.pop(key, None)
        _bounded(self._negative, self.max_entries, lambda v: v > now)
        self._negative[key] = until

    def _later(self, key: str, write: Callable[[], object]) -> None:
        """Store writes happen behind the answer: they only keep what was learned."""

        def run() -> None:
            try:
                write()
            except StoreError as exc:
                log.warning("%s: the store did not keep the lookup result: %s", key, exc)

        self._writer.submit(run)

    def _ask_directories(
        self, key: str, now: datetime, revoked: set[str]
    ) -> x509.Certificate | None:
        trouble: list[DirectoryUnavailable] = []
        for directory in self.directories:
            try:
                values = directory.certificates(key)
            except DirectoryUnavailable as exc:
                log.warning("%s", exc)
                trouble.append(exc)
                continue
            cert = self._choose(directory.settings.name, key, values, now, revoked)
            if cert is not None:
                return cert
        if trouble:
            raise trouble[0]
        return None

    def _choose(
        self, source: str, key: str, values: Sequence[bytes], now: datetime, revoked: set[str]
    ) -> x509.Certificate | None:
        candidates = []
        for der in values:
            try:
                candidates.append(x509.load_der_x509_certificate(der))
            except ValueError as exc:
                log.info("ldap %s: %s: a value is not a certificate: %s", source, key, exc)
        candidates.sort(key=_preference, reverse=True)
        for cert in candidates:
            why, status = self._judge(cert, key, now, revoked)
            if why is not None:
                log.info(
                    "ldap %s: %s: certificate %x (%s) not used: %s",
                    source, key, cert.serial_number, cert.issuer.rfc4514_string(), why,
                )  # fmt: skip
                continue
            log.info("ldap %s: %s: certificate %x found", source, key, cert.serial_number)
            self._later(key, functools.partial(self._store, cert, status, now))
            return cert
        return None

    def _judge(
        self, cert: x509.Certificate, key: str, now: datetime, revoked: set[str]
    ) -> tuple[str | None, RevocationStatus]:
        """Why ``cert`` must not be used for ``key`` now (None when it may), and its
        revocation status."""
        unknown = RevocationStatus.UNKNOWN
        facts = certificate_facts(cert)
        if key not in _san_emails(cert):
            return f"{key} is not among its rfc822Name SANs", unknown
        if facts.is_ca:
            return "it is a CA certificate", unknown
        if not facts.can_encrypt or facts.key_algorithm not in ENCRYPTION_ALGORITHMS:
            return f"not usable for encryption (key {facts.key_algorithm}, EKU/key usage)", unknown
        if facts.fingerprint in revoked:
            return "revoked (marked in the store)", RevocationStatus.REVOKED
        intermediates = [*self.intermediates, *self._stored_issuers(cert)]
        try:
            path = verify_chain(
                cert, intermediates, self.trust_anchors, at=now,
                required_eku=ExtendedKeyUsageOID.EMAIL_PROTECTION,
            )  # fmt: skip
        except cmc_errors.CmcError as exc:
            return f"untrusted: {exc}", unknown
        # hard mode, CRL unavailable: RevocationUnavailable (a TemporaryFailure) goes up
        status = self.revocation.check(cert, path[1] if len(path) > 1 else cert)
        if status is RevocationStatus.REVOKED:
            return "revoked (CRL)", status
        return None, status

    def _stored_issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """CA certificates the store keeps (chains of enrolled, imported, harvested ones): the
        PKI's issuing CA is there once a user was enrolled, though only its root is trusted."""
        try:
            return self.store.issuers_above(cert)
        except StoreError as exc:
            log.warning("%s: stored CA certificates unreadable: %s", cert.subject, exc)
            return []

    def _store(self, cert: x509.Certificate, status: RevocationStatus, now: datetime) -> None:
        record = self.store.add(cert, Source.LDAP, at=now)
        if status is not RevocationStatus.UNKNOWN and record.revocation is not status:
            self.store.mark_checked(record.fingerprint, status, at=now)


def _best(records: Sequence[CertificateRecord], now: datetime) -> CertificateRecord | None:
    """What :meth:`CertStore.best_for_encryption` picks, from records already read."""
    usable = [
        r
        for r in records
        if r.is_valid_at(now) and r.can_encrypt and r.key_algorithm in ENCRYPTION_ALGORITHMS
    ]
    return max(usable, key=lambda r: (r.not_before, r.not_after), default=None)


def _bounded(cache: dict[str, Any], limit: int, alive: Callable[[Any], bool]) -> None:
    """Make room in a memory cache: drop expired entries, everything if that is not enough."""
    if len(cache) < limit:
        return
    for key in [k for k, v in list(cache.items()) if not alive(v)]:
        del cache[key]
    if len(cache) >= limit:
        cache.clear()


def _preference(cert: x509.Certificate) -> tuple[bool, datetime, datetime]:
    facts = certificate_facts(cert)
    usable = facts.can_encrypt and facts.key_algorithm in ENCRYPTION_ALGORITHMS
    return usable, cert.not_valid_before_utc, cert.not_valid_after_utc


def _san_emails(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return set()
    return {str(v).strip().lower() for v in san.get_values_for_type(x509.RFC822Name)}


# -- behind the pipeline's Certificates protocol -----------------------------------------------
class LookupCertificates:
    """``Certificates`` that asks ``inner`` first and, for an unknown recipient, the lookup.

    Memory answers before ``inner`` (so the hot path does no store query); signing identities
    and decryption keys come from ``inner`` alone. Harvested certificates make memory forget
    their addresses, so a recipient cached as missing is found at once.
    """

    def __init__(self, inner: Certificates, lookup: RecipientLookup) -> None:
        self.inner = inner
        self.lookup = lookup

    async def encryption_certificate(self, email: str) -> x509.Certificate | None:
        known, cert = self.lookup.peek(email)
        if known:
            return cert
        cert = await self.inner.encryption_certificate(email)
        if cert is not None:
            return cert
        try:
            return await self.lookup.find(email)
        except NotAnAddress:
            return None

    async def signing_identity(
        self, email: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        return await self.inner.signing_identity(email, display_name=display_name)

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]:
        return await self.inner.decryption_keys(email)

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        await self.inner.harvest(certificates, source)
        self.lookup.forget(*(e for c in certificates for e in _san_emails(c)))
