"""Every error the CMC library raises on purpose.

Parsers and verifiers raise only these types (all derive from
:class:`config.errors.CmcgateError`), so callers render them once at the edge: the CLI as one
line, the gateway as an SMTP reply (:class:`TemporaryFailure` becomes 4xx), the CA as a CMC
``failInfo`` (RFC 5272 §6.1.4).
"""

from __future__ import annotations

from datetime import datetime

from config.errors import CmcgateError


class CmcError(CmcgateError):
    """Base of everything raised by the ``cmc`` package."""


class TemporaryFailure(CmcError):
    """Trouble that may go away by itself (network, CA busy, ``tryLater``): retry later.

    The gateway turns it into an SMTP 4xx reply so the mail is queued, never lost.
    """


class MalformedMessage(CmcError):
    """Bytes that are not the CMC/CMS structure they claim to be (RFC 5272 §3, RFC 5652)."""


class UnsupportedAlgorithm(CmcError):
    """A digest or signature algorithm this library does not accept (e.g. SHA-1, MD5)."""


class SignatureInvalid(CmcError):
    """A CMS signature (RFC 5652 §5.6) or a certificate signature does not verify."""


class TamperedContent(SignatureInvalid):
    """The signed content no longer matches the signed ``messageDigest`` (RFC 5652 §11.2)."""


class SignerNotFound(CmcError):
    """The signer's certificate is not in the message and no public key was supplied."""


class UntrustedSigner(CmcError):
    """No valid path from a certificate to a trust anchor (RFC 5280 §6)."""


class CertificateNotValidAt(UntrustedSigner):
    """A certificate on the path is expired or not yet valid at the checked time."""


class IssuerNotAuthorised(UntrustedSigner):
    """An issuer on the path is not a CA: basicConstraints, keyUsage or pathLen fail."""


class ExtendedKeyUsageMissing(UntrustedSigner):
    """The end certificate lacks the extended key usage the caller requires."""


class ChainSignatureInvalid(UntrustedSigner, SignatureInvalid):
    """A certificate on the path is not signed by the key of its issuer."""


class PathSearchExhausted(UntrustedSigner):
    """Path building gave up: the certificates offered need more work than one search may
    do (:class:`cmc.messages.chain.PathBudget`) — typically many CA certificates that certify each
    other. No path was established, as with a plain :class:`UntrustedSigner`."""


class ResponseMismatch(CmcError):
    """A Full PKI Response that does not answer the request we sent (RFC 5272 §6.6, §6.7)."""


class NonceMismatch(ResponseMismatch):
    """``recipientNonce`` is missing or differs from our ``senderNonce`` (RFC 5272 §6.7)."""


class TransactionIdMismatch(ResponseMismatch):
    """``transactionId`` is missing or differs from ours (RFC 5272 §6.6)."""


class IssuerMismatch(ResponseMismatch):
    """The issued certificate's issuer is not the configured issuer DN."""


class KeyMismatch(ResponseMismatch):
    """No returned certificate carries the public key we asked to be certified."""


class MissingCertificate(ResponseMismatch):
    """The response says success but carries no end-entity certificate."""


class CMCFailure(CmcError):
    """The CA answered ``failed`` or ``noSupport`` (RFC 5272 §6.1): do not retry unchanged.

    ``fail_info`` is the CMCFailInfo name (``"badIdentity"``...), or None when the CA gave
    none (``noSupport``, or an ``extendedFailInfo`` with ``extended_fail_oid``).
    """

    def __init__(
        self,
        fail_info: str | None,
        status_string: str | None,
        *,
        status: str = "failed",
        body_list: tuple[object, ...] = (),
        extended_fail_oid: str | None = None,
    ) -> None:
        self.fail_info = fail_info
        self.status_string = status_string
        self.status = status
        self.body_list = body_list
        self.extended_fail_oid = extended_fail_oid
        reason = fail_info or extended_fail_oid or "no failInfo"
        text = f"CA answered {status} ({reason})"
        if status_string:
            text += f": {status_string}"
        super().__init__(text)

    @property
    def permanent(self) -> bool:
        """False only for ``tryLater`` (RFC 5272 §6.1.4), which the CA expects to clear."""
        return self.fail_info != "tryLater"


class CMCTryLater(CMCFailure, TemporaryFailure):
    """``failed`` with failInfo ``tryLater``: the CA is temporarily unable to process it."""


class CMCPending(CmcError):
    """The CA answered ``pending`` (RFC 5272 §6.1.1): poll with ``queryPending``.

    ``pend_token`` goes into the queryPending control (RFC 5272 §6.10); ``pend_time`` is
    when the CA suggests asking again.
    """

    def __init__(
        self, pend_token: bytes, pend_time: datetime, status_string: str | None = None
    ) -> None:
        self.pend_token = pend_token
        self.pend_time = pend_time
        self.status_string = status_string
        text = f"CA answered pending; ask again after {pend_time.isoformat()}"
        if status_string:
            text += f": {status_string}"
        super().__init__(text)
