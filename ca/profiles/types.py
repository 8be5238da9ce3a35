"""Frozen inputs of the S/MIME certificate profiles (see :mod:`ca.profiles.builder` for the API).

``ProfileKind`` is :class:`ca.settings.types.Profile`, so a product's configured profile is
passed through unchanged. Only strict-generation profiles are issued.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.profiles.errors import EndpointInvalid, ProfileError
from ca.settings.types import Profile as ProfileKind

if TYPE_CHECKING:
    from ca.settings.types import AccountSettings

__all__ = [
    "BR_POLICY_OIDS",
    "CaEndpoints",
    "IssuanceRequest",
    "KeyPurpose",
    "Organization",
    "ProfileKind",
]

#: BR §7.1.6.1 reserved policy identifiers, strict generation (the only one cmcgate issues).
BR_POLICY_OIDS: dict[ProfileKind, x509.ObjectIdentifier] = {
    ProfileKind.MAILBOX: x509.ObjectIdentifier("2.23.140.1.5.1.3"),
    ProfileKind.ORGANIZATION: x509.ObjectIdentifier("2.23.140.1.5.2.3"),
    ProfileKind.SPONSOR: x509.ObjectIdentifier("2.23.140.1.5.3.3"),
}

_OID_RE = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
# BR §7.1.4.2.2 (d): 3-letter scheme, 2-letter country, optional +subdivision, "-", reference.
_ORG_ID_RE = re.compile(
    r"^(?P<scheme>[A-Z]{3})(?P<country>[A-Z]{2})(\+[A-Z0-9]{1,3})?-(?P<ref>.+)$"
)
_ORG_ID_NO_REF_RE = re.compile(r"^(?P<scheme>GOV|INT)(?P<country>[A-Z]{2})(\+[A-Z0-9]{1,3})?$")
_ORG_ID_SCHEMES = frozenset({"NTR", "VAT", "PSD", "LEI", "GOV", "INT"})
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


class KeyPurpose(enum.StrEnum):
    """What the subscriber key is for (BR §7.1.2.3 (e) keyUsage)."""

    DUAL_USE = "dual-use"  # sign and encrypt (the gateway default)
    SIGNING = "signing"
    ENCRYPTION = "encryption"


@dataclass(frozen=True)
class Organization:
    """The account's validated organisation data: the only source of O / orgId / C / L / ST."""

    name: str
    organization_identifier: str | None
    country: str
    validated_domains: tuple[str, ...]
    locality: str | None = None
    state: str | None = None

    def __post_init__(self) -> None:
        if not _COUNTRY_RE.match(self.country):
            raise ProfileError(f"organisation country {self.country!r} is not an ISO 3166-1 code")
        domains = tuple(d.strip().strip(".").lower() for d in self.validated_domains if d.strip())
        object.__setattr__(self, "validated_domains", domains)
        oid = self.organization_identifier
        if oid is not None:
            check_organization_identifier(oid, self.country)

    def allows_domain(self, domain: str) -> bool:
        """True for a validated domain or a subdomain of one."""
        d = domain.strip().lower()
        return any(d == v or d.endswith("." + v) for v in self.validated_domains)

    @classmethod
    def from_account(cls, account: AccountSettings) -> Organization:
        org = account.organisation
        return cls(
            name=org.name,
            organization_identifier=org.organization_identifier,
            country=org.country,
            validated_domains=account.email_domains,
            locality=org.locality,
            state=org.state,
        )


def check_organization_identifier(value: str, country: str) -> None:
    """Refuse an organizationIdentifier the BR syntax (§7.1.4.2.2 d, Note 1) rejects."""
    m = _ORG_ID_RE.match(value) or _ORG_ID_NO_REF_RE.match(value)
    if m is None or m.group("scheme") not in _ORG_ID_SCHEMES:
        raise ProfileError(
            f"organizationIdentifier {value!r} is not 'SSSCC-reference' with a BR registration "
            f"scheme ({', '.join(sorted(_ORG_ID_SCHEMES))})"
        )
    scheme, cc = m.group("scheme"), m.group("country")
    if scheme in ("LEI", "INT"):
        if cc != "XG":
            raise ProfileError(f"organizationIdentifier {value!r}: {scheme} uses country XG")
    elif cc != country and not (scheme == "VAT" and cc == "EL" and country == "GR"):
        raise ProfileError(
            f"organizationIdentifier {value!r} names country {cc}, the organisation is in {country}"
        )


@dataclass(frozen=True)
class IssuanceRequest:
    """What the applicant asked for (from PKCS#10/CRMF + the order), not yet trusted.

    ``emails`` is the authoritative list of mailbox addresses (SAN rfc822Name, first = primary);
    ``given_name``/``surname`` are the RA's validated personal name for sponsor certificates.
    """

    public_key: CertificatePublicKeyTypes
    requested_subject: x509.Name
    emails: tuple[str, ...]
    validity: timedelta
    given_name: str | None = None
    surname: str | None = None
    purpose: KeyPurpose = KeyPurpose.DUAL_USE


@dataclass(frozen=True)
class CaEndpoints:
    """URLs and policy the issuing CA embeds in every subscriber certificate.

    Strict profiles require plain ``http://`` for CRL, caIssuers and OCSP (BR §7.1.2.3 b, c).
    """

    crl_url: str
    ca_issuers_url: str
    policy_oid: str | None = None
    ocsp_url: str | None = None
    cps_url: str | None = None

    def __post_init__(self) -> None:
        _require_http("CRL distribution point", self.crl_url)
        _require_http("caIssuers", self.ca_issuers_url)
        if self.ocsp_url is not None:
            _require_http("OCSP", self.ocsp_url)
        if self.cps_url is not None:
            parts = urlsplit(self.cps_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise EndpointInvalid(f"CPS URL {self.cps_url!r} must be http(s)://host/...")
        if self.policy_oid is not None:
            if not _OID_RE.match(self.policy_oid) or self.policy_oid.startswith("2.23.140.1.5"):
                raise EndpointInvalid(
                    f"CA policy OID {self.policy_oid!r} must be a dotted OID outside the "
                    "CA/B Forum S/MIME arc (the reserved OID is added per profile)"
                )


def _require_http(what: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.netloc:
        raise EndpointInvalid(
            f"{what} URL {url!r} must be http://host/... (S/MIME BR strict: HTTP only)"
        )
