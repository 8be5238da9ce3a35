"""The CA hierarchy: root, S/MIME issuing CA, infrastructure CA.

The infrastructure CA's leaves (TLS server, access certificates) are in
:mod:`ca.hierarchy_services`.

::

    Root CA (self-signed; BC cA critical, KU keyCertSign+cRLSign critical, SKI, AKI=SKI;
             no EKU, no certificatePolicies)
    ├── S/MIME issuing CA (pathLen 0, EKU emailProtection, CP = the 3 strict reserved OIDs
    │                      [+ CA OID], CRLDP + AIA -> root CRL/cert, AKI, SKI)  -> subscriber certs
    └── Infrastructure CA (pathLen 0, EKU serverAuth+clientAuth, CP = CA OID or anyPolicy,
                           CRLDP + AIA -> root)  -> TLS server cert of the CA's HTTPS endpoint,
                                                    client-auth "access certificates" of accounts

Why a separate infrastructure CA: S/MIME BR §7.1.2.2 (g) forbids id-kp-serverAuth in an
S/MIME issuing CA, and verifiers (OpenSSL, Python ssl) require every CA's EKU to allow the
leaf's purpose, so a TLS server certificate under the S/MIME CA would not verify. Client
access certificates are not S/MIME certificates either, so they live there too; relying
parties import the one root for both.

Every signer is a cryptography private-key object (software or an HSM handle); no private
bytes are ever needed. All functions are pure apart from the signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    CertificatePoliciesOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from ca.profiles.builder import (
    authority_key_id,
    check_public_key,
    check_serial,
    random_serial,
    signature_hash_for,
)
from ca.profiles.errors import HierarchyError
from ca.profiles.types import BR_POLICY_OIDS, CaEndpoints

__all__ = [
    "add_revocation_pointers",
    "build_infrastructure_ca",
    "build_issuing_ca",
    "build_root_ca",
    "ca_name",
    "check_signer",
    "validity_window",
]


def ca_name(
    common_name: str, organization: str, country: str, organizational_unit: str | None = None
) -> x509.Name:
    """``C, O, [OU,] CN`` (BR §7.1.4.3.1 requires CN, O and C for CA certificates)."""
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if organizational_unit is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _check_ca_name(subject: x509.Name) -> None:
    for oid, label in (
        (NameOID.COMMON_NAME, "CN"),
        (NameOID.ORGANIZATION_NAME, "O"),
        (NameOID.COUNTRY_NAME, "C"),
    ):
        if not subject.get_attributes_for_oid(oid):
            raise HierarchyError(f"CA subject {subject.rfc4514_string()!r} lacks {label}")


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def validity_window(
    now: datetime, validity: timedelta, issuer: x509.Certificate | None
) -> tuple[datetime, datetime]:
    if now.tzinfo is None:
        raise HierarchyError("'now' must be timezone-aware")
    if validity <= timedelta(0):
        raise HierarchyError("validity must be positive")
    start = now.astimezone(UTC).replace(microsecond=0)
    end = start + validity - timedelta(seconds=1)
    if issuer is not None and end > issuer.not_valid_after_utc:
        raise HierarchyError(
            f"a certificate valid until {end:%Y-%m-%d} would outlive its issuer "
            f"{issuer.subject.rfc4514_string()} (valid until {issuer.not_valid_after_utc:%Y-%m-%d})"
        )
    return start, end


def check_signer(
    issuer_cert: x509.Certificate, issuer_key: CertificateIssuerPrivateKeyTypes
) -> None:
    if _spki(issuer_key.public_key()) != _spki(issuer_cert.public_key()):
        raise HierarchyError(
            f"the signing key is not the key of {issuer_cert.subject.rfc4514_string()}"
        )


def _ca_key_usage(signs_ocsp: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signs_ocsp,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def add_revocation_pointers(
    builder: x509.CertificateBuilder, crl_url: str | None, ca_issuers_url: str | None
) -> x509.CertificateBuilder:
    if crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
    if ca_issuers_url is not None:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
    return builder


def build_root_ca(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *,
    now: datetime,
    validity: timedelta = timedelta(days=20 * 365),
    serial: int | None = None,
    signs_ocsp: bool = False,
) -> x509.Certificate:
    """Self-signed root per BR §7.1.2.1 (no pathLen, no EKU, no certificatePolicies)."""
    _check_ca_name(subject)
    public = key.public_key()
    check_public_key(public)
    start, end = validity_window(now, validity, None)
    builder = (
        x509.CertificateBuilder()
        .serial_number(random_serial() if serial is None else check_serial(serial))
        .issuer_name(subject)
        .subject_name(subject)
        .public_key(public)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(signs_ocsp), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    # AKI = own SKI: recommended by the TLS BR (the root also anchors the infrastructure CA's
    # TLS certificates) and allowed by RFC 5280; pkilint's TLS root profile warns without it.
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), False)
    return builder.sign(key, signature_hash_for(public))  # type: ignore[arg-type]


def _build_sub_ca(
    subject_public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    root_cert: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    validity: timedelta,
    crl_url: str,
    ca_issuers_url: str,
    policies: Sequence[x509.PolicyInformation],
    ekus: Sequence[x509.ObjectIdentifier],
    serial: int | None,
    signs_ocsp: bool,
) -> x509.Certificate:
    _check_ca_name(subject)
    check_public_key(subject_public_key)
    check_signer(root_cert, root_key)
    CaEndpoints(crl_url, ca_issuers_url)  # same HTTP-only rule as for subscriber certs
    start, end = validity_window(now, validity, root_cert)
    builder = (
        x509.CertificateBuilder()
        .serial_number(random_serial() if serial is None else check_serial(serial))
        .issuer_name(root_cert.subject)
        .subject_name(subject)
        .public_key(subject_public_key)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(signs_ocsp), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        .add_extension(x509.CertificatePolicies(list(policies)), critical=False)
    )
    builder = add_revocation_pointers(builder, crl_url, ca_issuers_url)
    builder = builder.add_extension(authority_key_id(root_cert), critical=False).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(subject_public_key),
        critical=False,
    )
    return builder.sign(root_key, signature_hash_for(root_cert.public_key()))  # type: ignore[arg-type]


def build_issuing_ca(
    subject_public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    root_cert: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    crl_url: str,
    ca_issuers_url: str,
    policy_oid: str | None = None,
    validity: timedelta = timedelta(days=10 * 365),
    serial: int | None = None,
    signs_ocsp: bool = False,
) -> x509.Certificate:
    """S/MIME issuing CA per BR §7.1.2.2; ``crl_url``/``ca_issuers_url`` are the root's."""
    policies = [x509.PolicyInformation(oid, None) for oid in BR_POLICY_OIDS.values()]
    if policy_oid is not None:
        policies.append(x509.PolicyInformation(x509.ObjectIdentifier(policy_oid), None))
    return _build_sub_ca(
        subject_public_key,
        subject,
        root_cert,
        root_key,
        now=now,
        validity=validity,
        crl_url=crl_url,
        ca_issuers_url=ca_issuers_url,
        policies=policies,
        ekus=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
        serial=serial,
        signs_ocsp=signs_ocsp,
    )


def build_infrastructure_ca(
    subject_public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    root_cert: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    crl_url: str,
    ca_issuers_url: str,
    policy_oid: str | None = None,
    validity: timedelta = timedelta(days=10 * 365),
    serial: int | None = None,
) -> x509.Certificate:
    """CA for the CA's own TLS server certificate and the accounts' access certificates."""
    oid = x509.ObjectIdentifier(policy_oid) if policy_oid else CertificatePoliciesOID.ANY_POLICY
    return _build_sub_ca(
        subject_public_key,
        subject,
        root_cert,
        root_key,
        now=now,
        validity=validity,
        crl_url=crl_url,
        ca_issuers_url=ca_issuers_url,
        policies=[x509.PolicyInformation(oid, None)],
        ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        serial=serial,
        signs_ocsp=False,
    )
