"""RFC 5273 §3: CMC requests over HTTPS, with the PKCS#12 access certificate.

A thin adapter around ``requests``: it POSTs (or GETs, when configured) one PKI Request and
returns the DER of the PKI Response.  Everything that can go wrong ends as one of the typed
errors of :mod:`cmc.transport.errors`:

* temporary (:class:`TemporaryFailure`, concretely :class:`TransportUnavailable`): connection
  refused/reset, connect or read timeouts, HTTP 5xx once the attempts are used up, 408/425/429;
* permanent (:class:`TransportRefused`): server certificate not trusted or not matching the
  host, client certificate refused, no common TLS version, HTTP 3xx/4xx/501/505, a response
  that is not ``application/pkcs7-mime`` or not DER/base64/PEM of DER.

Retries: ``settings.retries`` is the number of attempts in all (the first one included).
Connection errors, connect timeouts and 5xx are retried with exponential backoff
(``backoff``, ``2 × backoff``, ... capped at 30 s, or the server's ``Retry-After`` when that is
longer and at most 30 s).  Read timeouts are *not* retried: the CA may still be working on the
request, and a slow CA is not helped by being asked again right away; 4xx and TLS
verification failures are never retried.  The worst-case time of :meth:`CmcTransport.send` is
about ``retries × (connect_timeout + read_timeout) + backoffs``.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from cryptography import x509
from requests.adapters import HTTPAdapter

from cmc.transport.codec import (
    RESPONSE_ACCEPT,
    check_response_content_type,
    decode_response_body,
    encode_request_body,
    get_request_url,
    request_content_type,
    snippet,
)
from cmc.transport.errors import (
    ClientCertificateRefused,
    HttpStatusRefused,
    InvalidTransportSettings,
    ServerNotTrusted,
    TemporaryFailure,
    TlsNegotiationFailed,
    TransportError,
    TransportRefused,
    TransportUnavailable,
    UndecodableResponse,
    UnexpectedContentType,
)
from cmc.transport.pkcs12 import load_pkcs12
from cmc.transport.tls import PinnedContextAdapter, client_context, exception_chain, tls_refusal
from config.closing import Closing
from config.redact import redact_url, scrub
from config.values import is_number

__all__ = [
    "ClientCertificateRefused",
    "CmcTransport",
    "HttpStatusRefused",
    "InvalidTransportSettings",
    "ServerNotTrusted",
    "TemporaryFailure",
    "TlsNegotiationFailed",
    "TransportError",
    "TransportRefused",
    "TransportSettings",
    "TransportUnavailable",
    "UndecodableResponse",
    "UnexpectedContentType",
]

log = logging.getLogger(__name__)

USER_AGENT = "cmcgate/0.1 (RFC 5273)"
MAX_BACKOFF = 30.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
TEMPORARY_CLIENT_STATUSES = frozenset({408, 425, 429})
PERMANENT_SERVER_STATUSES = frozenset({501, 505})


@dataclass(frozen=True)
class TransportSettings:
    """Where and how to reach the CMC server; see the module docstring for the semantics.

    ``url`` is the whole endpoint (Totemo: protocol + serverName + ":" + serverPort + url).
    ``trust_anchors`` are the only certificates the server is verified against.
    ``get_parameter`` names the query parameter that carries the request when ``method`` is
    GET.  ``retries`` counts attempts in all, so 1 means "no retry".
    """

    url: str
    method: str = "POST"
    encode_base64: bool = False
    access_p12: bytes | None = field(default=None, repr=False)
    access_p12_password: bytes | None = field(default=None, repr=False)
    trust_anchors: tuple[x509.Certificate, ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    allow_insecure_http: bool = False
    get_parameter: str = "message"

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.strip().upper())
        if self.method not in ("POST", "GET"):
            raise InvalidTransportSettings(f"request method must be POST or GET, not {self.method}")
        shown = redact_url(self.url)
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise InvalidTransportSettings(f"invalid CMC URL {shown!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme == "http" and not self.allow_insecure_http:
            raise InvalidTransportSettings(
                f"refusing plain http for the CMC URL {shown!r}: use https"
            )
        if scheme not in ("https", "http") or not parts.hostname:
            raise InvalidTransportSettings(f"the CMC URL {shown!r} is not an https URL")
        if parts.fragment:
            raise InvalidTransportSettings(f"the CMC URL {shown!r} must not have a #fragment")
        if scheme == "https" and not self.trust_anchors:
            raise InvalidTransportSettings(
                "no trust anchors configured: the CMC server's certificate cannot be verified"
            )
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise InvalidTransportSettings("connect and read timeouts must be positive")
        if self.retries < 1:
            raise InvalidTransportSettings("retries counts attempts in all and must be >= 1")
        if self.backoff < 0:
            raise InvalidTransportSettings("backoff must not be negative")
        if not self.get_parameter:
            raise InvalidTransportSettings("the GET query parameter name must not be empty")

    @property
    def is_https(self) -> bool:
        return urlsplit(self.url).scheme.lower() == "https"


class CmcTransport(Closing):
    """One HTTP(S) session to one CMC endpoint; :meth:`send` exchanges one request.

    Building it loads the PKCS#12 (``AccessCredentialError`` when that fails) and prepares the
    TLS context once; connections are kept alive between sends.  Use one instance per thread
    (``requests.Session`` does not promise thread safety).
    """

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        session = requests.Session()
        session.trust_env = False  # no proxies, CA bundles or .netrc from the environment
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Accept"] = RESPONSE_ACCEPT
        if settings.is_https:
            credential = None
            if settings.access_p12 is not None:
                credential = load_pkcs12(settings.access_p12, settings.access_p12_password)
            context = client_context(settings.trust_anchors, credential)
            session.mount("https://", PinnedContextAdapter(context))
        else:
            session.mount("http://", HTTPAdapter(max_retries=0))
        self._session = session

    @property
    def settings(self) -> TransportSettings:
        return self._settings

    def send(self, body_der: bytes, *, full: bool) -> bytes:
        """Send one PKI Request (DER); return the DER of the PKI Response.

        ``full`` selects the Full PKI Request media type, else the Simple one (PKCS#10).
        """
        s = self._settings
        headers: dict[str, str] = {}
        data: bytes | None = None
        url = s.url
        if s.method == "GET":
            url = get_request_url(s.url, body_der, s.get_parameter)
        else:
            headers["Content-Type"] = request_content_type(full=full)
            data = encode_request_body(body_der, base64_text=s.encode_base64)
            if s.encode_base64:
                headers["Content-Transfer-Encoding"] = "base64"
        retry_after: float | None = None
        for attempt in range(1, s.retries + 1):
            if attempt > 1:
                time.sleep(self._delay(attempt, retry_after))
            try:
                return self._exchange(url, headers, data, attempt)
            except _Retryable as wrapped:
                error = wrapped.error
                if attempt == s.retries or (
                    error.retry_after is not None and error.retry_after > MAX_BACKOFF
                ):
                    raise error from wrapped.__cause__
                log.warning("CMC request attempt %d/%d failed: %s", attempt, s.retries, error)
                retry_after = error.retry_after
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._session.close()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = self._settings.backoff * 2 ** (attempt - 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_BACKOFF)

    def _exchange(
        self, url: str, headers: dict[str, str], data: bytes | None, attempt: int
    ) -> bytes:
        s = self._settings
        try:
            response = self._session.request(
                s.method,
                url,
                data=data,
                headers=headers,
                timeout=(s.connect_timeout, s.read_timeout),
                allow_redirects=False,
                stream=True,
            )
            try:
                body = _read_limited(response)
            finally:
                response.close()
        except requests.exceptions.RequestException as exc:
            error, retryable = _classify(exc, attempt, s)
            if retryable:
                assert isinstance(error, TransportUnavailable)
                raise _Retryable(error) from exc
            raise error from exc
        return _interpret(response, body, attempt, s.url)


class _Retryable(Exception):  # noqa: N818 - internal signal, never leaves this module
    """Carries a temporary failure the send loop may retry (connection errors, 5xx)."""

    def __init__(self, error: TransportUnavailable) -> None:
        self.error = error
        super().__init__(str(error))


def _read_limited(response: requests.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise UndecodableResponse(f"the CA's answer exceeds {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _interpret(response: requests.Response, body: bytes, attempt: int, url: str) -> bytes:
    status = response.status_code
    where = f"{response.request.method} {redact_url(url)}"
    if status == 200:
        check_response_content_type(response.headers.get("Content-Type"), body)
        return decode_response_body(body, response.headers.get("Content-Transfer-Encoding"))
    said = f"HTTP {status} {response.reason or ''}".rstrip()
    tail = f"; body begins {snippet(body)!r}" if body.strip() else ""
    if 500 <= status < 600 and status not in PERMANENT_SERVER_STATUSES:
        raise _Retryable(
            TransportUnavailable(
                f"the CA answered {said} to {where}{tail}",
                attempts=attempt,
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        )
    if status in TEMPORARY_CLIENT_STATUSES:
        raise TransportUnavailable(
            f"the CA answered {said} to {where}{tail}",
            attempts=attempt,
            status=status,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if 300 <= status < 400:
        location = response.headers.get("Location", "?")
        raise HttpStatusRefused(
            f"the CA answered {said} to {where}, redirecting to {location}: "
            "configure that URL instead (redirects are not followed)",
            status=status,
        )
    raise HttpStatusRefused(f"the CA refused the request: {said} to {where}{tail}", status=status)


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if is_number(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _classify(
    exc: requests.exceptions.RequestException, attempt: int, s: TransportSettings
) -> tuple[TransportError, bool]:
    """Map a requests/urllib3/ssl failure onto a transport error and whether to retry it."""
    where = f"{s.method} {redact_url(s.url)}"
    chain = list(exception_chain(exc))
    refused = tls_refusal(chain, where)
    if refused is not None:
        return refused, False
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        message = f"invalid CMC URL {redact_url(s.url)!r}: {scrub(str(exc), s.url)}"
        return InvalidTransportSettings(message), False
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return UndecodableResponse(f"the CA's answer could not be decoded: {exc}"), False
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        message = f"connecting to {where} timed out after {s.connect_timeout:g} s"
        return TransportUnavailable(message, attempts=attempt), True
    if isinstance(exc, requests.exceptions.ReadTimeout) or any(
        isinstance(c, urllib3.exceptions.ReadTimeoutError) for c in chain
    ):
        message = f"the CA did not answer {where} within {s.read_timeout:g} s"
        return TransportUnavailable(message, attempts=attempt), False
    message = f"cannot reach the CA at {where}: {_innermost(chain)}"
    return TransportUnavailable(message, attempts=attempt), True


def _innermost(chain: list[BaseException]) -> str:
    for cause in reversed(chain):
        if isinstance(cause, OSError) and str(cause):  # ssl.SSLError and timeouts included
            return f"{type(cause).__name__}: {cause}"
    return str(chain[0])
