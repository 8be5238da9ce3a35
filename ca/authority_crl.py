"""Revocation and CRLs of :class:`ca.authority.CertificateAuthority` (split out of it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca import crl as crl_module
from ca.keys import KeyBackend
from ca.settings.types import CaSettings
from ca.store.model import CertificateView, RevocationView
from ca.store.orders import Store


class Revocations:
    """Revoke (with LDAP unpublication jobs), build and write the CRLs."""

    settings: CaSettings
    store: Store
    keys: KeyBackend
    clock: Callable[[], datetime]
    root_cert: x509.Certificate
    issuing_cert: x509.Certificate

    def revoke(
        self, serial: int | str, reason: str = "unspecified", *, by: str, comment: str | None = None
    ) -> RevocationView:
        view = self.store.revoke(serial, reason, by=by, comment=comment)
        cert = self.store.get_certificate(serial)
        if self.settings.ca.ldap is not None:
            for email in cert.emails:
                self.store.enqueue_job("unpublish", cert.serial, email, order_id=cert.order_id)
        self.write_crl()
        return view

    def crl(self) -> x509.CertificateRevocationList:
        key = self.keys.load(self.settings.ca.issuing.key_label)
        return crl_module.build_crl(
            self.issuing_cert, key, self.store.revoked_entries(), now=self.clock(),
            next_update=timedelta(hours=self.settings.ca.crl_next_update_hours),
        )  # fmt: skip

    def root_crl(self) -> x509.CertificateRevocationList:
        key = self.keys.load(self.settings.ca.root.key_label)
        return crl_module.build_crl(
            self.root_cert, key, [], now=self.clock(), next_update=timedelta(days=365)
        )

    def write_crl(self) -> Path:
        """Regenerate the issuing CA's CRL under <dir>/crl/issuing.crl (served over HTTP)."""
        path = self.settings.ca.directory / "crl" / "issuing.crl"
        crl_module.write_atomically(path, self.crl().public_bytes(serialization.Encoding.DER))
        return path

    def certificates(self, **filters: object) -> list[CertificateView]:
        return self.store.find_certificates(**filters)  # type: ignore[arg-type]
