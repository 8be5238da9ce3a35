"""A bundled CA (software keys) with an ``ra:`` section that resolves against the test-suite's
DNS server (scripts/devdns.py), for the RA's domain and CAA tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.settings.ra import DnsSettings
from ca.settings.types import CaSettings
from ca.store.orders import Store
from tests.certbuild import email_csr_der


@dataclass
class Clock:
    """The CA's clock, moved forward by tests (``shift``) and back (``reset``)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def shift(self, **kwargs: float) -> None:
        self.offset = timedelta(**kwargs)

    def reset(self) -> None:
        self.offset = timedelta()


@dataclass
class Context:
    """What the RA services need of an authority, with other settings or another clock."""

    store: Store
    settings: CaSettings
    clock: Callable[[], datetime]


def make_ca(
    directory: Path,
    dns_port: int,
    *,
    email_domains: tuple[str, ...],
    caa_identities: tuple[str, ...] = (),
    clock: Clock | None = None,
    base_url: str = "http://pki.example.org",
    account: str = "example.ra",
    extra_accounts: tuple[str, ...] = (),
) -> CertificateAuthority:
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=base_url, account_id=account, email_domains=email_domains,
        product_id="silver", organisation_name="Example AG",
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    doc = yaml.safe_load(ca_yaml.read_text())
    for other in extra_accounts:
        doc["accounts"][other] = {
            "organisation": {"name": "Other GmbH", "country": "DE"},
            "email_domains": [],
            "products": ["silver"],
        }
    doc["ra"] = {
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout_seconds": 2},
        "caa_identities": list(caa_identities),
    }
    ca_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return CertificateAuthority.open(ca_yaml, clock=clock or Clock())


def with_dns(settings: CaSettings, **changes: object) -> CaSettings:
    """The settings with other ``ra.dns`` values (e.g. a port nobody answers on)."""
    dns = replace(settings.ra.dns, **changes)  # type: ignore[arg-type]
    return replace(settings, ra=replace(settings.ra, dns=dns))


def dead_dns(settings: CaSettings, port: int) -> CaSettings:
    return with_dns(settings, nameservers=("127.0.0.1",), port=port, timeout_seconds=1)


def csr_der(*emails: str) -> bytes:
    return email_csr_der(*emails)


__all__ = ["Clock", "Context", "DnsSettings", "csr_der", "dead_dns", "make_ca", "with_dns"]
