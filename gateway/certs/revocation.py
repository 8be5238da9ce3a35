"""Revocation status of looked-up certificates from the CRLs their issuers publish.

:class:`CrlChecker` reads the certificate's CRL distribution points (``http://`` and
``https://`` full names; LDAP URLs are skipped), fetches each CRL with ``requests`` (timeout,
size cap), accepts it only when it is issued and validly signed by the certificate's issuer,
and keeps it in memory until its ``nextUpdate`` (at most :attr:`CrlChecker.max_age`).

The answer is a :class:`~gateway.certs.models.RevocationStatus`:

* ``REVOKED`` — the serial is listed in a validly signed CRL of the issuer (stale or not:
  revocation is final);
* ``GOOD`` — not listed in a CRL that is current (``nextUpdate`` not passed);
* ``UNKNOWN`` — no distribution point, none reachable, none validly signed, or only a stale
  CRL. Policy: the caller uses the certificate anyway (as CipherMail does by default) and
  records the status as unknown; a CRL that cannot be fetched is asked again after
  :attr:`CrlChecker.failure_ttl`, not on every message.

Thread-safe: lookups run in worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from config.errors import CmcgateError
from gateway.certs.models import RevocationStatus

log = logging.getLogger("cmcgate.gateway.revocation")

MAX_CRL_BYTES = 20 * 1024 * 1024
_ISSUER_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


class CrlUnavailable(CmcgateError):
    """A CRL could not be fetched, parsed or trusted (the status is then unknown)."""


@dataclass(frozen=True)
class _Cached:
    crl: x509.CertificateRevocationList | None  # None: the last fetch failed
    until: datetime


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The HTTP(S) URLs of the certificate's CRL distribution points, in order."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                url = str(name.value)
                if url.lower().startswith(("http://", "https://")) and url not in urls:
                    urls.append(url)
    return urls


class CrlChecker:
    """Revocation status from CRLs over HTTP, with a small in-memory cache per URL."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_age: timedelta = timedelta(hours=24),
        failure_ttl: timedelta = timedelta(minutes=5),
        stale_ttl: timedelta = timedelta(minutes=5),
        max_bytes: int = MAX_CRL_BYTES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_age = max_age
        self.failure_ttl = failure_ttl
        self.stale_ttl = stale_ttl
        self.max_bytes = max_bytes
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()
        #: HTTP fetches made (cache misses), for tests and benchmarks.
        self.fetches = 0

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """The revocation status of ``cert`` issued by ``issuer`` (see the module doc)."""
        now = self._clock()
        current = False
        for url in crl_urls(cert):
            crl = self._crl(url, issuer, now)
            if crl is None:
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return RevocationStatus.REVOKED
            next_update = crl.next_update_utc
            current = current or next_update is None or next_update >= now
        return RevocationStatus.GOOD if current else RevocationStatus.UNKNOWN

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        self._session.close()

    def _crl(
        self, url: str, issuer: x509.Certificate, now: datetime
    ) -> x509.CertificateRevocationList | None:
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached.until > now:
            if cached.crl is None or cached.crl.issuer == issuer.subject:
                return cached.crl
        try:
            crl = self._fetch(url, issuer)
        except CrlUnavailable as exc:
            log.warning("CRL %s: %s (revocation status unknown)", url, exc)
            with self._lock:
                self._cache[url] = _Cached(None, now + self.failure_ttl)
            return None
        next_update = crl.next_update_utc
        if next_update is not None and next_update > now:
            until = min(next_update, now + self.max_age)
        else:  # stale or without nextUpdate: ask again soon
            until = now + self.stale_ttl
        with self._lock:
            self._cache[url] = _Cached(crl, until)
        return crl

    def _fetch(self, url: str, issuer: x509.Certificate) -> x509.CertificateRevocationList:
        self.fetches += 1
        try:
            with self._session.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise CrlUnavailable(f"HTTP {response.status_code}")
                data = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise CrlUnavailable(f"larger than {self.max_bytes} bytes")
        except requests.RequestException as exc:
            raise CrlUnavailable(f"cannot fetch: {exc.__class__.__name__}: {exc}") from None
        crl = _parse(bytes(data))
        if crl.issuer != issuer.subject:
            raise CrlUnavailable(
                f"issued by {crl.issuer.rfc4514_string()}, not {issuer.subject.rfc4514_string()}"
            )
        key = issuer.public_key()
        if not isinstance(key, _ISSUER_KEYS):
            raise CrlUnavailable(f"issuer key type {type(key).__name__} cannot sign a CRL")
        try:
            valid = crl.is_signature_valid(key)
        except (TypeError, ValueError) as exc:
            raise CrlUnavailable(f"signature cannot be checked: {exc}") from None
        if not valid:
            raise CrlUnavailable("signature does not verify with the issuer's key")
        return crl


def _parse(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlUnavailable(f"not a CRL: {exc}") from None
