"""The bundled CA end to end, once with its keys in SoftHSM2 and once in software key files.

One CA per backend for the whole module (initialising costs a key pair per CA level); the
tests issue, refuse and revoke on it and read back what the CA wrote: certificates checked by
``openssl verify`` and pkilint, CRLs by ``openssl crl``, orders, history and audit rows from
the store.
"""

from __future__ import annotations

import copy as copy_module
import functools
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as px

from ca.authority import CertificateAuthority, OrderRefused, shared_linter
from ca.init import initialise
from ca.keys import KeyNotExportable, KeyType
from ca.profiles.lint import CertificateLinter, Severity, findings_at_or_above
from ca.profiles.types import BR_POLICY_OIDS, ProfileKind
from ca.store.audit import audit_records, verify_audit
from ca.store.model import ISSUANCE_PATH, OrderStatus
from gateway.main import main as cli_main
from tests.fixtures.softhsm import SoftHsmToken, softhsm_missing_reason, softhsm_token_context

ACCOUNT = "totemoag.ra"
OTHER_ACCOUNT = "other.ra"
DOMAIN = "example.org"
ORG_ID = "NTRCH-CHE-123.456.789"
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


@dataclass
class BundledCa:
    backend: str
    directory: Path
    authority: CertificateAuthority
    token: SoftHsmToken | None

    @property
    def root_pem(self) -> Path:
        return self.directory / "root-ca.pem"

    @property
    def issuing_pem(self) -> Path:
        return self.directory / "issuing-ca.pem"


def _add_products(ca_yaml: Path) -> None:
    """Silver (mailbox), Gold (sponsor), organization, a manual Silver and a second account."""
    doc = yaml.safe_load(ca_yaml.read_text())
    base = doc["products"]["silver"]
    copy = lambda **kw: {**copy_module.deepcopy(base), **kw}  # noqa: E731 - no YAML aliases
    doc["products"]["gold"] = copy(profile="sponsor")
    doc["products"]["org"] = copy(profile="organization")
    doc["products"]["silver-manual"] = copy(approval="manual")
    doc["products"]["gold-manual"] = copy(profile="sponsor", approval="manual")
    doc["products"]["silver-p12"] = copy(key_generation="pkcs12")
    doc["accounts"][ACCOUNT]["products"] = [
        "silver", "gold", "org", "silver-manual", "gold-manual", "silver-p12"
    ]  # fmt: skip
    doc["accounts"][OTHER_ACCOUNT] = {
        "organisation": {"name": "Other GmbH", "country": "DE"},
        "email_domains": ["other.example"],
        "products": ["silver"],
    }
    ca_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))


def _initialise(directory: Path, backend: str, token: SoftHsmToken | None) -> BundledCa:
    options: dict[str, Any] = {}
    if token is not None:
        options = {
            "pkcs11_module": token.module_path,
            "token_label": token.token_label,
            "pin_file": token.pin_file,
        }
    initialise(
        directory,
        key_backend=backend,
        # RSA in the HSM, EC in software: both signature algorithms sign every story below.
        key_type=KeyType.RSA2048 if backend == "pkcs11" else KeyType.EC_P256,
        progress=lambda _line: None,
        base_url="http://pki.example.org",  # public URLs: no lint finding is excused
        email_domains=(DOMAIN,),
        organisation_name="Example AG",
        organization_identifier=ORG_ID,
        product_id="silver",
        **options,
    )
    _add_products(directory / "ca.yaml")
    authority = CertificateAuthority.open(directory / "ca.yaml")
    return BundledCa(backend, directory, authority, token)


@pytest.fixture(scope="module", params=["pkcs11", "software"])
def bundled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BundledCa]:
    directory = tmp_path_factory.mktemp(f"ca-{request.param}")
    if request.param == "pkcs11":
        reason = softhsm_missing_reason()
        if reason:
            pytest.skip(reason)
        with softhsm_token_context() as token:
            ca = _initialise(directory, "pkcs11", token)
            try:
                yield ca
            finally:
                ca.authority.close()
    else:
        ca = _initialise(directory, "software", None)
        try:
            yield ca
        finally:
            ca.authority.close()


