"""What the gateway does with certificates' revocation status (``cmcgate.gateway.revocationCheck``).

Checked against the issuers' CRLs (:class:`gateway.certs.revocation.CrlChecker`, cached until
``nextUpdate`` in memory and under ``<stateDir>/crl/``):

* every certificate the gateway is about to **encrypt** to, whatever its source (imported,
  harvested from a signature, enrolled, found in LDAP) — :class:`RevocationCheckedCertificates`
  wraps the pipeline's ``Certificates``;
* every **inbound signer**, and the CA certificates on its path, while the signature is
  verified (:meth:`RevocationPolicy.is_revoked` is :func:`gateway.smime.verify`'s
  ``is_revoked``).

Outcomes:

* **revoked** — never used for encryption: the certificate is marked revoked in the store (so
  the recipient's next best certificate, if any, is used; without one the recipient has no
  certificate, and the policy's ``missingCertificate`` applies to ``encrypt: mandatory``); a
  signature by a revoked signer is ``invalid`` (reason ``revoked: <subject>``), its
  certificate is not harvested.
* **CRL unavailable** (a distribution point exists but no current CRL validly signed by the
  issuer could be had): ``soft`` (default, as CipherMail) — the certificate is used and a
  WARNING logged; ``hard`` — :class:`RevocationUnavailable`, a temporary failure: 451 for a
  message that needs the certificate (``encrypt: mandatory``, an inbound signed message);
  with ``encrypt: allow`` that recipient's copy goes unencrypted, as when a directory is down.
* **nothing to check** — no HTTP CRL distribution point, or the issuer's certificate is not
  known (not a trust anchor, not in the store's chain certificates): used, in every mode.
* ``off`` — no CRL is fetched; only revocation marks already in the store count.

Verdicts are kept in memory for as long as the CRLs they came from (at most until their
``nextUpdate``), so the hot path of a message is a dict look-up on the event loop; fetching
runs in worker threads with the configured timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from cmc.errors import TemporaryFailure
from config.model import RevocationCheck
from gateway.certs.models import RevocationStatus, StoreError, fingerprint_of
from gateway.certs.revocation import CrlChecker
from gateway.certs.store import CertStore
from gateway.certs.view import Certificates, DecryptionKey, SigningIdentity

#: how long an answer without a verdict (issuer not known, CRL not reachable) is believed
#: before the store and the CRL are asked again
RECENT_SECONDS = 60.0

log = logging.getLogger("cmcgate.gateway.revocation")

#: how many revoked certificates of one recipient are skipped before giving up on it
MAX_REPLACEMENTS = 4
MAX_VERDICTS = 100_000


class RevocationUnavailable(TemporaryFailure):
    """``revocationCheck=hard`` and a certificate's CRL cannot be had now."""


def describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x})"


