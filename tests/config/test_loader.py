"""load(): typed results, FILE:LINE: KEY: problem for every error, warnings that do not fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.policy import EncryptMode, SignMode
from config.properties import load

from .conftest import SWISSSIGN_BLOCK


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(issue) for issue in caught.value.errors]


def test_a_pasted_totemo_block_loads_into_typed_pki_settings(write_props):
    path = write_props(SWISSSIGN_BLOCK)

    pki = load(path).pki

    assert pki is not None
    assert (
        pki.url
        == "https://ra.swisssign.net:443/ws/cmc?account=totemoag.ra&product=totemo-persogold"
    )
    assert (pki.query.account, pki.query.product, pki.query.validity) == (
        "totemoag.ra",
        "totemo-persogold",
        None,
    )
    assert pki.request_method == "POST"
    assert pki.encode_base64 is False
    assert pki.enrol_internal_users is False
    assert pki.fetch_for_recipients is True
    assert (
        pki.issuer_dn.rfc4514_string()
        == "CN=SwissSign RSA SMIME Root CA 2022 - 1,O=SwissSign AG,C=CH"
    )
    assert pki.access_certificate == path.parent / "access.p12"
    assert (
        pki.access_password is not None and pki.access_password.file == path.parent / "access.pass"
    )
    assert pki.trusted_roots == (path.parent / "roots.pem",)


def test_every_error_of_a_file_is_reported_at_once_with_its_line(write_props):
    path = write_props(
        "connection.ssl.serverPort=0\n"
        "security.pkiConnection.getFromPKIForNewRecipients=TRUE\n"
        "security.pkiConnection.getFromPKIForNewIntUsers=1\n"
        "security.pkiConnection.rfc2797.requestType=PUT\n"
        "cmcgate.gateway.maxMessageSize=lots\n"
    )

    errors = errors_of(path)

    assert errors == [
        f"{path}:1: connection.ssl.serverPort: 0 is out of range 1-65535",
        f"{path}:4: security.pkiConnection.rfc2797.requestType: expected one of POST, GET, "
        "not 'PUT'",
        f"{path}:3: security.pkiConnection.getFromPKIForNewIntUsers: expected true or false, "
        "not '1'",
        f"{path}:5: cmcgate.gateway.maxMessageSize: expected a size such as 52428800, 512K or 50M, "
        "not 'lots'",
    ]


def test_line_numbers_count_continuations_and_every_separator(write_props):
    path = write_props(
        "! comment\n"
        "cmcgate.gateway.internalDomains = example.org, \\\n"
        "    example.net\n"
        "cmcgate.gateway.listen : 127.0.0.1:2525\n"
        "cmcgate.gateway.nextHop 127.0.0.1:2526\n"
        "\n"
        "cmcgate.policy.sign\tmaybe\n"
        "cmcgate.policy.encrypt=a\\\n"
        "  lways\n"
        "cmcgate.gateway.requireStartTls=nope\r\n"
        "cmcgate.gateway.hostname=bad_host\r"
    )

    errors = errors_of(path)

    assert errors == [
        f"{path}:10: cmcgate.gateway.requireStartTls: expected true or false, not 'nope'",
        f"{path}:11: cmcgate.gateway.hostname: 'bad_host' is not a host name",
        f"{path}:7: cmcgate.policy.sign: expected one of never, allow, always, not 'maybe'",
        f"{path}:8: cmcgate.policy.encrypt: expected one of never, allow, mandatory, not 'always'",
    ]


def test_continued_values_join_and_separators_all_work(write_props):
    path = write_props(
        "cmcgate.gateway.internalDomains = example.org, \\\n    Example.NET\n"
        "cmcgate.gateway.listen : 127.0.0.1:2525\n"
        "cmcgate.gateway.nextHop 127.0.0.1\n"
    )

    gateway = load(path).gateway

    assert gateway.internal_domains == ("example.org", "example.net")
    assert str(gateway.listen) == "127.0.0.1:2525"
    assert str(gateway.next_hop) == "127.0.0.1:25"


def test_booleans_are_true_or_false_in_any_case(write_props):
    path = write_props(SWISSSIGN_BLOCK.replace("enabled=true", "enabled=TrUe"))

    assert load(path).pki is not None


def test_unrelated_keys_are_warnings_and_do_not_fail(write_props):
    block = SWISSSIGN_BLOCK.replace("NewRecipients=true", "NewRecipients=false")  # no PKI LDAP
    path = write_props(block + "mail.smtp.relay=mx.example.org\nsecurity.other=1\n")

    config = load(path)

    assert [str(w) for w in config.warnings] == [
        f"{path}:16: mail.smtp.relay: warning: not a cmcgate key, ignored",
        f"{path}:17: security.other: warning: not a cmcgate key, ignored",
    ]


@pytest.mark.parametrize(
    ("key", "suggested"),
    [
        ("connection.ssl.servername", "connection.ssl.serverName"),
        ("security.pkiConnection.certSubjectDn", "security.pkiConnection.certSubjectDN"),
        ("cmcgate.gateway.nexthop", "cmcgate.gateway.nextHop"),
        ("cmcgate.pki.trustedRoot", "cmcgate.pki.trustedRoots"),
        ("cmcgate.dkim.example.org.keyfile", "cmcgate.dkim.example.org.keyFile"),
    ],
)
def test_unknown_keys_under_our_prefixes_are_errors_with_the_closest_key(
    write_props, key, suggested
):
    path = write_props(f"{key}=x\n")

    assert f"{path}:1: {key}: unknown key (did you mean {suggested}?)" in errors_of(path)


def test_a_repeated_key_warns_and_the_last_value_wins(write_props):
    path = write_props("cmcgate.policy.sign=never\ncmcgate.policy.sign=always\n")

    config = load(path)

    assert config.policy.default_sign is SignMode.ALWAYS
    assert [str(w) for w in config.warnings] == [
        f"{path}:2: cmcgate.policy.sign: warning: set again (first on line 1): the last value wins"
    ]


def test_rfc5272_is_accepted_as_type_and_as_sub_key_spelling(write_props):
    text = SWISSSIGN_BLOCK.replace("type=rfc2797", "type=RFC5272").replace(
        "rfc2797.requestType=POST", "rfc5272.requestType=GET"
    )
    pki = load(write_props(text)).pki

    assert pki is not None
    assert (pki.type, pki.request_method) == ("rfc5272", "GET")


def test_the_same_setting_under_both_spellings_is_an_error(write_props):
    path = write_props(SWISSSIGN_BLOCK + "security.pkiConnection.rfc5272.requestType=GET\n")

    assert errors_of(path) == [
        f"{path}:16: security.pkiConnection.rfc5272.requestType: also set as "
        "security.pkiConnection.rfc2797.requestType on line 5"
    ]


def test_plain_http_is_refused_unless_insecure_testing_is_allowed(write_props):
    text = SWISSSIGN_BLOCK.replace("protocol=https://", "protocol=http://")

    path = write_props(text)
    assert errors_of(path) == [
        f"{path}:1: connection.ssl.protocol: plain http is refused: use https:// "
        "(or set cmcgate.pki.allowInsecureHttp=true for testing)"
    ]
    pki = load(write_props(text + "cmcgate.pki.allowInsecureHttp=true\n")).pki
    assert pki is not None and pki.url.startswith("http://ra.swisssign.net:443/")


def test_an_enabled_connection_names_every_missing_key_at_the_enabled_line(write_props):
    path = write_props("# nothing else\nsecurity.pkiConnection.enabled=true\n")

    errors = errors_of(path)

    for key in (
        "connection.ssl.serverName",
        "connection.ssl.url",
        "security.pkiConnection.rfc2797.issuerDN",
        "security.pkiConnection.certSubjectDN",
        "cmcgate.pki.accessCertificate",
        "cmcgate.pki.trustedRoots",
    ):
        assert (
            f"{path}:2: {key}: missing: required because security.pkiConnection.enabled=true"
            in errors
        )


def test_a_disabled_connection_gives_no_pki_and_says_so(write_props):
    path = write_props(SWISSSIGN_BLOCK.replace("enabled=true", "enabled=false"))

    config = load(path)

    assert config.pki is None
    assert any("is not true" in str(w) for w in config.warnings)


def test_inline_secrets_are_refused_without_repeating_them(write_props):
    path = write_props("cmcgate.pki.accessCertificatePassword=hunter2\ncmcgate.keys.pin=1234\n")

    with pytest.raises(ConfigError) as caught:
        load(path)

    text = str(caught.value)
    assert "hunter2" not in text and "1234" not in text
    assert (
        f"{path}:1: cmcgate.pki.accessCertificatePassword: secrets are not accepted inline" in text
    )


def test_a_password_file_and_env_together_is_an_error(write_props):
    path = write_props(SWISSSIGN_BLOCK + "cmcgate.pki.accessCertificatePasswordEnv=P12_PASS\n")

    assert errors_of(path) == [
        f"{path}:16: cmcgate.pki.accessCertificatePasswordEnv: set only one of "
        "cmcgate.pki.accessCertificatePasswordFile and cmcgate.pki.accessCertificatePasswordEnv"
    ]


def test_relative_paths_resolve_against_the_files_directory(write_props, tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    path = write_props(
        "cmcgate.gateway.tlsCertificate=tls/cert.pem\n"
        "cmcgate.gateway.tlsKey=/abs/key.pem\n"
        "cmcgate.store.dsn=sqlite:///state/gw.db\n"
    )

    config = load(path)

    assert config.gateway.tls_certificate == tmp_path / "tls" / "cert.pem"
    assert config.gateway.tls_key == Path("/abs/key.pem")
    assert config.store.dsn == f"sqlite:///{tmp_path}/state/gw.db"


def test_an_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "missing.properties")

    assert str(caught.value).startswith(f"{tmp_path / 'missing.properties'}: cannot read")


def test_a_bad_unicode_escape_costs_one_entry_not_the_file(write_props):
    path = write_props("cmcgate.policy.sign=\\uZZZZ\ncmcgate.policy.encrypt=sometimes\n")

    errors = errors_of(path)

    assert errors[0].startswith(f"{path}:1: cmcgate.policy.sign: cannot decode this entry")
    assert errors[1].startswith(f"{path}:2: cmcgate.policy.encrypt: expected one of")


def test_latin1_files_from_old_java_tools_are_read(tmp_path):
    path = tmp_path / "latin1.properties"
    path.write_bytes("cmcgate.gateway.internalDomains=example.org\n# Zürich\n".encode("latin-1"))

    assert load(path).gateway.internal_domains == ("example.org",)


def test_policy_defaults_are_allow_allow_tempfail(write_props):
    policy = load(write_props("")).policy

    assert policy.resolve("a@example.org", "b@x.example")[:2] == (SignMode.ALLOW, EncryptMode.ALLOW)


def test_the_pki_directory_is_read_for_recipients_when_get_from_pki_is_true(write_props):
    path = write_props(
        SWISSSIGN_BLOCK
        + "cmcgate.pki.directory.url=ldaps://directory.example.net\n"
        + "cmcgate.pki.directory.base=o=Example CA,c=CH\n"
    )

    config = load(path)

    assert config.pki is not None and config.pki.fetch_for_recipients
    directory = config.pki.directory
    assert directory is not None and directory.url == "ldaps://directory.example.net"
    assert (directory.base, directory.bind_dn, directory.timeout) == ("o=Example CA,c=CH", None, 5)
    assert config.warnings == ()


def test_get_from_pki_for_new_recipients_without_a_directory_warns_that_it_cannot_fetch(
    write_props,
):
    path = write_props(SWISSSIGN_BLOCK)

    config = load(path)

    assert config.pki is not None and config.pki.directory is None
    assert [str(w) for w in config.warnings] == [
        f"{path}:10: security.pkiConnection.getFromPKIForNewRecipients: warning: is true but "
        "cmcgate.pki.directory.url is not set: recipients' certificates cannot be fetched from "
        "the PKI (CMC has no search by address; set the directory the PKI publishes to)"
    ]


def test_a_pki_directory_that_is_not_asked_warns(write_props):
    block = SWISSSIGN_BLOCK.replace("NewRecipients=true", "NewRecipients=false")
    path = write_props(
        block + "cmcgate.pki.directory.url=ldap://d.example.net\ncmcgate.pki.directory.base=o=x\n"
    )

    config = load(path)

    assert config.pki is not None and not config.pki.fetch_for_recipients
    assert "is not asked: security.pkiConnection.getFromPKIForNewRecipients is not true" in (
        " ".join(str(w) for w in config.warnings)
    )


def test_the_pki_directory_needs_url_and_base_and_no_inline_password(write_props):
    path = write_props(
        SWISSSIGN_BLOCK + "cmcgate.pki.directory.url=ldap://d.example.net\n"
        "cmcgate.pki.directory.password=hunter2\n"
    )

    errors = errors_of(path)

    assert any("cmcgate.pki.directory.base: missing" in e for e in errors)
    assert any("cmcgate.pki.directory.password" in e and "hunter2" not in e for e in errors)