# -- requests ---------------------------------------------------------------------------------


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def make_csr(
    key: Any,
    emails: tuple[str, ...] = (f"alice@{DOMAIN}",),
    subject: list[tuple[x509.ObjectIdentifier, str]] | None = None,
) -> bytes:
    if subject is None:
        subject = [(NameOID.COMMON_NAME, emails[0])] if emails else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    )
    if emails:
        san = x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(DER)


def openssl(*args: str, input_data: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, check=False
    )


def verify_smime(ca: BundledCa, cert: x509.Certificate, tmp_path: Path) -> str:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(PEM))
    done = openssl(
        "verify", "-x509_strict", "-purpose", "smimesign", "-CAfile", str(ca.root_pem),
        "-untrusted", str(ca.issuing_pem), str(leaf),
    )  # fmt: skip
    return done.stdout + done.stderr


def crl_entries(text: str) -> dict[int, str]:
    """``openssl crl -text`` output -> {serial: the entry's lines (date, reason)}."""
    found = re.findall(
        r"Serial Number: ([0-9A-Fa-f]+)\n(.*?)(?=Serial Number:|Signature Alg)", text, re.S
    )
    return {int(serial, 16): block for serial, block in found}


def serious_findings(cert: x509.Certificate) -> list[Any]:
    """pkilint at WARNING or above, with nothing ignored (not even development codes)."""
    linter = shared_linter(frozenset())
    return findings_at_or_above(linter.lint(cert.public_bytes(DER)), Severity.WARNING)


# -- the keys ---------------------------------------------------------------------------------


def test_the_ca_private_keys_cannot_be_read_out_of_their_key_backend(bundled: BundledCa) -> None:
    settings = bundled.authority.settings.ca
    labels = (settings.root.key_label, settings.issuing.key_label)
    for label in labels:
        handle = bundled.authority.keys.load(label)
        with pytest.raises(KeyNotExportable):
            handle.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    if bundled.token is None:
        # Software keys: only passphrase-encrypted PKCS#8 files are on disk.
        for path in (bundled.directory / "keys").iterdir():
            assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
            with pytest.raises(TypeError, match="[Pp]assword"):
                serialization.load_pem_private_key(path.read_bytes(), password=None)
        return
    token = bundled.token
    tok = pkcs11.lib(token.module_path).get_token(token_label=token.token_label)
    with tok.open(user_pin=None) as session:
        for label in labels:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            assert private[Attribute.SENSITIVE] is True
            assert private[Attribute.EXTRACTABLE] is False
            with pytest.raises(px.AttributeSensitive):
                private[Attribute.PRIVATE_EXPONENT]
            with pytest.raises(px.AttributeSensitive):
                private[Attribute.PRIME_1]
    assert not list((bundled.directory).glob("**/*.key"))


# -- issuance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subscriber_key", ["ec-p256", "rsa2048"])
def test_a_silver_mailbox_certificate_verifies_for_smime_signing_and_lints_clean(
    bundled: BundledCa, subscriber_key: str, tmp_path: Path
) -> None:
    key = ec_key() if subscriber_key == "ec-p256" else rsa.generate_private_key(65537, 2048)
    result = bundled.authority.submit(
        make_csr(key), ACCOUNT, "silver", "1y", requested_by="gateway"
    )
    cert = result.certificate
    assert cert is not None and result.order.status is OrderStatus.ISSUED
    assert "OK" in verify_smime(bundled, cert, tmp_path)
    assert serious_findings(cert) == []
    assert cert.subject.rfc4514_string() == f"CN=alice@{DOMAIN}"
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [BR_POLICY_OIDS[ProfileKind.MAILBOX]]
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value == "http://pki.example.org/crl/issuing.crl"
    history = bundled.authority.store.history(result.order.id)
    assert tuple(h.to_status for h in history) == ISSUANCE_PATH
    stored = bundled.authority.store.get_certificate(cert.serial_number)
    assert stored.der == cert.public_bytes(DER) and stored.order_id == result.order.id


