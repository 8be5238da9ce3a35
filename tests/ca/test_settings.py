"""ca.yaml: typed settings out, and every mistake reported as FILE:LINE: problem."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.keys.base import KeyType
from ca.settings.loader import (
    Approval,
    Profile,
    SettingsError,
    Validity,
    dump_default_ca_yaml,
    load_ca_settings,
    parse_ca_settings,
)

GOOD = """\
version: 1
ca:
  listen: "0.0.0.0:8480"
  base_url: "http://ca.example.com/"
  keys:
    backend: pkcs11
    pkcs11:
      module: /usr/lib/softhsm/libsofthsm2.so
      token_label: cmcgate
      pin_file: secrets/hsm.pin
  root:
    key_label: root-ca
    key_type: rsa4096
    certificate: root.pem
  issuing:
    key_label: issuing-ca
    key_type: ec-p384
    certificate: issuing.pem
  crl:
    next_update_hours: 48
  ldap:
    url: ldap://127.0.0.1:3389
    bind_dn: cn=admin,dc=example,dc=com
    password_file: ldap.pass
    base_dn: ou=people,dc=example,dc=com
accounts:
  totemoag.ra:
    organisation:
      name: Totemo AG
      organization_identifier: NTRCH-CHE-123.456.789
      country: ch
    email_domains: [example.com, Example.ORG]
    ra_certificates:
      - sha256: ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789
      - subject: "CN=Totemo RA,O=Totemo AG,C=CH"
    products: [totemo-persogold]
products:
  totemo-persogold:
    profile: mailbox
    validities: [1y, 2y, 90d, 6m]
    key_types: [rsa2048, ec-p256]
    approval: manual
    allow_simple_request: yes
    publish_ldap: true
  totemo-org:
    profile: organization
    validities: 1y
"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def error_for(text: str, tmp_path: Path) -> SettingsError:
    path = tmp_path / "ca.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_ca_settings(path)
    return info.value


def test_a_complete_file_gives_typed_frozen_settings_with_paths_next_to_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ca.yaml"
    path.write_text(GOOD)
    s = load_ca_settings(path)
    assert s.ca.directory == tmp_path
    assert s.ca.database == f"sqlite:///{tmp_path}/ca.db"
    assert (s.ca.listen_host, s.ca.listen_port) == ("0.0.0.0", 8480)
    assert s.ca.base_url == "http://ca.example.com"
    assert s.ca.keys.backend_kwargs() == {
        "token_label": "cmcgate",
        "module_path": "/usr/lib/softhsm/libsofthsm2.so",
        "pin_file": str(tmp_path / "secrets/hsm.pin"),
    }
    assert s.ca.issuing.key_type is KeyType.EC_P384
    assert s.ca.root.certificate == tmp_path / "root.pem"
    assert s.ca.crl_next_update_hours == 48
    assert s.ca.ldap is not None and s.ca.ldap.base_dn == "ou=people,dc=example,dc=com"
    account = s.account("totemoag.ra")
    assert account is not None
    assert account.organisation.country == "CH"
    assert account.email_domains == ("example.com", "example.org")
    assert account.authorises(sha256="abcdef0123456789" * 4)
    assert account.authorises(subject="CN=Totemo RA, O=Totemo AG, C=CH")
    assert not account.authorises(sha256="00" * 32, subject="CN=Mallory")
    colons = ":".join(["AB", "CD", "EF", "01", "23", "45", "67", "89"] * 4)
    again = parse_ca_settings(GOOD.replace("ABCDEF0123456789" * 4, colons), base_dir=tmp_path)
    assert again.accounts[0].ra_certificates == account.ra_certificates
    assert account.email_allowed("alice@sub.example.com")
    assert not account.email_allowed("alice@example.net")
    product = s.product("totemo-persogold")
    assert product is not None
    assert product.profile is Profile.MAILBOX and product.approval is Approval.MANUAL
    assert [v.text for v in product.validities] == ["1y", "2y", "90d", "6m"]
    assert product.key_types == (KeyType.RSA2048, KeyType.EC_P256)
    assert product.allow_simple_request and product.publish_ldap
    org = s.product("totemo-org")
    assert org is not None and org.approval is Approval.AUTO and len(org.key_types) == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        product.approval = Approval.AUTO  # type: ignore[misc]


