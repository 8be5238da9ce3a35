"""In-process certificate linting with pkilint (CA/B Forum S/MIME BR, RFC 5280).

One :class:`CertificateLinter` per process: pkilint's validator trees are built once per
certificate type (a few ms each) and reused; a lock serialises their use, so one linter can be
shared by threads. A lint run costs a few milliseconds.

Certificate type: subscriber certificates are linted as the *strict* generation of the level
their :class:`~ca.profiles.types.ProfileKind` names (explicit, not guessed). ``lint(der)``
without a kind detects the type from the BR reserved policy OID
(``pkilint.cabf.smime.determine_validation_level_and_generation``) and refuses a certificate
that has none.

CA certificates: pkilint 0.13 has no S/MIME CA profile. ``lint_ca`` runs the RFC 5280
validators, and for a root additionally the CA/B Forum TLS BR root validators (the root
profile -- basicConstraints, keyUsage, SKI, no EKU -- is common to both BRs; TLS-specific
findings are reported, not filtered).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from pkilint import loader, validation
from pkilint.cabf import serverauth, smime
from pkilint.cabf.serverauth import serverauth_constants
from pkilint.cabf.smime.smime_constants import Generation, ValidationLevel
from pkilint.pkix import certificate, extension, name

from ca.profiles.builder import PreparedCertificate
from ca.profiles.errors import ProfileError
from ca.profiles.types import ProfileKind

__all__ = [
    "DEVELOPMENT_IGNORED_CODES",
    "CertificateLinter",
    "Finding",
    "LintFailed",
    "Severity",
    "findings_at_or_above",
]

_LEVELS = {
    ProfileKind.MAILBOX: ValidationLevel.MAILBOX,
    ProfileKind.ORGANIZATION: ValidationLevel.ORGANIZATION,
    ProfileKind.SPONSOR: ValidationLevel.SPONSORED,
}
_KINDS = {v: k for k, v in _LEVELS.items()}


class Severity(enum.IntEnum):
    """pkilint's severities, ordered so that a larger value is more severe."""

    DEBUG = 0
    INFO = 1
    NOTICE = 2
    WARNING = 3
    ERROR = 4
    FATAL = 5

    @classmethod
    def from_pkilint(cls, severity: validation.ValidationFindingSeverity) -> Severity:
        return cls[severity.name]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str | None
    node_path: str
    validator: str = ""

    def __str__(self) -> str:
        msg = f": {self.message}" if self.message else ""
        return f"{self.severity.name} {self.code} at {self.node_path}{msg}"


class LintFailed(ProfileError):
    """The certificate has findings at WARNING or above; the order fails with them."""

    def __init__(self, findings: Sequence[Finding], what: str = "certificate") -> None:
        self.findings = tuple(findings)
        super().__init__(f"{what} fails pkilint: " + "; ".join(str(f) for f in self.findings))


def findings_at_or_above(findings: Iterable[Finding], threshold: Severity) -> list[Finding]:
    return [f for f in findings if f.severity >= threshold]


def _findings(results: Iterable[validation.ValidationResult]) -> list[Finding]:
    out = []
    for result in results:
        for desc in result.finding_descriptions:
            out.append(
                Finding(
                    Severity.from_pkilint(desc.finding.severity),
                    desc.finding.code,
                    desc.message,
                    result.node.path,
                    result.validator.name,
                )
            )
    return sorted(out, key=lambda f: (-f.severity, f.code, f.node_path))


#: For development CAs whose CRL/AIA URLs point at 127.0.0.1 or a non-public name: pkilint
#: reports ``cabf.internal_domain_name`` (ERROR) for them, which would fail every order.
#: (``http://localhost/...`` additionally gives ``pkix.invalid_uri_syntax``: use 127.0.0.1.)
DEVELOPMENT_IGNORED_CODES = frozenset({"cabf.internal_domain_name"})