def test_a_gold_sponsor_certificate_names_the_person_and_the_validated_organisation(
    bundled: BundledCa, tmp_path: Path
) -> None:
    result = bundled.authority.submit(
        make_csr(ec_key(), (f"hans.muster@{DOMAIN}",)), ACCOUNT, "gold", "2y",
        requested_by="gateway", given_name="Hans", surname="Muster",
    )  # fmt: skip
    cert = result.certificate
    assert cert is not None
    assert "OK" in verify_smime(bundled, cert, tmp_path)
    assert serious_findings(cert) == []
    subject = {a.oid: a.value for a in cert.subject}
    assert subject[NameOID.GIVEN_NAME] == "Hans" and subject[NameOID.SURNAME] == "Muster"
    # the requested CN is one of the validated addresses, so it stays (BR: CN = name or mailbox)
    assert subject[NameOID.COMMON_NAME] == f"hans.muster@{DOMAIN}"
    assert subject[NameOID.ORGANIZATION_NAME] == "Example AG"
    assert subject[NameOID.ORGANIZATION_IDENTIFIER] == ORG_ID
    assert subject[NameOID.COUNTRY_NAME] == "CH"
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert policies[0].policy_identifier == BR_POLICY_OIDS[ProfileKind.SPONSOR]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (729, 730)


def test_an_organization_certificate_carries_only_validated_organisation_data(
    bundled: BundledCa, tmp_path: Path
) -> None:
    result = bundled.authority.submit(
        make_csr(ec_key(), (f"info@{DOMAIN}",)), ACCOUNT, "org", requested_by="gateway"
    )
    cert = result.certificate
    assert cert is not None
    assert "OK" in verify_smime(bundled, cert, tmp_path)
    assert serious_findings(cert) == []
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == ORG_ID
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert policies[0].policy_identifier == BR_POLICY_OIDS[ProfileKind.ORGANIZATION]


def test_a_silver_request_with_a_totemo_template_subject_is_issued_with_the_changes_recorded(
    bundled: BundledCa,
) -> None:
    # Totemo's certSubjectDN template asks for O and C; the mailbox profile has no room for
    # them. That is a change the CA makes and records, not a reason to refuse the order.
    template = [
        (NameOID.COMMON_NAME, "Secure Mail: Gateway Certificate"),
        (NameOID.ORGANIZATION_NAME, "Evil Corp"),
        (NameOID.COUNTRY_NAME, "US"),
    ]
    csr = make_csr(ec_key(), (f"bob@{DOMAIN}",), subject=template)
    result = bundled.authority.submit(csr, ACCOUNT, "silver", requested_by="gateway")
    assert result.certificate is not None
    assert result.certificate.subject.rfc4514_string() == f"CN=bob@{DOMAIN}"
    changes = {
        c.attribute: c for c in bundled.authority.store.get_order(result.order.id).subject_changes
    }
    assert changes["O"].requested == "Evil Corp" and changes["O"].issued is None
    assert changes["C"].requested == "US" and changes["C"].issued is None
    assert changes["CN"].issued == f"bob@{DOMAIN}"
    assert all(c.reason for c in changes.values())


# -- refusals ---------------------------------------------------------------------------------


def _bad_signature() -> bytes:
    der = bytearray(make_csr(rsa.generate_private_key(65537, 2048)))
    der[-1] ^= 0x01  # the last byte of the RSA signature
    return bytes(der)


def _order(
    csr: Callable[[], bytes], account: str = ACCOUNT, product: str = "silver", **kw: Any
) -> dict[str, Any]:
    return {"csr": csr, "account": account, "product": product, **kw}