def test_validities_add_calendar_months_and_years() -> None:
    start = datetime(2024, 1, 31, tzinfo=UTC)
    assert Validity.parse("1m").add_to(start) == datetime(2024, 2, 29, tzinfo=UTC)
    assert Validity.parse("2y").add_to(datetime(2024, 2, 29, tzinfo=UTC)) == datetime(
        2026, 2, 28, tzinfo=UTC
    )
    assert Validity.parse("90d").add_to(start) == datetime(2024, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "    approval: manual",
            "    aproval: manual",
            "aproval",
            "products.totemo-persogold: unknown key 'aproval' (did you mean 'approval'?)",
        ),
        (
            "    validities: [1y, 2y, 90d, 6m]",
            "    validities: [1y, 3y]",
            "validities: [1y, 3y]",
            "validity 3y exceeds the S/MIME BR maximum of 825 days",
        ),
        (
            "    key_types: [rsa2048, ec-p256]",
            "    key_types:\n      - rsa2048\n      - rsa1024",
            "- rsa1024",
            "unknown key type 'rsa1024'",
        ),
        ("      country: ch", "      country: Switzerland", "country: Switzerland", "two-letter"),
        (
            "    next_update_hours: 48",
            "    next_update_hours: 500",
            "next_update_hours",
            "ca.crl.next_update_hours must be between 1 and 240",
        ),
        (
            '  base_url: "http://ca.example.com/"',
            '  base_url: "ftp://ca.example.com/"',
            "base_url",
            "ca.base_url must be an http:// URL",
        ),
        (
            "    products: [totemo-persogold]",
            "    products: [totemo-platinum]",
            "totemo-platinum",
            "unknown product 'totemo-platinum'",
        ),
        (
            "    publish_ldap: true",
            "    publish_ldap: maybe",
            "publish_ldap",
            "must be true or false",
        ),
        (
            "      token_label: cmcgate",
            "      token_label: cmcgate\n      pin_env: HSM_PIN",
            "    pkcs11:",
            "exactly one of pin_file or pin_env",
        ),
        (
            "    profile: organization",
            "    profile: organisation",
            "profile: organisation",
            "profile must be mailbox, sponsor or organization",
        ),
    ],
)
def test_each_mistake_is_reported_with_file_and_exact_line(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    err = error_for(text, tmp_path)
    assert err.line == line_of(text, needle)
    assert str(err).startswith(f"{tmp_path / 'ca.yaml'}:{err.line}: ")
    assert message in err.problem


def test_a_typo_at_the_top_level_names_line_and_suggestion(tmp_path: Path) -> None:
    err = error_for(GOOD.replace("products:\n  totemo-persogold", "prodcts:\n  totemo-persogold"),
                    tmp_path)  # fmt: skip
    assert str(err) == (
        f"{tmp_path / 'ca.yaml'}:37: top level: unknown key 'prodcts' (did you mean 'products'?)"
    )


def test_a_missing_required_key_points_at_its_section(tmp_path: Path) -> None:
    text = GOOD.replace("    certificate: issuing.pem\n", "")
    err = error_for(text, tmp_path)
    assert err.line == line_of(text, "  issuing:")
    assert "ca.issuing: missing required key 'certificate'" in err.problem


def test_duplicate_keys_and_aliases_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("  crl:\n", "  listen: '1.2.3.4:1'\n  crl:\n")
    err = error_for(text, tmp_path)
    assert err.line == line_of(text, "1.2.3.4:1")
    assert "duplicate key 'listen' (first on line 3)" in err.problem
    err = error_for("a: &x [1]\nb: *x\n", tmp_path)
    assert err.line == 2 and "aliases" in err.problem


def test_broken_yaml_and_unreadable_files_are_settings_errors(tmp_path: Path) -> None:
    err = error_for(GOOD.replace("  keys:\n", "  keys: [\n"), tmp_path)
    assert err.line is not None and "invalid YAML" in err.problem
    with pytest.raises(SettingsError, match="cannot read"):
        load_ca_settings(tmp_path / "absent.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"ca: \xff\n")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_ca_settings(tmp_path / "latin1.yaml")


def test_the_default_file_parses_for_both_key_backends(tmp_path: Path) -> None:
    default = parse_ca_settings(dump_default_ca_yaml(), base_dir=tmp_path)
    assert default.ca.keys.backend == "pkcs11" and default.ca.keys.pkcs11 is not None
    assert default.ca.keys.pkcs11.module is None  # auto: SoftHSM2
    assert default.ca.database == f"sqlite:///{tmp_path}/ca.db"
    assert [a.id for a in default.accounts] == ["totemoag.ra"]
    assert default.ca.root.subject == "CN=cmcgate Root CA,O=Example AG,C=CH"
    text = dump_default_ca_yaml(
        key_backend="software",
        organisation_name="Acme, Inc.",
        organization_identifier="VATDE-123456789",
        country="DE",
        email_domains=["acme.test", "mail.acme.test"],
        ra_certificate_sha256=["ab" * 32],
        ldap_url="ldap://127.0.0.1:3389",
        database="postgresql+psycopg://cmcgate@db/cmcgate",
    )
    assert "# " in text  # commented for humans
    s = parse_ca_settings(text, base_dir=tmp_path)
    assert s.ca.keys.backend_kwargs() == {
        "directory": str(tmp_path / "keys"),
        "passphrase_file": str(tmp_path / "keys.pass"),
    }
    assert s.ca.database == "postgresql+psycopg://cmcgate@db/cmcgate"
    assert s.ca.ldap is not None and s.ca.ldap.url == "ldap://127.0.0.1:3389"
    account = s.accounts[0]
    assert account.organisation.organization_identifier == "VATDE-123456789"
    assert account.authorises(sha256="AB" * 32)
    product = s.products[0]
    assert product.publish_ldap


_YAMLISH = st.text(
    alphabet=st.sampled_from(list("abcdefgh:-[]{}#&*!|>'\"%@`,.? \n\t0123456789yd")),
    max_size=200,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), _YAMLISH))
