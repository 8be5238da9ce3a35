"""pkilint in the issuance path: bad certificates are caught before and after the CA signs."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ca.hierarchy import build_issuing_ca, build_root_ca, ca_name
from ca.profiles.builder import (
    CaEndpoints,
    IssuanceRequest,
    Organization,
    ProfileKind,
    authority_key_id,
    build_tbs,
)
from ca.profiles.errors import SubjectNotComposable
from ca.profiles.lint import (
    DEVELOPMENT_IGNORED_CODES,
    CertificateLinter,
    Finding,
    LintFailed,
    Severity,
    findings_at_or_above,
)
from ca.profiles.subject import attribute_label

ORG = Organization("Example AG", "NTRCH-CHE-123.456.789", "CH", ("example.ch",))
ENDPOINTS = CaEndpoints("http://ca.example.ch/smime.crl", "http://ca.example.ch/smime.cer")
NOW = datetime.now(UTC) - timedelta(minutes=5)
DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def linter() -> CertificateLinter:
    return CertificateLinter()


@pytest.fixture(scope="module")
def issuer() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, x509.Certificate]:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root_ca(root_key, ca_name("Lint Root", "Example AG", "CH"), now=NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_issuing_ca(
        key.public_key(),
        ca_name("Lint S/MIME CA", "Example AG", "CH"),
        root,
        root_key,
        now=NOW,
        crl_url="http://ca.example.ch/root.crl",
        ca_issuers_url="http://ca.example.ch/root.cer",
    )
    return cert, key, root


@pytest.fixture(scope="module")
def subscriber_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _good(issuer: tuple, key: rsa.RSAPrivateKey, kind: ProfileKind) -> x509.Certificate:
    cert, ca_key, _ = issuer
    req = IssuanceRequest(
        key.public_key(),
        x509.Name([]),
        ("alice@example.ch",),
        timedelta(days=365),
        given_name="Alice",
        surname="Muster",
    )
    return build_tbs(kind, req, ORG, cert, ENDPOINTS, now=NOW).sign(ca_key)


def _as_is(issuer: tuple, key: rsa.RSAPrivateKey, subject: x509.Name, policy: str) -> bytes:
    """What issuing the requested subject unchanged would give (for the lint to catch)."""
    cert, ca_key, _ = issuer
    builder = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .issuer_name(cert.subject)
        .subject_name(subject)
        .public_key(key.public_key())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(policy), None)]),
            False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("alice@example.ch")]), False)
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(ENDPOINTS.crl_url)], None, None, None
                    )
                ]
            ),
            False,
        )
        .add_extension(authority_key_id(cert), False)
    )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(DER)


def test_totemo_silver_template_issued_as_is_would_fail_with_unknown_cn_source(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Secure Mail: Gateway Certificate")]
    )
    der = _as_is(issuer, subscriber_key, subject, "2.23.140.1.5.1.3")
    with pytest.raises(LintFailed) as err:
        linter.check(der, ProfileKind.MAILBOX)
    codes = {f.code for f in err.value.findings}
    assert "cabf.smime.common_name_value_unknown_source" in codes
    assert "Secure Mail: Gateway Certificate" in str(err.value)


def test_ov_without_organization_identifier_would_fail_with_missing_attribute(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example AG"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example AG"),
        ]
    )
    der = _as_is(issuer, subscriber_key, subject, "2.23.140.1.5.2.3")
    findings = linter.lint(der, ProfileKind.ORGANIZATION)
    missing = [f for f in findings if f.code == "cabf.smime.missing_required_attribute"]
    assert missing and missing[0].severity is Severity.ERROR
    assert "2.5.4.97" in (missing[0].message or "")
    assert missing[0].node_path.startswith("certificate.tbsCertificate.subject")


def test_linting_as_the_wrong_kind_reports_the_missing_reserved_policy(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    der = _good(issuer, subscriber_key, ProfileKind.MAILBOX).public_bytes(DER)
    codes = {f.code for f in linter.lint(der, ProfileKind.SPONSOR)}
    assert "cabf.smime.no_required_reserved_policy_oid" in codes


def test_certificate_without_smime_policy_cannot_be_linted_by_detection(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice@example.ch")])
    der = _as_is(issuer, subscriber_key, subject, "1.3.6.1.4.1.99999.7")
    with pytest.raises(LintFailed, match="no_smime_policy_oid"):
        linter.lint(der)
    with pytest.raises(LintFailed, match="undecodable"):
        linter.lint(b"\x30\x03\x02\x01\x00")


def test_pre_issuance_lint_never_touches_the_ca_key(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    cert, _, _ = issuer
    req = IssuanceRequest(
        subscriber_key.public_key(), x509.Name([]), ("alice@example.ch",), timedelta(days=365)
    )
    prepared = build_tbs(ProfileKind.MAILBOX, req, ORG, cert, ENDPOINTS, now=NOW)
    findings = linter.check_prepared(prepared)  # no CA key passed at all
    assert findings_at_or_above(findings, Severity.NOTICE) == []


def test_the_pkilint_cli_independently_finds_nothing_to_warn_about(
    issuer: tuple, subscriber_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    cli = Path(sys.executable).parent / "lint_cabf_smime_cert"
    pem = tmp_path / "sponsor.pem"
    cert = _good(issuer, subscriber_key, ProfileKind.SPONSOR)
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(  # one subprocess (~0.7 s): the in-process linter covers the rest
        [str(cli), "lint", "-d", "-o", "-s", "WARNING", str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stderr.strip() == "SPONSORED-STRICT"
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout


def test_one_linter_is_safe_to_share_between_threads(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    """(Its speed is measured by bench/ca.py, not asserted here.)"""
    ders = [_good(issuer, subscriber_key, k).public_bytes(DER) for k in ProfileKind]
    expected = [linter.lint(d) for d in ders]

    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert [linter.lint(d) for d in ders] == expected
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_ca_certificates_have_no_findings_at_warning_or_above(
    linter: CertificateLinter, issuer: tuple
) -> None:
    issuing, _, root = issuer
    for cert in (root, issuing):
        findings = linter.check_ca(cert.public_bytes(DER))
        assert all(f.severity < Severity.WARNING for f in findings)


def test_findings_render_as_one_line_reasons() -> None:
    f = Finding(Severity.ERROR, "cabf.smime.x", "bad CN", "certificate.tbsCertificate.subject")
    assert str(f) == "ERROR cabf.smime.x at certificate.tbsCertificate.subject: bad CN"
    assert str(LintFailed([f])) == f"certificate fails pkilint: {f}"


# cryptography refuses to build a CN over 64 UTF-8 bytes (40 characters can be 160 bytes).
_TEXT = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=40).filter(
    lambda text: len(text.encode()) <= 64
)
_ATTRS = st.sampled_from(
    [
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.GIVEN_NAME,
        NameOID.SURNAME,
        NameOID.SERIAL_NUMBER,
        NameOID.TITLE,
        NameOID.PSEUDONYM,
        NameOID.ORGANIZATION_IDENTIFIER,
    ]
)
_TEMPLATE_VALUES = ["Secure Mail: Gateway Certificate", "Example AG", "alice@example.ch", "-"]
_SUBJECTS = st.lists(
    st.one_of(
        st.tuples(
            _ATTRS,
            st.one_of(st.sampled_from([*_TEMPLATE_VALUES, "Anna Muster"]), _TEXT.filter(bool)),
        ),
        st.tuples(st.just(NameOID.COUNTRY_NAME), st.sampled_from(["CH", "DE", "US"])),
        st.tuples(st.just(NameOID.EMAIL_ADDRESS), st.sampled_from(["x@y.org", "info@example.ch"])),
    ),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(list(ProfileKind)), attrs=_SUBJECTS)
@example(kind=ProfileKind.SPONSOR, attrs=[(NameOID.GIVEN_NAME, "-"), (NameOID.SURNAME, "Muster")])
def test_any_requested_subject_is_issued_lint_clean_or_refused_with_a_reason(
    linter: CertificateLinter,
    issuer: tuple,
    subscriber_key: rsa.RSAPrivateKey,
    kind: ProfileKind,
    attrs: list[tuple[x509.ObjectIdentifier, str]],
) -> None:
    requested = x509.Name([x509.NameAttribute(o, v) for o, v in attrs])
    req = IssuanceRequest(
        subscriber_key.public_key(),
        requested,
        ("alice@example.ch", "info@example.ch"),
        timedelta(days=365),
    )
    try:
        prepared = build_tbs(kind, req, ORG, issuer[0], ENDPOINTS, now=NOW)
    except SubjectNotComposable as e:  # only a sponsor request without a usable personal name
        # (no surname at all, or a requested given name/surname that is only punctuation)
        reason = str(e)
        assert kind is ProfileKind.SPONSOR, reason
        assert "surname" in reason or "SN " in reason or "only punctuation" in reason, reason
        return
    linter.check_prepared(prepared)  # raises LintFailed on any WARNING or worse
    issued = {(a.oid, a.value) for a in prepared.composed.subject}
    recorded = {(c.attribute, c.requested) for c in prepared.changes if c.requested is not None}
    for oid, value in {(a.oid, a.value) for a in requested} - issued:
        assert (attribute_label(oid), value) in recorded  # nothing vanishes silently


def test_a_development_ca_on_127_0_0_1_fails_lint_unless_internal_names_are_ignored(
    linter: CertificateLinter, issuer: tuple, subscriber_key: rsa.RSAPrivateKey
) -> None:
    local = CaEndpoints("http://127.0.0.1:8080/smime.crl", "http://127.0.0.1:8080/smime.cer")
    req = IssuanceRequest(
        subscriber_key.public_key(), x509.Name([]), ("alice@example.ch",), timedelta(days=365)
    )
    prepared = build_tbs(ProfileKind.MAILBOX, req, ORG, issuer[0], local, now=NOW)
    with pytest.raises(LintFailed, match="cabf.internal_domain_name"):
        linter.check_prepared(prepared)
    dev = CertificateLinter(ignored_codes=DEVELOPMENT_IGNORED_CODES)
    codes = {f.code for f in dev.check_prepared(prepared)}
    assert "cabf.internal_domain_name" in codes  # still reported, no longer fatal
