"""From the Totemo-style configuration to a CMC client (the adapter the loader needs).

``protocol + serverName + ":" + serverPort + url`` is the endpoint; ``requestType`` and
``encodeRequestBase64`` pick the RFC 5273 variant; the access PKCS#12 is both the TLS client
certificate and (by default) the signer of Full PKI Requests; the imported roots verify
both the TLS server and the CMC response signer, as Totemo uses one set for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509

from cmc.client import CmcClient, client_from_settings
from cmc.errors import CmcError
from cmc.messages.issuer import IssuerChains
from cmc.transport.http import TransportSettings
from config.model import PkiConnection


class PkiConfigError(CmcError):
    """A file the PKI connection names cannot be read."""


def _read(path: object, what: str) -> bytes:
    try:
        with open(str(path), "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise PkiConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def read_certificates(paths: Sequence[Path], what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in the PEM files ``paths`` (PkiConfigError naming the bad file)."""
    found: list[x509.Certificate] = []
    for path in paths:
        try:
            found.extend(x509.load_pem_x509_certificates(_read(path, what)))
        except ValueError as exc:
            raise PkiConfigError(f"{path}: no PEM certificates: {exc}") from None
    return tuple(found)


def trusted_roots(pki: PkiConnection) -> tuple[x509.Certificate, ...]:
    return read_certificates(pki.trusted_roots, "trusted roots")


def transport_settings(pki: PkiConnection) -> TransportSettings:
    password = pki.access_password.read() if pki.access_password is not None else None
    return TransportSettings(
        url=pki.url,
        method=pki.request_method,
        encode_base64=pki.encode_base64,
        access_p12=_read(pki.access_certificate, "access certificate (PKCS#12)"),
        access_p12_password=password,
        trust_anchors=trusted_roots(pki),
        connect_timeout=pki.connect_timeout,
        read_timeout=pki.read_timeout,
        retries=pki.retries,
        allow_insecure_http=pki.allow_insecure_http,
    )


def client_from_config(
    pki: PkiConnection,
    *,
    sign_with_access: bool = True,
    clock: Callable[[], datetime] | None = None,
    issuer_chains: IssuerChains | None = None,
) -> CmcClient:
    """A CMC client for the configured PKI (issuer checked against ``rfc2797.issuerDN``).

    ``issuer_chains``: what is known about where the CA issues (:mod:`cmc.messages.issuer`), shared
    by
    the clients of one gateway; by default a new one from the trusted roots.
    """
    return client_from_settings(
        transport_settings(pki),
        issuer_dn=pki.issuer_dn,
        sign_with_access=sign_with_access,
        clock=clock,
        issuer_chains=issuer_chains,
    )