def test_arbitrary_text_only_ever_raises_the_settings_error(text: str) -> None:
    try:
        parse_ca_settings(text, "fuzz.yaml", base_dir=Path("/tmp"))
    except SettingsError as err:
        assert str(err).startswith("fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=GOOD.count("\n") - 1), st.text(max_size=30))
def test_a_corrupted_line_in_a_good_file_only_raises_the_settings_error(
    lineno: int, junk: str
) -> None:
    lines = GOOD.splitlines()
    lines[lineno] = lines[lineno][: len(lines[lineno]) // 2] + junk
    try:
        parse_ca_settings("\n".join(lines), "fuzz.yaml", base_dir=Path("/tmp"))
    except SettingsError as err:
        assert str(err).startswith("fuzz.yaml")


def test_the_commented_ra_block_of_the_default_ca_yaml_parses_when_uncommented() -> None:
    text = dump_default_ca_yaml()
    assert parse_ca_settings(text).ra.listen is None  # off until asked for
    start = text.index("# ra:")
    block = "\n".join(line[2:] for line in text[start:].splitlines() if line.startswith("# "))
    block = "\n".join(line.split("  #")[0] for line in block.splitlines() if line.strip())
    ra = parse_ca_settings(text[:start] + block + "\n").ra
    assert ra.listen == ("127.0.0.1", 8444)
    assert ra.caa_identities == ("ca.example.com",)
    assert ra.dns.nameservers == ("127.0.0.1",) and ra.mail.port == 25
    assert ra.notifications.expiry_warning_days == (30, 7)
