"""What the RFC 5273 HTTP transport raises: temporary (retry later) or refused (permanent).

* :class:`TransportUnavailable` is a :class:`cmc.errors.TemporaryFailure`: the CA could not be
  reached or was overloaded (connection refused/reset, timeouts, HTTP 5xx after the retries,
  408/425/429).  The same request may succeed later unchanged.
* :class:`TransportRefused` and its subclasses are permanent: TLS verification failed, our
  client certificate was refused, the server answered 4xx, or with something that is not a CMC
  response.  Sending the same request again will give the same answer until someone changes
  the configuration (or the CA).  :attr:`TransportRefused.operator_action` is always True:
  none of these is caused by the mail being processed.
"""

from __future__ import annotations

from cmc.errors import CmcError, TemporaryFailure

__all__ = [
    "ClientCertificateRefused",
    "HttpStatusRefused",
    "InvalidTransportSettings",
    "ServerNotTrusted",
    "TemporaryFailure",
    "TlsNegotiationFailed",
    "TransportError",
    "TransportRefused",
    "TransportUnavailable",
    "UndecodableResponse",
    "UnexpectedContentType",
]


class TransportError(CmcError):
    """Base of everything the HTTP transport raises."""


class TransportUnavailable(TransportError, TemporaryFailure):
    """The CA was unreachable or overloaded; ``attempts`` requests were made.

    ``status`` is the last HTTP status (None for network errors); ``retry_after`` the seconds
    the server asked us to wait (``Retry-After``), when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.attempts = attempts
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class TransportRefused(TransportError):
    """Permanent: the exchange cannot succeed as configured; do not retry unchanged."""

    operator_action = True


class InvalidTransportSettings(TransportRefused):
    """The settings themselves are unusable (URL scheme, no trust anchors, bad numbers)."""


class ServerNotTrusted(TransportRefused):
    """The server's certificate does not verify against the trust anchors or the host name."""


class ClientCertificateRefused(TransportRefused):
    """The server rejected the TLS handshake because of our (missing) client certificate."""


class TlsNegotiationFailed(TransportRefused):
    """Client and server share no TLS version or cipher suite, or the port does not speak TLS."""


class HttpStatusRefused(TransportRefused):
    """The server answered with a status that will not change by retrying (4xx, 3xx, 501)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class UnexpectedContentType(TransportRefused):
    """The response is not ``application/pkcs7-mime`` (e.g. an HTML error page)."""

    def __init__(self, message: str, *, content_type: str | None) -> None:
        self.content_type = content_type
        super().__init__(message)


class UndecodableResponse(TransportRefused):
    """The body is neither DER nor base64/PEM of DER."""
