"""TLS for the CMC transport: a client context pinned to the admin's trust anchors.

``requests``/urllib3 only read client keys from files and, left alone, add the certifi bundle
(or ``REQUESTS_CA_BUNDLE``) to whatever context they use.  Here the context is built by hand:

* the server is verified against the configured trust anchors only (``cadata``; no system
  store, no environment), with hostname checking, TLS 1.2 or newer;
* the client certificate comes from the PKCS#12 access credential.  ``load_cert_chain`` needs
  a path, so the chain is written with the key *encrypted* under a random password that lives
  only in memory, preferably to an anonymous in-memory file (``memfd_create``: nothing ever
  reaches a file system), else to a 0600 temporary file that is deleted right after loading.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from requests.adapters import HTTPAdapter

from cmc.transport.errors import (
    ClientCertificateRefused,
    ServerNotTrusted,
    TlsNegotiationFailed,
    TransportRefused,
)
from cmc.transport.pkcs12 import AccessCredential, AccessCredentialError, encrypted_pem_bundle


def client_context(
    trust_anchors: Sequence[x509.Certificate],
    credential: AccessCredential | None,
    *,
    scratch_dir: str | None = None,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` trusting exactly ``trust_anchors`` and presenting ``credential``.

    Any certificate among the anchors may end a path (``VERIFY_X509_PARTIAL_CHAIN``), as in a
    Java trust store: an admin who imported an intermediate CA gets what they expect.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if trust_anchors:
        context.load_verify_locations(
            cadata="".join(
                c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in trust_anchors
            )
        )
    if credential is not None:
        load_client_chain(context, credential, scratch_dir=scratch_dir)
    return context


def load_client_chain(
    context: ssl.SSLContext, credential: AccessCredential, *, scratch_dir: str | None = None
) -> None:
    """Load the credential into ``context`` without leaving an unencrypted key anywhere.

    ``scratch_dir`` forces the temporary-file path (into that directory); by default an
    anonymous memory file is used where the platform has one.
    """
    password = secrets.token_urlsafe(32).encode("ascii")
    bundle = encrypted_pem_bundle(credential, password)
    try:
        with _bundle_path(bundle, scratch_dir) as path:
            context.load_cert_chain(path, password=password)
    except (ssl.SSLError, OSError) as exc:
        raise AccessCredentialError(f"cannot load the access certificate into TLS: {exc}")


@contextlib.contextmanager
def _bundle_path(bundle: bytes, scratch_dir: str | None) -> Iterator[str]:
    if scratch_dir is None and hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("cmcgate-access-chain", os.MFD_CLOEXEC)
        try:
            _write_all(fd, bundle)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="cmcgate-access-", suffix=".pem", dir=scratch_dir)
    try:
        try:
            _write_all(fd, bundle)
        finally:
            os.close(fd)
        yield path
    finally:
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class PinnedContextAdapter(HTTPAdapter):
    """A requests adapter whose every HTTPS connection uses one prepared ``SSLContext``.

    requests would otherwise point urllib3 at its CA bundle (certifi, ``REQUESTS_CA_BUNDLE``),
    and urllib3 would load that bundle *into* this context: both paths are cut here.
    urllib3's own retries are off; the transport retries by itself.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def build_connection_pool_key_attributes(  # type: ignore[no-untyped-def]
        self, request, verify, cert=None
    ):
        # Whatever verify/cert the session passes: no CA file, no client key file, only the
        # context above (requests would set ca_certs for a string ``verify``).
        return super().build_connection_pool_key_attributes(request, True, None)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None


# ssl.SSLError.reason values (OpenSSL alert and error names) that mean "the server refused our
# client certificate", and those that mean the two ends cannot agree on TLS at all.  Both are
# permanent.  Other TLS errors (unexpected EOF, bad record MAC) may be network trouble.
CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
NEGOTIATION_FAILURES = frozenset(
    {
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_VERSION_NUMBER",
        "NO_SHARED_CIPHER",
    }
)


def tls_refusal(chain: Sequence[BaseException], where: str) -> TransportRefused | None:
    """The permanent TLS failure among ``chain`` (see :func:`exception_chain`), if any."""
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ServerNotTrusted(
                f"the CMC server's certificate is not trusted for {where}: "
                f"{cause.verify_message or cause} "
                "(check the configured trust anchors and the host name in the URL)"
            )
    for cause in chain:
        if isinstance(cause, ssl.SSLError) and cause.reason in CLIENT_CERT_ALERTS:
            return ClientCertificateRefused(
                f"the CMC server refused our client certificate for {where}: "
                f"{cause.reason} (check the access certificate)"
            )
        if isinstance(cause, ssl.SSLError) and cause.reason in NEGOTIATION_FAILURES:
            return TlsNegotiationFailed(f"TLS negotiation with {where} failed: {cause.reason}")
    return None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, exception args, urllib3 reasons.

    requests and urllib3 wrap the ``ssl`` error several layers deep, partly in ``args``.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(current.args)
        todo.extend(e for e in linked if isinstance(e, BaseException))
