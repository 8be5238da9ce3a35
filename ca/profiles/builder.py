"""S/MIME subscriber certificate profiles (CA/B Forum S/MIME BR, strict generation).

Pure: the functions build, they do not sign with the CA key nor touch storage. The order
pipeline is::

    prepared = build_tbs(kind, request, organization, issuing_cert, endpoints, now=now)
    linter.check_prepared(prepared)           # signed with a throwaway key, pkilint, raises
    cert = prepared.sign(hsm_issuing_key)     # the only use of the CA key
    linter.check(cert.public_bytes(DER), kind)  # post-issuance lint, raises LintFailed

Every certificate gets: the BR reserved policy OID of its kind (2.23.140.1.5.{1,2,3}.3) plus
the CA's own policy OID if configured; SAN rfc822Name per address; EKU emailProtection only;
critical keyUsage (RSA: digitalSignature+keyEncipherment, EC: digitalSignature+keyAgreement,
or the single-purpose halves); CRLDP and AIA caIssuers (HTTP); AKI (keyIdentifier only) and
SKI; a 159-bit CSPRNG serial; validity under 825 days.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ca.profiles.errors import KeyNotAllowed, ProfileError, SerialInvalid, ValidityTooLong
from ca.profiles.subject import ComposedSubject, SubjectChange, compose
from ca.profiles.types import (
    BR_POLICY_OIDS,
    CaEndpoints,
    IssuanceRequest,
    KeyPurpose,
    Organization,
    ProfileKind,
)

__all__ = [
    "BR_POLICY_OIDS",
    "MAX_SUBSCRIBER_VALIDITY",
    "CaEndpoints",
    "ComposedSubject",
    "IssuanceRequest",
    "KeyPurpose",
    "Organization",
    "PreparedCertificate",
    "ProfileKind",
    "SubjectChange",
    "build_tbs",
    "check_public_key",
    "authority_key_id",
    "check_serial",
    "compose",
    "key_usage_for",
    "random_serial",
    "signature_hash_for",
]

#: BR §6.3.2 (strict and multipurpose). Requests of this length or more are refused: the
#: BR says not to issue for the full maximum, and pkilint warns at it.
MAX_SUBSCRIBER_VALIDITY = timedelta(days=825)
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_SMALL_PRIMES = tuple(
    p for p in range(3, 752, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))
)


def check_public_key(key: CertificatePublicKeyTypes) -> None:
    """Refuse keys the BR (§6.1.5, §6.1.6) or cmcgate's policy does not accept.

    RSA: 2048..8192 bits, a multiple of 8, odd exponent in 65537..2^256-1, no factor < 752.
    EC: P-256 or P-384 only (cmcgate does not issue P-521 or other curves).
    """
    if isinstance(key, rsa.RSAPublicKey):
        n, e = key.public_numbers().n, key.public_numbers().e
        bits = n.bit_length()
        if bits < MIN_RSA_BITS:
            raise KeyNotAllowed(
                f"RSA key of {bits} bits is too weak: the S/MIME BR require at least "
                f"{MIN_RSA_BITS} bits (section 6.1.5)"
            )
        if bits > MAX_RSA_BITS or bits % 8:
            raise KeyNotAllowed(f"RSA modulus of {bits} bits: use 2048, 3072 or 4096 bits")
        if e % 2 == 0 or not (65537 <= e < 1 << 256):
            raise KeyNotAllowed(f"RSA public exponent {e} is outside odd 65537..2^256-1")
        if any(n % p == 0 for p in _SMALL_PRIMES):
            raise KeyNotAllowed("RSA modulus has a small prime factor: the key is broken")
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise KeyNotAllowed(
                f"EC curve {key.curve.name} is not accepted: use P-256 (secp256r1) or "
                "P-384 (secp384r1)"
            )
        return
    raise KeyNotAllowed(
        f"{type(key).__name__} keys are not accepted: use RSA (>= 2048 bits) or EC P-256/P-384"
    )


def key_usage_for(key: CertificatePublicKeyTypes, purpose: KeyPurpose) -> x509.KeyUsage:
    """BR §7.1.2.3 (e), strict: RSA keyEncipherment / EC keyAgreement for key management."""
    sign = purpose in (KeyPurpose.DUAL_USE, KeyPurpose.SIGNING)
    manage = purpose in (KeyPurpose.DUAL_USE, KeyPurpose.ENCRYPTION)
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=manage and is_rsa,
        data_encipherment=False,
        key_agreement=manage and not is_rsa,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def random_serial() -> int:
    """A positive serial below 2^159 with 159 bits from the CSPRNG (BR §7.1, RFC 5280 20 octets)."""
    while True:
        serial = int.from_bytes(secrets.token_bytes(20), "big") >> 1
        if serial.bit_length() > 64:
            return serial


def check_serial(serial: int) -> int:
    """Accept a caller-chosen serial only if it is positive, < 2^159 and has > 64 bits."""
    if not (1 << 64) <= serial < (1 << 159):
        raise SerialInvalid(f"serial {serial:#x} must be in 2^64..2^159-1 (>= 64 random bits)")
    return serial


def signature_hash_for(issuer_key: CertificatePublicKeyTypes) -> hashes.HashAlgorithm:
    """BR §7.1.3.2: SHA-256 for RSA and P-256, SHA-384 for P-384, SHA-512 for P-521."""
    if isinstance(issuer_key, rsa.RSAPublicKey):
        return hashes.SHA256()
    if isinstance(issuer_key, ec.EllipticCurvePublicKey):
        by_curve: dict[str, hashes.HashAlgorithm] = {
            "secp256r1": hashes.SHA256(),
            "secp384r1": hashes.SHA384(),
            "secp521r1": hashes.SHA512(),
        }
        if issuer_key.curve.name in by_curve:
            return by_curve[issuer_key.curve.name]
    raise ProfileError(f"issuer key {type(issuer_key).__name__} cannot sign BR certificates")


@dataclass(frozen=True)
class PreparedCertificate:
    """A to-be-signed certificate and how its subject was composed."""

    kind: ProfileKind
    builder: x509.CertificateBuilder
    composed: ComposedSubject
    serial: int
    not_before: datetime
    not_after: datetime
    issuer_public_key: CertificatePublicKeyTypes
    hash_algorithm: hashes.HashAlgorithm

    @property
    def changes(self) -> tuple[SubjectChange, ...]:
        return self.composed.changes

    def sign(self, issuer_key: CertificateIssuerPrivateKeyTypes) -> x509.Certificate:
        """Sign with the issuing CA key (any cryptography key object, e.g. an HSM handle)."""
        if _spki(issuer_key.public_key()) != _spki(self.issuer_public_key):
            raise ProfileError("the signing key is not the issuing CA certificate's key")
        return self.builder.sign(issuer_key, self.hash_algorithm)  # type: ignore[arg-type]


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_validity(
    validity: timedelta, now: datetime, issuer_cert: x509.Certificate
) -> tuple[datetime, datetime]:
    """notBefore = now (whole seconds), notAfter so the inclusive period equals ``validity``."""
    if now.tzinfo is None:
        raise ProfileError("'now' must be timezone-aware")
    if validity <= timedelta(0):
        raise ValidityTooLong(f"validity {validity} must be positive")
    if validity >= MAX_SUBSCRIBER_VALIDITY:
        raise ValidityTooLong(
            f"requested validity of {validity.days} days is not allowed: S/MIME BR section "
            "6.3.2 limits strict subscriber certificates to 825 days, and they should not be "
            "issued for the full maximum (ask for 824 days or less)"
        )
    not_before = now.astimezone(UTC).replace(microsecond=0)
    not_after = not_before + validity - timedelta(seconds=1)
    if not_after > issuer_cert.not_valid_after_utc:
        raise ValidityTooLong(
            f"a certificate valid until {not_after:%Y-%m-%d} would outlive the issuing CA "
            f"(valid until {issuer_cert.not_valid_after_utc:%Y-%m-%d})"
        )
    if not_before < issuer_cert.not_valid_before_utc:
        raise ProfileError("the issuing CA certificate is not yet valid")
    return not_before, not_after


def build_tbs(
    kind: ProfileKind,
    request: IssuanceRequest,
    organization: Organization,
    issuer_cert: x509.Certificate,
    endpoints: CaEndpoints,
    *,
    now: datetime,
    serial: int | None = None,
    names_from_common_name: bool = True,
) -> PreparedCertificate:
    """Check the request and build the certificate for ``kind`` (not yet signed).

    Raises KeyNotAllowed, ValidityTooLong, EmailNotAllowed, SubjectNotComposable,
    SerialInvalid (all ProfileError) with the reason for the refusal.
    """
    kind = ProfileKind(kind)
    check_public_key(request.public_key)
    not_before, not_after = check_validity(request.validity, now, issuer_cert)
    composed = compose(kind, request, organization, names_from_common_name=names_from_common_name)
    serial = random_serial() if serial is None else check_serial(serial)
    issuer_key = issuer_cert.public_key()
    hash_algorithm = signature_hash_for(issuer_key)

    policies = [x509.PolicyInformation(BR_POLICY_OIDS[kind], None)]
    cps: list[str | x509.UserNotice] | None = [endpoints.cps_url] if endpoints.cps_url else None
    if endpoints.policy_oid:
        policies.append(x509.PolicyInformation(x509.ObjectIdentifier(endpoints.policy_oid), cps))
    elif cps:
        policies[0] = x509.PolicyInformation(BR_POLICY_OIDS[kind], cps)
    aia = [
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(endpoints.ca_issuers_url),
        )
    ]
    if endpoints.ocsp_url:
        aia.insert(
            0,
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(endpoints.ocsp_url),
            ),
        )
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(composed.subject)
        .public_key(request.public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(key_usage_for(request.public_key, request.purpose), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.CertificatePolicies(policies), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in composed.emails]),
            critical=len(composed.subject) == 0,
        )
        .add_extension(_crl_dp(endpoints.crl_url), critical=False)
        .add_extension(x509.AuthorityInformationAccess(aia), critical=False)
        .add_extension(authority_key_id(issuer_cert), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key), False)
    )
    return PreparedCertificate(
        kind, builder, composed, serial, not_before, not_after, issuer_key, hash_algorithm
    )


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


def authority_key_id(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """keyIdentifier only (BR §7.1.2.2 h / 7.1.2.3 g), equal to the issuer's SKI."""
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(issuer_cert.public_key())
    return x509.AuthorityKeyIdentifier(ski.digest, None, None)
