"""Certificate path validation, small and strict (RFC 5280 §6, the parts a CMC/S/MIME peer
needs): each link's signature, validity at a given time, CA flag, keyCertSign and pathLen on
issuers, and an optional extended key usage on the end certificate.

Not done: name constraints, policies, revocation (the caller checks CRLs/OCSP if it must).
Unknown critical extensions on issuers are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from cmc.errors import (
    CertificateNotValidAt,
    ChainSignatureInvalid,
    ExtendedKeyUsageMissing,
    IssuerNotAuthorised,
    UntrustedSigner,
)

#: Longest path tried, anchors included; deeper hierarchies are not used for CMC or mail.
MAX_DEPTH = 8

_KNOWN_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.NAME_CONSTRAINTS,
    ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.INHIBIT_ANY_POLICY,
}


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _describe(cert: x509.Certificate) -> str:
    return f'"{cert.subject.rfc4514_string()}" (serial {cert.serial_number:x})'


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
    required_eku: x509.ObjectIdentifier | None = None,
) -> list[x509.Certificate]:
    """Return the path ``[leaf, ..., anchor]`` or raise an :class:`UntrustedSigner` subtype.

    The first complete valid path wins; when none exists the last link that failed is
    reported, so the error names what actually failed (expired, not a CA, bad signature).
    """
    when = (at or datetime.now(UTC)).astimezone(UTC)
    if not anchors:
        raise UntrustedSigner("no trust anchors configured")
    _check_validity(leaf, when)
    if required_eku is not None:
        _check_eku(leaf, required_eku)
    anchor_ders = {_der(anchor) for anchor in anchors}
    if _der(leaf) in anchor_ders:
        return [leaf]
    candidates = [*intermediates, *anchors]
    failure: list[UntrustedSigner] = []
    path = _extend([leaf], candidates, anchor_ders, when, failure)
    if path is not None:
        return path
    if failure:
        raise failure[0]
    raise UntrustedSigner(f"no issuer of {_describe(leaf)} leads to a trust anchor")


def _extend(
    path: list[x509.Certificate],
    candidates: Sequence[x509.Certificate],
    anchor_ders: set[bytes],
    when: datetime,
    failure: list[UntrustedSigner],
) -> list[x509.Certificate] | None:
    child = path[-1]
    if len(path) >= MAX_DEPTH:
        return None
    seen = {_der(cert) for cert in path}
    for issuer in candidates:
        issuer_der = _der(issuer)
        if issuer_der in seen or issuer.subject != child.issuer:
            continue
        try:
            _check_link(child, issuer, len(path) - 1, when)
        except UntrustedSigner as exc:
            failure[:] = [exc]
            continue
        if issuer_der in anchor_ders:
            return [*path, issuer]
        found = _extend([*path, issuer], candidates, anchor_ders, when, failure)
        if found is not None:
            return found
    return None


def _check_link(
    child: x509.Certificate, issuer: x509.Certificate, intermediates_below: int, when: datetime
) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ChainSignatureInvalid(
            f"{_describe(child)} is not validly signed by {_describe(issuer)}: {exc or 'bad'}"
        ) from exc
    _check_validity(issuer, when)
    _check_issuer(issuer, intermediates_below)


def _check_validity(cert: x509.Certificate, when: datetime) -> None:
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise CertificateNotValidAt(
            f"{_describe(cert)} is valid {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()}, not at {when.isoformat()}"
        )


def _check_issuer(issuer: x509.Certificate, intermediates_below: int) -> None:
    """RFC 5280 §6.1.4 (k), (l), (n): CA flag, pathLen and keyCertSign."""
    extensions = issuer.extensions
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise IssuerNotAuthorised(f"{_describe(issuer)} has no basicConstraints") from None
    if not constraints.ca:
        raise IssuerNotAuthorised(f"{_describe(issuer)} is not a CA (basicConstraints)")
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise IssuerNotAuthorised(f"{_describe(issuer)}: pathLenConstraint exceeded")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise IssuerNotAuthorised(f"{_describe(issuer)} lacks keyUsage keyCertSign")
    for extension in extensions:
        if extension.critical and extension.oid not in _KNOWN_CRITICAL:
            raise IssuerNotAuthorised(
                f"{_describe(issuer)} has unknown critical extension {extension.oid.dotted_string}"
            )


def _check_eku(cert: x509.Certificate, required: x509.ObjectIdentifier) -> None:
    """The EKU extension must be present and list ``required`` (or anyExtendedKeyUsage)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise ExtendedKeyUsageMissing(
            f"{_describe(cert)} has no extendedKeyUsage ({required.dotted_string} required)"
        ) from None
    if required not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise ExtendedKeyUsageMissing(
            f"{_describe(cert)} lacks extendedKeyUsage {required.dotted_string}"
        )
