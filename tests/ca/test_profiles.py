"""S/MIME subscriber profiles: what a gateway asks for and what the CA issues (or refuses)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.hierarchy import build_issuing_ca, build_root_ca, ca_name
from ca.profiles.builder import (
    CaEndpoints,
    IssuanceRequest,
    KeyPurpose,
    Organization,
    PreparedCertificate,
    ProfileKind,
    build_tbs,
    compose,
    random_serial,
)
from ca.profiles.errors import (
    EmailNotAllowed,
    EndpointInvalid,
    KeyNotAllowed,
    ProfileError,
    SerialInvalid,
    SubjectNotComposable,
    ValidityTooLong,
)
from ca.profiles.lint import CertificateLinter, Severity, findings_at_or_above

TEMPLATE_CN = "Secure Mail: Gateway Certificate"
CA_POLICY = "1.3.6.1.4.1.99999.1.1"
ORG = Organization("Example AG", "NTRCH-CHE-123.456.789", "CH", ("example.ch",))
ENDPOINTS = CaEndpoints(
    "http://ca.example.ch/crl/smime.crl", "http://ca.example.ch/certs/smime.cer", CA_POLICY
)


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: rsa.RSAPrivateKey
    ca_file: Path
    untrusted_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    now = datetime.now(UTC) - timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root_ca(root_key, ca_name("Example Root CA", "Example AG", "CH"), now=now)
    issuing_key = rsa.generate_private_key(65537, 3072)
    issuing = build_issuing_ca(
        issuing_key.public_key(),
        ca_name("Example S/MIME CA", "Example AG", "CH"),
        root,
        root_key,
        now=now,
        crl_url="http://ca.example.ch/crl/root.crl",
        ca_issuers_url="http://ca.example.ch/certs/root.cer",
    )
    d = tmp_path_factory.mktemp("pki")
    (d / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (d / "issuing.pem").write_bytes(issuing.public_bytes(serialization.Encoding.PEM))
    return Pki(root, issuing, issuing_key, d / "root.pem", d / "issuing.pem")


@pytest.fixture(scope="module")
def linter() -> CertificateLinter:
    return CertificateLinter()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(o, v) for o, v in attrs])


TOTEMO_SILVER = _name((NameOID.COMMON_NAME, TEMPLATE_CN))
TOTEMO_GOLD = _name(
    (NameOID.COMMON_NAME, TEMPLATE_CN),
    (NameOID.ORGANIZATION_NAME, "Example AG"),
    (NameOID.COUNTRY_NAME, "CH"),
)


def _request(key: object, subject: x509.Name = TOTEMO_SILVER, **kw: object) -> IssuanceRequest:
    base = IssuanceRequest(
        public_key=key.public_key(),  # type: ignore[attr-defined]
        requested_subject=subject,
        emails=("alice@example.ch",),
        validity=timedelta(days=365),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _prepare(pki: Pki, kind: ProfileKind, request: IssuanceRequest) -> PreparedCertificate:
    return build_tbs(kind, request, ORG, pki.issuing, ENDPOINTS, now=datetime.now(UTC))


def _openssl_verify(
    pki: Pki, leaf: x509.Certificate, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "leaf.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            str(pki.ca_file),
            "-untrusted",
            str(pki.untrusted_file),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("kind", list(ProfileKind))
@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
def test_gateway_gets_a_certificate_that_openssl_verifies_and_pkilint_passes(
    kind: ProfileKind,
    key_name: str,
    pki: Pki,
    linter: CertificateLinter,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    key = request.getfixturevalue(key_name)
    subject = TOTEMO_GOLD if kind is not ProfileKind.MAILBOX else TOTEMO_SILVER
    req = _request(key, subject, given_name="Alice", surname="Muster")
    prepared = _prepare(pki, kind, req)
    assert findings_at_or_above(linter.check_prepared(prepared), Severity.WARNING) == []
    cert = prepared.sign(pki.issuing_key)

    findings = linter.lint(cert.public_bytes(serialization.Encoding.DER), kind)
    assert findings_at_or_above(findings, Severity.WARNING) == [], findings
    # detected from the reserved policy OID, too
    assert linter.lint(cert.public_bytes(serialization.Encoding.DER)) == findings

    result = _openssl_verify(pki, cert, tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr


def test_silver_template_cn_is_replaced_by_the_email_and_the_change_recorded(
    pki: Pki, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    prepared = _prepare(pki, ProfileKind.MAILBOX, _request(ec_key))
    cert = prepared.sign(pki.issuing_key)

    assert cert.subject.rfc4514_string() == "CN=alice@example.ch"
    (change,) = prepared.changes
    assert (change.attribute, change.requested, change.issued) == (
        "CN",
        TEMPLATE_CN,
        "alice@example.ch",
    )
    assert "mailbox address" in change.reason


def test_gold_template_becomes_the_persons_name_at_the_validated_organisation(
    pki: Pki, rsa_key: rsa.RSAPrivateKey
) -> None:
    req = _request(rsa_key, TOTEMO_GOLD, given_name="Anna Maria", surname="Muster")
    prepared = _prepare(pki, ProfileKind.SPONSOR, req)
    subject = prepared.sign(pki.issuing_key).subject

    def get(oid: x509.ObjectIdentifier) -> list[object]:
        return [a.value for a in subject.get_attributes_for_oid(oid)]

    assert get(NameOID.COMMON_NAME) == ["Anna Maria Muster"]
    assert get(NameOID.GIVEN_NAME) == ["Anna Maria"]
    assert get(NameOID.SURNAME) == ["Muster"]
    assert get(NameOID.ORGANIZATION_NAME) == ["Example AG"]
    assert get(NameOID.ORGANIZATION_IDENTIFIER) == ["NTRCH-CHE-123.456.789"]
    assert get(NameOID.COUNTRY_NAME) == ["CH"]
    changed = {c.attribute: c for c in prepared.changes}
    assert changed["CN"].requested == TEMPLATE_CN and changed["CN"].issued == "Anna Maria Muster"
    assert changed["organizationIdentifier"].requested is None  # added, not requested
    assert "O" not in changed and "C" not in changed  # requested as validated: kept


def test_sponsor_names_are_taken_from_a_requested_personal_cn_and_recorded(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    subject = _name((NameOID.COMMON_NAME, "Anna Maria Muster"), (NameOID.COUNTRY_NAME, "CH"))
    composed = compose(ProfileKind.SPONSOR, _request(rsa_key, subject), ORG)
    assert composed.subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Anna Maria"
    assert composed.subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Muster"
    (gn,) = composed.changes_for("givenName")
    assert gn.requested is None and "derived from the requested commonName" in gn.reason
    assert composed.changes_for("CN") == ()  # the requested CN is the issued CN


def test_sponsor_without_any_personal_name_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(SubjectNotComposable, match="surname"):
        compose(ProfileKind.SPONSOR, _request(rsa_key, TOTEMO_GOLD), ORG)
    with pytest.raises(SubjectNotComposable):
        compose(
            ProfileKind.SPONSOR,
            _request(rsa_key, _name((NameOID.COMMON_NAME, "Anna Muster"))),
            ORG,
            names_from_common_name=False,
        )


def test_organization_profile_keeps_a_cn_equal_to_the_organisation_name(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    subject = _name((NameOID.COMMON_NAME, "Example AG"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "IT"))
    composed = compose(ProfileKind.ORGANIZATION, _request(rsa_key, subject), ORG)
    assert composed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example AG"
    (ou,) = composed.changes_for("OU")
    assert ou.issued is None and "Affiliate" in ou.reason


def test_mailbox_profile_drops_organisation_attributes_with_the_reason(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    composed = compose(ProfileKind.MAILBOX, _request(rsa_key, TOTEMO_GOLD), ORG)
    dropped = {c.attribute: c for c in composed.changes if c.issued is None}
    assert set(dropped) == {"O", "C"}
    assert "prohibited in the mailbox-validated profile" in dropped["O"].reason


def test_requested_email_address_attribute_is_the_validated_address(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    subject = _name((NameOID.COMMON_NAME, TEMPLATE_CN), (NameOID.EMAIL_ADDRESS, "x@other.org"))
    composed = compose(ProfileKind.MAILBOX, _request(rsa_key, subject), ORG)
    assert composed.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == (
        "alice@example.ch"
    )
    (e,) = composed.changes_for("emailAddress")
    assert (e.requested, e.issued) == ("x@other.org", "alice@example.ch")


def test_organisation_without_organization_identifier_cannot_get_ov_or_sv(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    org = replace(ORG, organization_identifier=None)
    for kind in (ProfileKind.ORGANIZATION, ProfileKind.SPONSOR):
        with pytest.raises(SubjectNotComposable, match="organizationIdentifier"):
            compose(kind, _request(rsa_key, given_name="A", surname="B"), org)
    assert compose(ProfileKind.MAILBOX, _request(rsa_key), org).subject.rfc4514_string()


def test_inconsistent_organization_identifier_is_refused_at_configuration() -> None:
    with pytest.raises(ProfileError, match="country DE"):
        Organization("Example AG", "NTRDE-HRB12345", "CH", ("example.ch",))
    with pytest.raises(ProfileError, match="registration"):
        Organization("Example AG", "CHE-123.456.789", "CH", ("example.ch",))


def test_rsa_1024_is_refused_with_the_br_minimum(pki: Pki) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    with pytest.raises(KeyNotAllowed, match="1024 bits is too weak.*2048"):
        _prepare(pki, ProfileKind.MAILBOX, _request(weak))


@pytest.mark.parametrize("curve", [ec.SECP521R1(), ec.SECP256K1()], ids=lambda c: c.name)
def test_curves_other_than_p256_and_p384_and_ed25519_are_refused(
    pki: Pki, curve: ec.EllipticCurve
) -> None:
    with pytest.raises(KeyNotAllowed, match=curve.name):
        _prepare(pki, ProfileKind.MAILBOX, _request(ec.generate_private_key(curve)))
    with pytest.raises(KeyNotAllowed, match="Ed25519"):
        _prepare(pki, ProfileKind.MAILBOX, _request(ed25519.Ed25519PrivateKey.generate()))


def test_p384_subscriber_keys_are_accepted(pki: Pki, linter: CertificateLinter) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    prepared = _prepare(pki, ProfileKind.MAILBOX, _request(key))
    linter.check(prepared.sign(pki.issuing_key).public_bytes(serialization.Encoding.DER))


@pytest.mark.parametrize(
    "emails", [("bob@other.org",), ("alice@example.ch", "bob@example.ch.evil.org")]
)
def test_email_outside_the_validated_domains_is_refused(
    rsa_key: rsa.RSAPrivateKey, emails: tuple[str, ...]
) -> None:
    with pytest.raises(EmailNotAllowed, match="not among the account's validated domains"):
        compose(ProfileKind.MAILBOX, _request(rsa_key, emails=emails), ORG)


def test_subdomains_of_a_validated_domain_are_allowed_and_all_addresses_go_to_the_san(
    pki: Pki, rsa_key: rsa.RSAPrivateKey
) -> None:
    req = _request(rsa_key, emails=("alice@Mail.Example.CH", "info@example.ch", "info@example.ch"))
    cert = _prepare(pki, ProfileKind.MAILBOX, req).sign(pki.issuing_key)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@mail.example.ch", "info@example.ch"]


@pytest.mark.parametrize("bad", ["no-at-sign", "a b@example.ch", "ü@example.ch", "a@example"])
def test_malformed_addresses_are_refused(rsa_key: rsa.RSAPrivateKey, bad: str) -> None:
    with pytest.raises(EmailNotAllowed):
        compose(ProfileKind.MAILBOX, _request(rsa_key, emails=(bad,)), ORG)


def test_three_year_validity_is_refused_with_the_reason(
    pki: Pki, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ValidityTooLong, match="1095 days.*825 days"):
        _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key, validity=timedelta(days=3 * 365)))
    with pytest.raises(ValidityTooLong):
        _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key, validity=timedelta(days=825)))


def test_longest_allowed_validity_passes_lint(
    pki: Pki, rsa_key: rsa.RSAPrivateKey, linter: CertificateLinter
) -> None:
    prepared = _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key, validity=timedelta(days=824)))
    cert = prepared.sign(pki.issuing_key)
    period = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    assert period == timedelta(days=824)
    linter.check(cert.public_bytes(serialization.Encoding.DER), ProfileKind.MAILBOX)


def test_certificate_may_not_outlive_the_issuing_ca(pki: Pki, rsa_key: rsa.RSAPrivateKey) -> None:
    late = pki.issuing.not_valid_after_utc - timedelta(days=30)
    with pytest.raises(ValidityTooLong, match="outlive the issuing CA"):
        build_tbs(ProfileKind.MAILBOX, _request(rsa_key), ORG, pki.issuing, ENDPOINTS, now=late)


def test_serials_are_random_positive_and_carry_at_least_64_bits(
    pki: Pki, rsa_key: rsa.RSAPrivateKey
) -> None:
    serials = [
        _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key)).sign(pki.issuing_key).serial_number
        for _ in range(8)
    ]
    assert len(set(serials)) == len(serials)
    assert all(64 < s.bit_length() <= 159 for s in serials)
    assert all(0 < random_serial() < 1 << 159 for _ in range(1000))
    with pytest.raises(SerialInvalid):
        build_tbs(
            ProfileKind.MAILBOX,
            _request(rsa_key),
            ORG,
            pki.issuing,
            ENDPOINTS,
            now=datetime.now(UTC),
            serial=12345,
        )


def test_extensions_follow_the_strict_profile(
    pki: Pki, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    rsa_cert = _prepare(pki, ProfileKind.ORGANIZATION, _request(rsa_key)).sign(pki.issuing_key)
    ec_cert = _prepare(pki, ProfileKind.ORGANIZATION, _request(ec_key)).sign(pki.issuing_key)
    ext = rsa_cert.extensions

    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_agreement and not ku.value.data_encipherment
    ec_ku = ec_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ec_ku.digital_signature and ec_ku.key_agreement and not ec_ku.key_encipherment
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    policies = [
        p.policy_identifier.dotted_string
        for p in ext.get_extension_for_class(x509.CertificatePolicies).value
    ]
    assert policies == ["2.23.140.1.5.2.3", CA_POLICY]
    crl = ext.get_extension_for_class(x509.CRLDistributionPoints).value[0]
    assert crl.full_name[0].value == "http://ca.example.ch/crl/smime.crl"
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [a.access_location.value for a in aia] == ["http://ca.example.ch/certs/smime.cer"]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = pki.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest and aki.authority_cert_issuer is None
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(rsa_key.public_key())
    san = ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical


def test_signing_only_and_encryption_only_key_usages(pki: Pki, rsa_key: rsa.RSAPrivateKey) -> None:
    def ku(purpose: KeyPurpose) -> x509.KeyUsage:
        prepared = _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key, purpose=purpose))
        return (
            prepared.sign(pki.issuing_key).extensions.get_extension_for_class(x509.KeyUsage).value
        )

    assert ku(KeyPurpose.SIGNING).digital_signature and not ku(KeyPurpose.SIGNING).key_encipherment
    enc = ku(KeyPurpose.ENCRYPTION)
    assert enc.key_encipherment and not enc.digital_signature


def test_https_or_ldap_revocation_urls_are_refused_for_strict_profiles() -> None:
    with pytest.raises(EndpointInvalid, match="HTTP only"):
        CaEndpoints("https://ca.example.ch/crl", "http://ca.example.ch/ca.cer")
    with pytest.raises(EndpointInvalid):
        CaEndpoints("http://ca.example.ch/crl", "ldap://ca.example.ch/ca")
    with pytest.raises(EndpointInvalid, match="outside the"):
        CaEndpoints("http://a.example/crl", "http://a.example/ca.cer", "2.23.140.1.5.1.3")


def test_signing_with_a_key_other_than_the_issuing_cas_is_refused(
    pki: Pki, rsa_key: rsa.RSAPrivateKey
) -> None:
    prepared = _prepare(pki, ProfileKind.MAILBOX, _request(rsa_key))
    with pytest.raises(ProfileError, match="not the issuing CA"):
        prepared.sign(rsa.generate_private_key(65537, 2048))


def test_organisation_comes_from_the_account_settings() -> None:
    from ca.settings.types import AccountSettings, Organisation

    account = AccountSettings(
        id="totemoag.ra",
        organisation=Organisation("Example AG", "CH", "NTRCH-CHE-123.456.789", locality="Bern"),
        email_domains=("Example.CH",),
        ra_certificates=(),
        products=("totemo-persogold",),
    )
    org = Organization.from_account(account)
    assert org == Organization(
        "Example AG", "NTRCH-CHE-123.456.789", "CH", ("example.ch",), locality="Bern"
    )
