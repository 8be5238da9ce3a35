"""Certificate path validation, small and strict (RFC 5280 §6, the parts a CMC/S/MIME peer
needs): each link's signature, validity at a given time, CA flag, keyCertSign and pathLen on
issuers, and an optional extended key usage on the end certificate.

Not done: name constraints, policies, revocation (the caller checks CRLs/OCSP if it must).
Unknown critical extensions on issuers are refused.

Path building is a depth-first search over the certificates whose subject is the name a
certificate's issuer field asks for (RFC 4158 §2 calls them the candidates). Certificates
that sign each other (cross-certification) make that search exponential: a signed mail
carrying a few dozen CA certificates certified by each other would keep a core busy for
hours. So one search is bounded by :class:`PathBudget` — path length, candidates looked at,
signature checks made — and refuses with :class:`~cmc.errors.PathSearchExhausted` when the
budget runs out. Legitimate paths are found long before: candidates are tried anchors first
and, among equals, those whose key the child's authorityKeyIdentifier names; cheap checks
(validity, CA flags) come before the signature, and one (certificate, issuer key) pair is
verified at most once.

Not :mod:`cryptography.x509.verification`: its ``ClientVerifier`` can be configured for
S/MIME (an ``ExtensionPolicy`` with an emailProtection EKU validator) and bounds its own
search, but it reports every failure as one ``VerificationError`` string, while callers here
need to tell "no path to an anchor" (an *unknown* signer) from an expired, forged or non-CA
link (an *invalid* signature), and it applies the Web PKI profile to every certificate
(authorityKeyIdentifier mandatory, RSA of 2048 bits or more, no Ed25519), which certificates
from older or smaller CAs fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    PathSearchExhausted,
    UntrustedSigner,
)

#: Longest path tried, anchors included; deeper hierarchies are not used for CMC or mail.
MAX_DEPTH = 8
#: Signature checks one search may make. A real path needs one per link; cross-certified
#: alternatives and renewed CAs under the same name add a few more.
MAX_SIGNATURE_CHECKS = 64
#: Candidate issuers (certificates carrying the issuer name sought) one search may look at.
MAX_CANDIDATES = 1024

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


@dataclass
class PathBudget:
    """The work one path search may do (limits) and has done (counters).

    Pass one to :func:`verify_chain` to read the counters afterwards; each call without one
    gets a fresh default budget.
    """

    max_signature_checks: int = MAX_SIGNATURE_CHECKS
    max_candidates: int = MAX_CANDIDATES
    signature_checks: int = 0
    candidates: int = 0

    def count_candidate(self) -> None:
        if self.candidates >= self.max_candidates:
            self._exhausted()
        self.candidates += 1

    def count_signature_check(self) -> None:
        if self.signature_checks >= self.max_signature_checks:
            self._exhausted()
        self.signature_checks += 1

    def _exhausted(self) -> None:
        raise PathSearchExhausted(
            f"path search gave up after {self.signature_checks} signature checks and "
            f"{self.candidates} candidate issuers (too many cross-certified CA certificates)"
        )


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
    budget: PathBudget | None = None,
) -> list[x509.Certificate]:
    """Return the path ``[leaf, ..., anchor]`` or raise an :class:`UntrustedSigner` subtype.

    The first complete valid path wins; when none exists the last link that failed is
    reported, so the error names what actually failed (expired, not a CA, bad signature).
    :class:`PathSearchExhausted` when ``budget`` (default: a fresh :class:`PathBudget`)
    runs out first.
    """
    when = (at or datetime.now(UTC)).astimezone(UTC)
    if not anchors:
        raise UntrustedSigner("no trust anchors configured")
    _check_validity(leaf, when)
    if required_eku is not None:
        _check_eku(leaf, required_eku)
    search = _Search(intermediates, anchors, when, budget or PathBudget())
    if _der(leaf) in search.anchor_ders:
        return [leaf]
    path = search.extend([leaf])
    if path is not None:
        return path
    if search.failure is not None:
        raise search.failure
    raise UntrustedSigner(f"no issuer of {_describe(leaf)} leads to a trust anchor")


class _Search:
    """One bounded depth-first search (see the module doc)."""

    def __init__(
        self,
        intermediates: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        when: datetime,
        budget: PathBudget,
    ) -> None:
        self.when = when
        self.budget = budget
        self.anchor_ders = {_der(anchor) for anchor in anchors}
        self.failure: UntrustedSigner | None = None
        #: subject (DER) -> candidates with that subject, anchors first, no duplicates
        self.by_subject: dict[bytes, list[tuple[bytes, x509.Certificate]]] = {}
        seen: set[bytes] = set()
        for cert in [*anchors, *intermediates]:
            der = _der(cert)
            if der not in seen:
                seen.add(der)
                self.by_subject.setdefault(cert.subject.public_bytes(), []).append((der, cert))
        #: certificate DER -> (key identifier computed from its key, subjectKeyIdentifier)
        self.key_ids: dict[bytes, tuple[bytes | None, bytes | None]] = {}
        #: (child DER, issuer public key DER) -> the signature check's outcome
        self.signatures: dict[tuple[bytes, bytes], str | None] = {}

    def extend(self, path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        child = path[-1]
        if len(path) >= MAX_DEPTH:
            return None
        on_path = {_der(cert) for cert in path}
        for issuer_der, issuer in self._candidates(child):
            self.budget.count_candidate()
            if issuer_der in on_path:
                continue
            try:
                self._check_link(child, issuer, len(path) - 1)
            except UntrustedSigner as exc:
                self.failure = exc
                continue
            if issuer_der in self.anchor_ders:
                return [*path, issuer]
            found = self.extend([*path, issuer])
            if found is not None:
                return found
        return None

    def _candidates(self, child: x509.Certificate) -> list[tuple[bytes, x509.Certificate]]:
        """Certificates named as ``child``'s issuer, most promising first: anchors, then
        those whose key ``child``'s authorityKeyIdentifier names — computed from the key
        (RFC 5280 §4.2.1.2 method 1, which certificates stuffed in beside the real issuer
        cannot fake) before a subjectKeyIdentifier that merely claims it."""
        found = self.by_subject.get(child.issuer.public_bytes(), [])
        wanted = _authority_key_id(child)
        if wanted is None or len(found) < 2:
            return found

        def rank(item: tuple[bytes, x509.Certificate]) -> tuple[bool, int]:
            der, cert = item
            if der not in self.key_ids:
                self.key_ids[der] = _key_ids(cert)
            from_key, claimed = self.key_ids[der]
            named = 0 if from_key == wanted else 1 if claimed == wanted else 2
            return der not in self.anchor_ders, named

        return sorted(found, key=rank)

    def _check_link(
        self, child: x509.Certificate, issuer: x509.Certificate, intermediates_below: int
    ) -> None:
        _check_validity(issuer, self.when)
        _check_issuer(issuer, intermediates_below)
        key = (_der(child), _spki(issuer))
        if key not in self.signatures:
            self.budget.count_signature_check()
            self.signatures[key] = _check_signature(child, issuer)
        failure = self.signatures[key]
        if failure is not None:
            raise ChainSignatureInvalid(
                f"{_describe(child)} is not validly signed by {_describe(issuer)}: {failure}"
            )


def _check_signature(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    try:
        child.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return str(exc) or "bad"
    return None


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    return value.key_identifier


def _spki(cert: x509.Certificate) -> bytes:
    """``cert``'s SubjectPublicKeyInfo; the whole certificate for a key type not supported
    (its signature check then fails with the reason)."""
    try:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return _der(cert)


def _key_ids(cert: x509.Certificate) -> tuple[bytes | None, bytes | None]:
    """The key identifier computed from ``cert``'s key, and the one it claims (its SKI)."""
    try:
        from_key: bytes | None = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    except (ValueError, TypeError, UnsupportedAlgorithm):
        from_key = None
    try:
        claimed = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        claimed = None
    return from_key, claimed


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