REFUSALS = {
    "csr with a bad signature": (_order(_bad_signature), "pop_failed", "signature does not verify"),
    "rsa-1024 key": (
        _order(lambda: make_csr(rsa.generate_private_key(65537, 1024))),
        "bad_alg",
        "at least 2048 bits",
    ),
    "secp256k1 key": (
        _order(lambda: make_csr(ec_key(ec.SECP256K1()))),
        "bad_alg",
        "secp256k1 is not accepted",
    ),
    "p-521 key": (
        _order(lambda: make_csr(ec_key(ec.SECP521R1()))),
        "bad_alg",
        "secp521r1 is not accepted",
    ),
    "email outside the account's domains": (
        _order(lambda: make_csr(ec_key(), ("mallory@evil.example",))),
        "bad_identity",
        "mallory@evil.example is outside the account's validated domains",
    ),
    "email of another account's domain": (
        _order(lambda: make_csr(ec_key(), ("carol@other.example",))),
        "bad_identity",
        "outside the account's validated domains",
    ),
    "no email address at all": (
        _order(lambda: make_csr(ec_key(), (), [(NameOID.COMMON_NAME, "Alice")])),
        "bad_request",
        "names no email address",
    ),
    "sponsor order without a personal name": (
        _order(lambda: make_csr(ec_key()), product="gold"),
        "bad_request",
        "needs the person's validated surname",
    ),
    "validity the product does not offer": (
        _order(lambda: make_csr(ec_key()), validity="3y"),
        "bad_request",
        "validity 3y not offered by product silver (allowed: 1y, 2y)",
    ),
    "validity beyond the BR maximum": (
        _order(lambda: make_csr(ec_key()), validity="825d"),
        "bad_request",
        "validity 825d not offered",
    ),
    "validity that is not a duration": (
        _order(lambda: make_csr(ec_key()), validity="forever"),
        "bad_request",
        "not like 90d, 6m or 1y",
    ),
    "unknown product": (
        _order(lambda: make_csr(ec_key()), product="platinum"),
        "bad_identity",
        "unknown product 'platinum'",
    ),
    "unknown account": (
        _order(lambda: make_csr(ec_key()), account="nobody.ra"),
        "bad_identity",
        "unknown account 'nobody.ra'",
    ),
    "product not booked by the account": (
        _order(lambda: make_csr(ec_key(), ("carol@other.example",)), OTHER_ACCOUNT, "gold"),
        "bad_identity",
        "product 'gold' is not available to account 'other.ra'",
    ),
    "not a PKCS#10 request": (
        _order(lambda: b"\x30\x03\x02\x01\x00"),
        "bad_request",
        "not a PKCS#10 request",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_a_bad_request_fails_its_order_with_a_reason_issues_nothing_and_is_audited(
    bundled: BundledCa, case: str
) -> None:
    order, category, reason = REFUSALS[case]
    store = bundled.authority.store
    certificates_before = len(store.find_certificates())
    with pytest.raises(OrderRefused) as refused:
        bundled.authority.submit(
            order["csr"](), order["account"], order["product"], order.get("validity"),
            requested_by="gateway",
        )  # fmt: skip
    assert refused.value.category == category
    assert reason in str(refused.value)
    failed = store.get_order(refused.value.order_id or "")
    assert failed.status is OrderStatus.FAILED
    assert failed.failure_reason == str(refused.value)
    assert failed.certificate_serial is None
    assert len(store.find_certificates()) == certificates_before
    assert store.find_certificates(order_id=failed.id) == []
    steps = [h.to_status for h in store.history(failed.id)]
    assert steps[-1] is OrderStatus.FAILED and OrderStatus.ISSUE not in steps
    events = [(r.event_type, r.actor) for r in audit_records(store, subject=failed.id)]
    assert events == [("order", "gateway"), ("fail", "ca")]
    assert audit_records(store, subject=failed.id)[-1].details["reason"] == str(refused.value)
    assert verify_audit(store).ok


@functools.cache
def _strict_linter() -> CertificateLinter:
    return CertificateLinter(threshold=Severity.INFO)  # pkilint's validators: built once


class _StricterAfterIssuance:
    """The CA's own pre-issuance lint, but a post-issuance pkilint that fails even on INFO."""

    def __init__(self, pre: CertificateLinter) -> None:
        self.pre = pre
        self.post = _strict_linter()

    def check_prepared(self, prepared: Any) -> list[Any]:
        return self.pre.check_prepared(prepared)

    def check(self, cert_der: bytes, kind: Any = None) -> list[Any]:
        return self.post.check(cert_der, kind)


def test_a_certificate_failing_post_issuance_lint_is_revoked_and_its_order_failed(
    bundled: BundledCa,
) -> None:
    authority, store = bundled.authority, bundled.authority.store
    usual = authority.linter
    authority.linter = _StricterAfterIssuance(usual)  # type: ignore[assignment]
    try:
        with pytest.raises(OrderRefused) as refused:
            authority.submit(
                make_csr(ec_key(), (f"gina@{DOMAIN}",)), ACCOUNT, "silver", requested_by="gw"
            )
    finally:
        authority.linter = usual
    assert refused.value.category == "internal"
    assert "post-issuance lint failed" in str(refused.value)
    assert "pkix.subject_key_identifier_method_1_identified" in str(refused.value)
    order = store.get_order(refused.value.order_id or "")
    assert order.status is OrderStatus.FAILED
    (cert,) = store.find_certificates(order_id=order.id)
    assert cert.status.value == "REVOKED"
    revocation = store.get_revocation(cert.serial)
    assert revocation is not None and revocation.reason_name == "superseded"
    crl = x509.load_der_x509_crl((bundled.directory / "crl" / "issuing.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


# -- manual approval --------------------------------------------------------------------------


def test_a_manual_product_waits_for_an_ra_operator_and_is_issued_on_approval(
    bundled: BundledCa, tmp_path: Path
) -> None:
    store = bundled.authority.store
    submitted = bundled.authority.submit(
        make_csr(ec_key(), (f"dora@{DOMAIN}",)), ACCOUNT, "silver-manual", requested_by="gateway"
    )
    assert submitted.pending and submitted.order.status is OrderStatus.PENDING_AUTHORIZATION
    assert store.find_certificates(order_id=submitted.order.id) == []

    approved = bundled.authority.approve(submitted.order.id, "rita.operator")
    cert = approved.certificate
    assert cert is not None and approved.order.status is OrderStatus.ISSUED
    assert "OK" in verify_smime(bundled, cert, tmp_path)
    steps = [h.to_status for h in store.history(submitted.order.id)]
    assert steps == [OrderStatus.NEW, OrderStatus.PENDING_AUTHORIZATION, *ISSUANCE_PATH[1:]]
    authorized = audit_records(store, subject=submitted.order.id, event_type="authorize")
    assert [r.actor for r in authorized] == ["rita.operator"]

    with pytest.raises(OrderRefused, match="is ISSUED, not waiting for approval"):
        bundled.authority.approve(submitted.order.id, "rita.operator")


def test_a_pkcs12_only_product_refuses_a_subscribers_csr_and_takes_the_cas_own(
    bundled: BundledCa,
) -> None:
    csr = make_csr(ec_key(), (f"pia@{DOMAIN}",))
    with pytest.raises(OrderRefused, match="only with server-side key generation") as refused:
        bundled.authority.submit(csr, ACCOUNT, "silver-p12", requested_by="cmc:ra")
    assert refused.value.category == "bad_request"
    assert bundled.authority.store.get_order(refused.value.order_id or "").status.is_final
    assert bundled.authority.store.find_certificates(email=f"pia@{DOMAIN}") == []

    made = bundled.authority.submit(
        csr, ACCOUNT, "silver-p12", requested_by="ra", server_side_key=True
    )
    assert made.certificate is not None
    with pytest.raises(OrderRefused, match="only with a CSR of the subscriber's own key"):
        bundled.authority.submit(csr, ACCOUNT, "silver", requested_by="ra", server_side_key=True)


def test_the_operator_approving_a_gold_order_gives_the_validated_personal_name(
    bundled: BundledCa, tmp_path: Path
) -> None:
    submitted = bundled.authority.submit(
        make_csr(ec_key(), (f"hans@{DOMAIN}",)), ACCOUNT, "gold-manual", requested_by="gateway"
    )
    assert submitted.pending
    approved = bundled.authority.approve(
        submitted.order.id, "rita.operator", given_name="Hans", surname="Muster"
    )
    assert approved.certificate is not None
    names = approved.certificate.subject
    assert names.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Hans"
    assert names.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Muster"
    assert "OK" in verify_smime(bundled, approved.certificate, tmp_path)
    assert serious_findings(approved.certificate) == []


# -- revocation and CRLs ----------------------------------------------------------------------


def test_a_revoked_certificate_is_on_the_issuing_crl_with_its_reason(
    bundled: BundledCa, tmp_path: Path
) -> None:
    result = bundled.authority.submit(
        make_csr(ec_key(), (f"eve@{DOMAIN}",)), ACCOUNT, "silver", requested_by="gateway"
    )
    assert result.certificate is not None
    serial = result.certificate.serial_number
    bundled.authority.revoke(serial, "keyCompromise", by="rita.operator", comment="lost laptop")

    crl_path = bundled.directory / "crl" / "issuing.crl"
    checked = openssl(
        "crl", "-in", str(crl_path), "-inform", "DER", "-CAfile", str(bundled.issuing_pem),
        "-noout",
    )  # fmt: skip
    assert "verify OK" in checked.stdout + checked.stderr, checked.stderr
    text = openssl("crl", "-in", str(crl_path), "-inform", "DER", "-noout", "-text").stdout
    entries = crl_entries(text)
    assert serial in entries, text
    assert "Key Compromise" in entries[serial]

    # The relying party's view: the revoked certificate no longer verifies with the CRL.
    crl_pem = tmp_path / "issuing-crl.pem"
    crl_pem.write_bytes(x509.load_der_x509_crl(crl_path.read_bytes()).public_bytes(PEM))
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(result.certificate.public_bytes(PEM))
    refused = openssl(
        "verify", "-crl_check", "-CRLfile", str(crl_pem), "-CAfile", str(bundled.root_pem),
        "-untrusted", str(bundled.issuing_pem), str(leaf),
    )  # fmt: skip
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr

    root_crl = bundled.directory / "crl" / "root.crl"
    checked = openssl(
        "crl", "-in", str(root_crl), "-inform", "DER", "-CAfile", str(bundled.root_pem), "-noout"
    )
    assert "verify OK" in checked.stdout + checked.stderr, checked.stderr


# -- audit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = {seq}", "record {seq}: modified"),
        ("DELETE FROM audit_log WHERE seq = {seq}", "record {seq}: deleted"),
    ],
    ids=["rewritten record", "deleted record"],
)
def test_tampering_with_the_ca_database_is_detected_by_audit_verify(
    bundled: BundledCa, tamper: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundled.authority.submit(
        make_csr(ec_key(), (f"frank@{DOMAIN}",)), ACCOUNT, "silver", requested_by="gateway"
    )
    copy = tmp_path / "ca"
    shutil.copytree(bundled.directory, copy)  # ca.yaml uses relative paths: the copy works
    assert cli_main(["ca", "audit", "verify", "--dir", str(copy)]) == 0
    assert "audit log intact" in capsys.readouterr().out

    with sqlite3.connect(copy / "ca.db") as db:
        (seq,) = db.execute("SELECT max(seq) FROM audit_log WHERE event_type = 'order'").fetchone()
        db.execute(tamper.format(seq=seq))
    assert cli_main(["ca", "audit", "verify", "--dir", str(copy)]) == 1
    assert named.format(seq=seq) in capsys.readouterr().out
