"""Typed frozen values of ca.yaml (see :mod:`ca.settings.loader` for the parser)."""

from __future__ import annotations

import calendar
import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from ca.keys.base import KeyType
from ca.settings.ra import RaSettings

_DN_BLANKS_RE = re.compile(r"(?<!\\)\s*(?<!\\),\s*")
_VALIDITY_RE = re.compile(r"^([1-9][0-9]{0,3})\s*([dmy])$")


class Profile(enum.StrEnum):
    """S/MIME BR certificate types cmcgate issues (section 7.1.6.1)."""

    MAILBOX = "mailbox"
    SPONSOR = "sponsor"
    ORGANIZATION = "organization"


class Approval(enum.StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class KeyGeneration(enum.StrEnum):
    """How a product's key pair is made (the RA manual's PKCS#10 / PKCS#12 policy types)."""

    CSR = "csr"  # the subscriber sends a PKCS#10 request
    PKCS12 = "pkcs12"  # the CA makes the key and hands out a PIN-protected PKCS#12
    BOTH = "both"  # either, per order

    def allows(self, server_side: bool) -> bool:
        if self is KeyGeneration.BOTH:
            return True
        return (self is KeyGeneration.PKCS12) == server_side


@dataclass(frozen=True)
class Validity:
    """``90d``, ``6m``, ``1y``: a certificate lifetime in calendar units."""

    amount: int
    unit: str  # "d", "m" or "y"

    @property
    def text(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def max_days(self) -> int:
        """The longest this can be in days (leap years, 31-day months)."""
        return self.amount * {"d": 1, "m": 31, "y": 366}[self.unit]

    def add_to(self, start: datetime) -> datetime:
        """``start`` plus this validity, calendar-wise (Jan 31 + 1m = Feb 28/29)."""
        if self.unit == "d":
            return start + timedelta(days=self.amount)
        months = self.amount * (12 if self.unit == "y" else 1)
        year, month0 = divmod(start.month - 1 + months, 12)
        year += start.year
        day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
        return start.replace(year=year, month=month0 + 1, day=day)

    @classmethod
    def parse(cls, text: str) -> Validity:
        m = _VALIDITY_RE.match(text.strip().lower())
        if not m:
            raise ValueError(f"validity {text!r} is not like 90d, 6m or 1y")
        return cls(int(m.group(1)), m.group(2))


@dataclass(frozen=True)
class Organisation:
    name: str
    country: str
    organization_identifier: str | None = None
    locality: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class RaCertificate:
    """An RA / access certificate allowed to act for an account: by SHA-256 or by subject DN."""

    sha256: str | None = None  # lower-case hex, no colons
    subject: str | None = None  # RFC 4514


@dataclass(frozen=True)
class AccountSettings:
    id: str
    organisation: Organisation
    email_domains: tuple[str, ...]
    ra_certificates: tuple[RaCertificate, ...]
    products: tuple[str, ...]

    def authorises(self, *, sha256: str | None = None, subject: str | None = None) -> bool:
        """True when a certificate with this fingerprint or subject may act for the account."""
        fp = (sha256 or "").lower().replace(":", "")
        for ra in self.ra_certificates:
            if ra.sha256 is not None and fp and ra.sha256 == fp:
                return True
            if ra.subject is not None and subject is not None and _same_dn(ra.subject, subject):
                return True
        return False

    def email_allowed(self, email: str) -> bool:
        """True when the address's domain is a validated domain or a subdomain of one."""
        domain = email.rpartition("@")[2].strip().lower()
        return any(domain == d or domain.endswith("." + d) for d in self.email_domains)


@dataclass(frozen=True)
class ProductSettings:
    id: str
    profile: Profile
    validities: tuple[Validity, ...]
    key_types: tuple[KeyType, ...]
    approval: Approval
    allow_simple_request: bool
    publish_ldap: bool
    #: csr (default), pkcs12 (server-side key generation) or both
    key_generation: KeyGeneration = KeyGeneration.CSR
    #: addresses outside the account's validated domains need an email challenge answered
    #: (S/MIME BR 3.2.2.2 mailbox control); without it such orders are refused
    mailbox_validation: bool = False


@dataclass(frozen=True)
class Pkcs11Settings:
    module: Path | None  # None: find SoftHSM2 (development)
    token_label: str
    pin_file: Path | None
    pin_env: str | None


@dataclass(frozen=True)
class SoftwareKeySettings:
    directory: Path
    passphrase_file: Path | None
    passphrase_env: str | None


@dataclass(frozen=True)
class KeySettings:
    backend: str  # "pkcs11" or "software"
    pkcs11: Pkcs11Settings | None
    software: SoftwareKeySettings | None

    def backend_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``ca.keys.backend_from_settings(self.backend, **kwargs)``."""
        out: dict[str, str] = {}
        if self.backend == "pkcs11" and self.pkcs11 is not None:
            p = self.pkcs11
            out["token_label"] = p.token_label
            if p.module is not None:
                out["module_path"] = str(p.module)
            if p.pin_file is not None:
                out["pin_file"] = str(p.pin_file)
            if p.pin_env is not None:
                out["pin_env"] = p.pin_env
        elif self.software is not None:
            s = self.software
            out["directory"] = str(s.directory)
            if s.passphrase_file is not None:
                out["passphrase_file"] = str(s.passphrase_file)
            if s.passphrase_env is not None:
                out["passphrase_env"] = s.passphrase_env
        return out


@dataclass(frozen=True)
class CaKeyRef:
    key_label: str
    key_type: KeyType
    certificate: Path
    subject: str | None


@dataclass(frozen=True)
class LdapSettings:
    url: str
    bind_dn: str
    password_file: Path | None
    base_dn: str


@dataclass(frozen=True)
class CaSection:
    directory: Path
    database: str
    listen_host: str
    listen_port: int
    base_url: str
    keys: KeySettings
    root: CaKeyRef
    issuing: CaKeyRef
    crl_next_update_hours: int
    audit_hmac_key_file: Path | None
    ldap: LdapSettings | None


@dataclass(frozen=True)
class CaSettings:
    path: Path
    ca: CaSection
    accounts: tuple[AccountSettings, ...]
    products: tuple[ProductSettings, ...]
    ra: RaSettings = RaSettings()

    def account(self, account_id: str) -> AccountSettings | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    def product(self, product_id: str) -> ProductSettings | None:
        return next((p for p in self.products if p.id == product_id), None)


def _same_dn(a: str, b: str) -> bool:
    na, nb = _loose_dn(a), _loose_dn(b)
    try:
        return x509.Name.from_rfc4514_string(na) == x509.Name.from_rfc4514_string(nb)
    except ValueError:
        return na == nb


def _loose_dn(dn: str) -> str:
    """Drop blanks around unescaped commas and at the ends (``CN=a, O=b`` -> ``CN=a,O=b``)."""
    return _DN_BLANKS_RE.sub(",", dn.strip())