class RevocationPolicy:
    """The CRL checker plus what ``mode`` makes of its answers. Thread-safe."""

    def __init__(
        self,
        mode: RevocationCheck = RevocationCheck.SOFT,
        checker: CrlChecker | None = None,
        *,
        issuers: Sequence[x509.Certificate] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.mode = mode
        self._clock = clock or (lambda: datetime.now(UTC))
        self.checker = checker if checker is not None else CrlChecker(clock=self._clock)
        #: trust anchors and intermediates: where issuers are looked for
        self.issuers = tuple(issuers)
        self._verdicts: dict[str, tuple[RevocationStatus, datetime | None]] = {}
        self._lock = threading.Lock()

    def reconfigure(self, mode: RevocationCheck, issuers: Sequence[x509.Certificate]) -> None:
        """A reloaded configuration: a new mode forgets the verdicts (``soft`` let through
        what ``hard`` must not)."""
        with self._lock:
            if mode is not self.mode:
                self._verdicts.clear()
            self.mode = mode
            self.issuers = tuple(issuers)

    def remembered(self, cert: x509.Certificate) -> RevocationStatus | None:
        """The verdict still held in memory for ``cert`` (no I/O), None when there is none."""
        if self.mode is RevocationCheck.OFF:
            return RevocationStatus.UNKNOWN
        with self._lock:
            held = self._verdicts.get(fingerprint_of(cert))
        if held is None:
            return None
        status, until = held
        return status if until is None or until > self._clock() else None

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """``cert``'s status (blocking: may fetch CRLs). Raises :class:`RevocationUnavailable`
        in ``hard`` mode when the CRL cannot be had."""
        if self.mode is RevocationCheck.OFF:
            return RevocationStatus.UNKNOWN
        result = self.checker.check(cert, issuer)
        if result.unavailable:
            trouble = "; ".join(result.failures) or "no current CRL"
            if self.mode is RevocationCheck.HARD:
                raise RevocationUnavailable(
                    f"revocation status of {describe(cert)} unavailable: {trouble}"
                )
            log.warning(
                "revocation status of %s unknown (%s): used anyway (revocationCheck=soft)",
                describe(cert), trouble,
            )  # fmt: skip
        if result.status is RevocationStatus.REVOKED:
            self._remember(cert, result.status, None)  # revocation is final
        elif result.until is not None:
            self._remember(cert, result.status, result.until)
        return result.status

    def is_revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool | None:
        """For :func:`gateway.smime.verify`: True revoked, False good, None unknown."""
        status = self.remembered(cert)
        if status is None:
            status = self.check(cert, issuer)
        if status is RevocationStatus.REVOKED:
            return True
        return False if status is RevocationStatus.GOOD else None

    def issuer_of(
        self, cert: x509.Certificate, candidates: Sequence[x509.Certificate] = ()
    ) -> x509.Certificate | None:
        """The certificate among ``candidates`` and :attr:`issuers` (or ``cert`` itself, when
        self-issued) whose key signed ``cert``."""
        for candidate in (*candidates, *self.issuers, cert):
            if candidate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return candidate
        return None

    def close(self) -> None:
        self.checker.close()

    def _remember(
        self, cert: x509.Certificate, status: RevocationStatus, until: datetime | None
    ) -> None:
        with self._lock:
            if len(self._verdicts) >= MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[fingerprint_of(cert)] = (status, until)


class RevocationCheckedCertificates:
    """``Certificates`` whose encryption certificates pass the :class:`RevocationPolicy`.

    A revoked certificate is marked in the store, the callables in ``forget`` drop the
    address from the caches below (store adapter, LDAP lookup memory), and ``inner`` is asked
    again: it answers with the next best certificate or none. Signing identities, decryption
    keys and harvesting pass through unchanged (harvested signers were checked while their
    signature was verified).
    """

    def __init__(
        self,
        inner: Certificates,
        policy: RevocationPolicy,
        store: CertStore | None = None,
        *,
        forget: Sequence[Callable[[str], object]] = (),
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.store = store
        self.forget = tuple(forget)
        #: certificates whose issuer is not known (CRL not checkable): logged once each
        self._no_issuer: set[str] = set()
        #: the last answer per certificate that the policy keeps no verdict for (issuer not
        #: known, CRL not reachable): believed for RECENT_SECONDS, so that a message does not
        #: cost a store look-up and a CRL attempt each
        self._recent: dict[str, tuple[RevocationStatus, float]] = {}

    def _recent_status(self, cert: x509.Certificate) -> RevocationStatus | None:
        held = self._recent.get(fingerprint_of(cert))
        if held is None or held[1] <= time.monotonic():
            return None
        return held[0]

    def _remember(self, cert: x509.Certificate, status: RevocationStatus) -> None:
        if status is RevocationStatus.REVOKED:
            return
        if len(self._recent) >= MAX_VERDICTS:
            self._recent.clear()
        self._recent[fingerprint_of(cert)] = (status, time.monotonic() + RECENT_SECONDS)

    async def encryption_certificate(self, email: str) -> x509.Certificate | None:
        for _ in range(MAX_REPLACEMENTS):
            cert = await self.inner.encryption_certificate(email)
            if cert is None:
                return None
            status = self.policy.remembered(cert)
            if status is None:
                status = self._recent_status(cert)
            if status is None:
                status = await asyncio.to_thread(self._check, cert)
                self._remember(cert, status)
            if status is not RevocationStatus.REVOKED:
                return cert
            log.warning("certificate %s of %s is revoked: not used", describe(cert), email)
            await asyncio.to_thread(self._mark, cert, RevocationStatus.REVOKED)
            for forget in self.forget:
                forget(email)
        log.warning("%s: %d revoked certificates in a row, none used", email, MAX_REPLACEMENTS)
        return None

    def _check(self, cert: x509.Certificate) -> RevocationStatus:
        chain: Sequence[x509.Certificate] = ()
        if self.store is not None:
            try:
                chain = self.store.chain_above(cert)[:1]
            except StoreError as exc:
                log.warning("chain of %s not read from the store: %s", describe(cert), exc)
        issuer = self.policy.issuer_of(cert, chain)
        if issuer is None:
            fingerprint = fingerprint_of(cert)
            if fingerprint not in self._no_issuer:
                log.info("issuer of %s not known: its CRL cannot be checked", describe(cert))
                if len(self._no_issuer) >= MAX_VERDICTS:
                    self._no_issuer.clear()
                self._no_issuer.add(fingerprint)
            return RevocationStatus.UNKNOWN
        status = self.policy.check(cert, issuer)
        if status is RevocationStatus.GOOD:
            self._mark(cert, status)
        return status

    def _mark(self, cert: x509.Certificate, status: RevocationStatus) -> None:
        if self.store is None:
            return
        try:
            self.store.mark_checked(fingerprint_of(cert), status)
        except StoreError as exc:  # not stored (yet): LDAP finds are stored behind the answer
            log.info("revocation status of %s not recorded: %s", describe(cert), exc)

    async def signing_identity(
        self, email: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        return await self.inner.signing_identity(email, display_name)

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]:
        return await self.inner.decryption_keys(email)

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        await self.inner.harvest(certificates, source)