class CertificateLinter:
    """Reusable pkilint validators; ``check*`` raise LintFailed at WARNING or above.

    ``ignored_codes`` (opt-in, e.g. :data:`DEVELOPMENT_IGNORED_CODES`) are still reported by
    ``lint*`` but never fail a ``check*``.
    """

    def __init__(
        self,
        threshold: Severity = Severity.WARNING,
        ignored_codes: frozenset[str] = frozenset(),
    ) -> None:
        self.threshold = threshold
        self.ignored_codes = frozenset(ignored_codes)
        self._lock = threading.Lock()
        self._smime: dict[ProfileKind, Any] = {
            kind: certificate.create_pkix_certificate_validator_container(
                smime.create_decoding_validators(),
                smime.create_subscriber_validators(level, Generation.STRICT),
            )
            for kind, level in _LEVELS.items()
        }
        pkix_validators = [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ]
        self._pkix = certificate.create_pkix_certificate_validator_container(
            certificate.create_decoding_validators(
                name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
            ),
            pkix_validators,
        )
        self._tls_root = certificate.create_pkix_certificate_validator_container(
            serverauth.create_decoding_validators(),
            serverauth.create_validators(serverauth_constants.CertificateType.ROOT_CA),
        )
        self._throwaway: dict[tuple[str, int], CertificateIssuerPrivateKeyTypes] = {}

    # -- subscriber certificates ---------------------------------------------------------

    def lint(self, cert_der: bytes, kind: ProfileKind | None = None) -> list[Finding]:
        """All pkilint findings (any severity), most severe first."""
        doc = _load(cert_der)
        if kind is None:
            v_g = smime.determine_validation_level_and_generation(doc)
            if v_g is None:
                raise LintFailed(
                    [
                        Finding(
                            Severity.FATAL,
                            "cmcgate.no_smime_policy_oid",
                            "no CA/B Forum S/MIME reserved policy OID: not an S/MIME BR "
                            "certificate",
                            "certificate.tbsCertificate.extensions",
                        )
                    ]
                )
            level, generation = v_g
            if generation != Generation.STRICT or level not in _KINDS:
                raise LintFailed(
                    [
                        Finding(
                            Severity.ERROR,
                            "cmcgate.unsupported_smime_type",
                            f"{level}-{generation}: cmcgate issues MAILBOX, ORGANIZATION and "
                            "SPONSORED strict certificates only",
                            "certificate.tbsCertificate.extensions",
                        )
                    ]
                )
            kind = _KINDS[level]
        validator = self._smime[ProfileKind(kind)]
        with self._lock:
            return _findings(validator.validate(doc.root))

    def check(self, cert_der: bytes, kind: ProfileKind | None = None) -> list[Finding]:
        """Lint; raise LintFailed with the findings at or above the threshold, else return all."""
        findings = self.lint(cert_der, kind)
        bad = self._failing(findings)
        if bad:
            raise LintFailed(bad)
        return findings

    def _failing(self, findings: Iterable[Finding]) -> list[Finding]:
        return [
            f
            for f in findings_at_or_above(findings, self.threshold)
            if f.code not in self.ignored_codes
        ]

    def check_prepared(self, prepared: PreparedCertificate) -> list[Finding]:
        """Pre-issuance lint: sign with a throwaway key of the issuer's type, then ``check``.

        The CA key (HSM) is therefore never used for a certificate that would fail lint.
        """
        key = self._throwaway_key(prepared)
        cert = prepared.builder.sign(key, prepared.hash_algorithm)  # type: ignore[arg-type]
        return self.check(cert.public_bytes(serialization.Encoding.DER), prepared.kind)

    def _throwaway_key(self, prepared: PreparedCertificate) -> CertificateIssuerPrivateKeyTypes:
        pub = prepared.issuer_public_key
        key: CertificateIssuerPrivateKeyTypes
        if isinstance(pub, rsa.RSAPublicKey):
            spec = ("rsa", 2048)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            spec = (pub.curve.name, pub.key_size)
        else:
            raise ProfileError(f"no throwaway key for an issuer key {type(pub).__name__}")
        with self._lock:
            if spec not in self._throwaway:
                if spec[0] == "rsa":
                    key = rsa.generate_private_key(65537, 2048)
                else:
                    key = ec.generate_private_key(type(pub.curve)())  # type: ignore[union-attr]
                self._throwaway[spec] = key
            return self._throwaway[spec]

    # -- CA certificates -----------------------------------------------------------------

    def lint_ca(self, cert_der: bytes) -> list[Finding]:
        """RFC 5280 findings; for a self-signed root also the TLS BR root-CA findings."""
        doc = _load(cert_der)
        cert = x509.load_der_x509_certificate(cert_der)
        with self._lock:
            results = list(self._pkix.validate(doc.root))
            if cert.issuer == cert.subject:
                results += self._tls_root.validate(doc.root)
        return _findings(results)

    def check_ca(self, cert_der: bytes) -> list[Finding]:
        findings = self.lint_ca(cert_der)
        bad = self._failing(findings)
        if bad:
            raise LintFailed(bad, "CA certificate")
        return findings

    def lint_pkix(self, cert_der: bytes) -> list[Finding]:
        """RFC 5280 findings only (TLS server and access certificates)."""
        doc = _load(cert_der)
        with self._lock:
            return _findings(self._pkix.validate(doc.root))


def _load(cert_der: bytes) -> Any:
    try:
        return loader.load_der_certificate(cert_der, "certificate")
    except Exception as e:  # pyasn1 raises its own error types on malformed input
        raise LintFailed(
            [Finding(Severity.FATAL, "cmcgate.undecodable", str(e), "certificate")]
        ) from e
