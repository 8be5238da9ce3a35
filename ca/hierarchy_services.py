"""The CA's own service certificates, issued by the infrastructure CA (see :mod:`ca.hierarchy`).

* TLS server certificate of the CA's HTTPS endpoint: EKU serverAuth, SAN dNSName/iPAddress,
  CN = the first name, at most 398 days.
* Access certificate of an account (the CMC client's TLS client certificate, delivered as
  PKCS#12 like SwissSign's): EKU clientAuth, CN = account id, O = organisation, [C].
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.hierarchy import add_revocation_pointers, check_signer, validity_window
from ca.profiles.builder import (
    authority_key_id,
    check_public_key,
    check_serial,
    random_serial,
    signature_hash_for,
)
from ca.profiles.errors import HierarchyError, KeyNotAllowed

__all__ = ["MAX_ACCESS_VALIDITY", "MAX_TLS_VALIDITY", "build_access_cert", "build_tls_server_cert"]

MAX_TLS_VALIDITY = timedelta(days=398)
MAX_ACCESS_VALIDITY = timedelta(days=825)
_DNS_RE = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def _leaf_key_usage(key: CertificatePublicKeyTypes, *, encipher: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encipher and isinstance(key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    validity: timedelta,
    max_validity: timedelta,
    eku: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] | None,
    encipher: bool,
    crl_url: str | None,
    ca_issuers_url: str | None,
    serial: int | None,
) -> x509.Certificate:
    try:
        check_public_key(public_key)
    except KeyNotAllowed as e:
        raise HierarchyError(str(e)) from e
    check_signer(issuer_cert, issuer_key)
    if validity > max_validity:
        raise HierarchyError(f"validity {validity.days} days exceeds {max_validity.days} days")
    start, end = validity_window(now, validity, issuer_cert)
    builder = (
        x509.CertificateBuilder()
        .serial_number(random_serial() if serial is None else check_serial(serial))
        .issuer_name(issuer_cert.subject)
        .subject_name(subject)
        .public_key(public_key)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(public_key, encipher=encipher), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    builder = add_revocation_pointers(builder, crl_url, ca_issuers_url)
    builder = builder.add_extension(authority_key_id(issuer_cert), critical=False).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key),
        critical=False,
    )
    return builder.sign(issuer_key, signature_hash_for(issuer_cert.public_key()))  # type: ignore[arg-type]


def build_tls_server_cert(
    public_key: CertificatePublicKeyTypes,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    now: datetime,
    validity: timedelta = timedelta(days=397),
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """TLS server certificate (EKU serverAuth, SAN dNSName/iPAddress, CN = first name)."""
    names: list[x509.GeneralName] = []
    for dns in dns_names:
        d = dns.strip().lower().rstrip(".")
        if not _DNS_RE.match(d):
            raise HierarchyError(f"{dns!r} is not a DNS name")
        names.append(x509.DNSName(d))
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip.strip())))
        except ValueError as e:
            raise HierarchyError(f"{ip!r} is not an IP address") from e
    if not names:
        raise HierarchyError("a TLS server certificate needs at least one DNS name or IP address")
    first = names[0]
    cn = first.value if isinstance(first, x509.DNSName) else str(first.value)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])])
    return _leaf(
        public_key,
        subject,
        issuer_cert,
        issuer_key,
        now=now,
        validity=validity,
        max_validity=MAX_TLS_VALIDITY,
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
        san=names,
        encipher=True,
        crl_url=crl_url,
        ca_issuers_url=ca_issuers_url,
        serial=serial,
    )


def build_access_cert(
    public_key: CertificatePublicKeyTypes,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    account_id: str,
    organization: str,
    country: str | None = None,
    now: datetime,
    validity: timedelta = timedelta(days=730),
    crl_url: str | None = None,
    ca_issuers_url: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Client-auth "access certificate" of an account: CN = account id, O = organisation."""
    if not account_id.strip() or len(account_id) > 64:
        raise HierarchyError(f"account id {account_id!r} must be 1..64 characters")
    if not organization.strip() or len(organization) > 64:
        raise HierarchyError(f"organisation {organization!r} must be 1..64 characters")
    attrs = []
    if country is not None:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, account_id),
    ]
    return _leaf(
        public_key,
        x509.Name(attrs),
        issuer_cert,
        issuer_key,
        now=now,
        validity=validity,
        max_validity=MAX_ACCESS_VALIDITY,
        eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        san=None,
        encipher=False,
        crl_url=crl_url,
        ca_issuers_url=ca_issuers_url,
        serial=serial,
    )
