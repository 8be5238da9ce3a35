"""Revocation status of certificates from the CRLs their issuers publish.

:class:`CrlChecker` reads the certificate's CRL distribution points (``http://`` and
``https://`` full names; LDAP URLs are skipped), fetches each CRL with ``requests`` (timeout,
size cap), accepts it only when it is issued and validly signed by the certificate's issuer,
and keeps it until its ``nextUpdate`` (at most :attr:`CrlChecker.max_age`): in memory and,
with ``cache_dir``, as a file ``<cache_dir>/<sha256 of the URL>.crl`` that a restarted
gateway (or another worker process) uses instead of fetching again while it is current.
Concurrent misses of one URL share one fetch; a CRL whose ``nextUpdate`` comes within
:attr:`CrlChecker.refresh_ahead` is fetched again in a background thread while the cached one
keeps answering.

The answer is a :class:`CrlResult` whose ``status`` is a
:class:`~gateway.certs.models.RevocationStatus`:

* ``REVOKED`` — the serial is listed in a validly signed CRL of the issuer (stale or not:
  revocation is final);
* ``GOOD`` — not listed in a CRL that is current (``nextUpdate`` not passed);
* ``UNKNOWN`` — no distribution point, or (``unavailable``) none reachable, none validly
  signed, or only a stale CRL. What the caller does then is its policy
  (:mod:`gateway.certs.revocation_policy`: ``cmcgate.gateway.revocationCheck``); a CRL that cannot
  be fetched is asked again after :attr:`CrlChecker.failure_ttl`, not on every message.

Blocking (HTTP) and thread-safe: async callers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from config.errors import CmcgateError
from config.files import write_atomically
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
    revoked: frozenset[int] = frozenset()  # the CRL's serials, for O(1) answers
    why: str = ""  # why the last fetch failed


@dataclass(frozen=True)
class CrlResult:
    """A certificate's status, the CRL trouble met on the way, and how long it holds."""

    status: RevocationStatus
    urls: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()  # "URL: why" for each CRL that could not be used
    until: datetime | None = None  # the answer may be reused until then (None: do not)

    @property
    def unavailable(self) -> bool:
        """Distribution points exist but none gave a current, trustworthy CRL."""
        return self.status is RevocationStatus.UNKNOWN and bool(self.urls)


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
    """Revocation status from CRLs over HTTP, cached per URL (memory, optionally files)."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_age: timedelta = timedelta(hours=24),
        failure_ttl: timedelta = timedelta(minutes=5),
        stale_ttl: timedelta = timedelta(minutes=5),
        refresh_ahead: timedelta = timedelta(minutes=10),
        max_bytes: int = MAX_CRL_BYTES,
        cache_dir: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_age = max_age
        self.failure_ttl = failure_ttl
        self.stale_ttl = stale_ttl
        self.refresh_ahead = refresh_ahead
        self.max_bytes = max_bytes
        self.cache_dir = cache_dir
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}
        self._refreshing: set[str] = set()
        self._background = ThreadPoolExecutor(1, thread_name_prefix="cmcgate-crl-refresh")
        self._local = threading.local()  # one requests.Session per thread
        self._sessions: list[requests.Session] = []
        #: HTTP fetches made (cache misses and refreshes), for tests and benchmarks.
        self.fetches = 0

    def status(self, cert: x509.Certificate, issuer: x509.Certificate) -> RevocationStatus:
        """The revocation status of ``cert`` issued by ``issuer`` (see the module doc)."""
        return self.check(cert, issuer).status

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> CrlResult:
        """Status, CRL failures and validity of the answer for ``cert`` issued by ``issuer``."""
        now = self._clock()
        urls = tuple(crl_urls(cert))
        current, failures, until = False, [], now + self.max_age
        for url in urls:
            cached = self._crl(url, issuer, now)
            until = min(until, cached.until)
            if cached.crl is None:
                failures.append(f"{url}: {cached.why}")
                continue
            if cert.serial_number in cached.revoked:
                return CrlResult(RevocationStatus.REVOKED, urls, tuple(failures), until)
            next_update = cached.crl.next_update_utc
            if next_update is None or next_update >= now:
                current = True
            else:
                failures.append(f"{url}: stale (nextUpdate {next_update:%Y-%m-%d %H:%M} UTC)")
        status = RevocationStatus.GOOD if current else RevocationStatus.UNKNOWN
        return CrlResult(status, urls, tuple(failures), until if urls else None)

    def wait_for_refreshes(self) -> None:
        """Wait until the background refreshes started so far are done."""
        self._background.submit(lambda: None).result()

    def clear(self) -> None:
        """Forget the CRLs held in memory (files in ``cache_dir`` stay)."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        self._background.shutdown(wait=True)
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _crl(self, url: str, issuer: x509.Certificate, now: datetime) -> _Cached:
        cached = self._fresh(url, issuer, now)
        if cached is not None:
            return cached
        with self._lock:
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        with url_lock:  # concurrent misses of one URL: one fetch, the others wait for it
            cached = self._fresh(url, issuer, now)
            if cached is not None:
                return cached
            cached = self._from_file(url, issuer, now)
            if cached is None:
                cached = self._refresh(url, issuer, now)
            with self._lock:
                self._cache[url] = cached
            return cached

    def _fresh(self, url: str, issuer: x509.Certificate, now: datetime) -> _Cached | None:
        with self._lock:
            cached = self._cache.get(url)
        if cached is None or cached.until <= now:
            return None
        if cached.crl is not None and cached.crl.issuer != issuer.subject:
            return None  # one URL, CRLs of several issuers: do not mix them up
        if cached.crl is not None and cached.until - now < self.refresh_ahead:
            self._refresh_behind(url, issuer)
        return cached

    def _refresh_behind(self, url: str, issuer: x509.Certificate) -> None:
        with self._lock:
            if url in self._refreshing:
                return
            self._refreshing.add(url)

        def run() -> None:
            try:
                fetched = self._refresh(url, issuer, self._clock())
                if fetched.crl is not None:  # a failed refresh keeps the still current CRL
                    with self._lock:
                        self._cache[url] = fetched
            finally:
                with self._lock:
                    self._refreshing.discard(url)

        try:
            self._background.submit(run)
        except RuntimeError:  # shutting down
            with self._lock:
                self._refreshing.discard(url)

    def _refresh(self, url: str, issuer: x509.Certificate, now: datetime) -> _Cached:
        try:
            data = self._fetch(url)
            crl = _trusted(data, issuer)
        except CrlUnavailable as exc:
            log.warning("CRL %s: %s (revocation status unknown)", url, exc)
            return _Cached(None, now + self.failure_ttl, why=str(exc))
        self._save(url, data)
        return self._entry(crl, now)

    def _entry(self, crl: x509.CertificateRevocationList, now: datetime) -> _Cached:
        next_update = crl.next_update_utc
        if next_update is not None and next_update > now:
            until = min(next_update, now + self.max_age)
        else:  # stale or without nextUpdate: ask again soon
            until = now + self.stale_ttl
        return _Cached(crl, until, frozenset(r.serial_number for r in crl))

    def _file(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:40] + ".crl")

    def _from_file(self, url: str, issuer: x509.Certificate, now: datetime) -> _Cached | None:
        """A current CRL of ``issuer`` kept by an earlier fetch (this process or another)."""
        path = self._file(url)
        if path is None:
            return None
        try:
            crl = _trusted(path.read_bytes(), issuer)
        except (OSError, CrlUnavailable):
            return None
        next_update = crl.next_update_utc
        if next_update is None or next_update <= now:
            return None
        return self._entry(crl, now)

    def _save(self, url: str, data: bytes) -> None:
        path = self._file(url)
        if path is None:
            return
        try:
            write_atomically(path, data)
        except OSError as exc:
            log.warning("CRL %s: cannot keep a copy in %s: %s", url, path, exc)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxies or .netrc from the environment
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _fetch(self, url: str) -> bytes:
        with self._lock:
            self.fetches += 1
        try:
            with self._session().get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise CrlUnavailable(f"HTTP {response.status_code}")
                data = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise CrlUnavailable(f"larger than {self.max_bytes} bytes")
        except requests.RequestException as exc:
            raise CrlUnavailable(f"cannot fetch: {exc.__class__.__name__}: {exc}") from None
        return bytes(data)


def _trusted(data: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL in ``data`` if ``issuer`` issued and signed it."""
    crl = _parse(data)
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
