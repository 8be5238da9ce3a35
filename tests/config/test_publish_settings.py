"""``cmcgate.publish.ldap.*``: the directory the gateway publishes enrolled certificates to."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.properties import load
from config.render import effective


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(issue) for issue in caught.value.errors]


def test_publish_keys_become_typed_settings(write_props, tmp_path):
    path = write_props(
        "cmcgate.publish.ldap.url=ldaps://ldap.example.org:636\n"
        "cmcgate.publish.ldap.base=ou=people,dc=example,dc=org\n"
        "cmcgate.publish.ldap.bindDn=cn=cmcgate,dc=example,dc=org\n"
        "cmcgate.publish.ldap.passwordFile=ldap.pass\n"
        "cmcgate.publish.ldap.timeout=2.5\n"
    )

    publish = load(path).publish

    assert publish is not None
    assert publish.url == "ldaps://ldap.example.org:636"
    assert publish.base == "ou=people,dc=example,dc=org"
    assert publish.bind_dn == "cn=cmcgate,dc=example,dc=org"
    assert publish.password is not None and publish.password.file == tmp_path / "ldap.pass"
    assert publish.timeout == 2.5


def test_publication_is_off_by_default_and_the_timeout_defaults_to_five_seconds(write_props):
    assert load(write_props("")).publish is None
    publish = load(
        write_props(
            "cmcgate.publish.ldap.url=ldap://127.0.0.1\n"
            "cmcgate.publish.ldap.base=dc=example,dc=org\n"
            "cmcgate.publish.ldap.passwordEnv=LDAP_PW\n"
            "cmcgate.publish.ldap.bindDn=cn=admin,dc=example,dc=org\n"
        )
    ).publish
    assert publish is not None and publish.timeout == 5.0
    assert publish.password is not None and publish.password.env == "LDAP_PW"


def test_a_typo_under_cmcgate_publish_is_an_error_with_the_suggestion(write_props):
    path = write_props(
        "cmcgate.publish.ldap.url=ldap://127.0.0.1\n"
        "cmcgate.publish.ldap.base=dc=example,dc=org\n"
        "cmcgate.publish.ldap.bindDN=cn=admin,dc=example,dc=org\n"
    )

    suggestion = (
        f"{path}:3: cmcgate.publish.ldap.bindDN: unknown key "
        "(did you mean cmcgate.publish.ldap.bindDn?)"
    )
    assert suggestion in errors_of(path)


def test_publish_errors(write_props):
    path = write_props(
        "cmcgate.publish.ldap.url=http://ldap.example.org\n"
        "cmcgate.publish.ldap.password=secret\n"
        "cmcgate.publish.ldap.passwordFile=ldap.pass\n"
        "cmcgate.publish.ldap.timeout=forever\n"
    )

    errors = errors_of(path)

    inline = (
        f"{path}:2: cmcgate.publish.ldap.password: secrets are not accepted inline: use "
        "cmcgate.publish.ldap.passwordFile or cmcgate.publish.ldap.passwordEnv"
    )
    assert inline in errors
    assert any("cmcgate.publish.ldap.base: missing" in e for e in errors)
    assert any("cmcgate.publish.ldap.url: 'http://ldap.example.org' is not" in e for e in errors)
    assert any("cmcgate.publish.ldap.bindDn: missing: a password is set" in e for e in errors)
    assert any(e.startswith(f"{path}:4: cmcgate.publish.ldap.timeout") for e in errors)
    assert not any("'secret'" in e for e in errors)  # the value is never repeated


def test_the_publish_section_is_shown_without_the_password(write_props):
    config = load(
        write_props(
            "cmcgate.publish.ldap.url=ldap://127.0.0.1\n"
            "cmcgate.publish.ldap.base=dc=example,dc=org\n"
            "cmcgate.publish.ldap.bindDn=cn=admin,dc=example,dc=org\n"
            "cmcgate.publish.ldap.passwordEnv=LDAP_PW\n"
        )
    )

    assert effective(config)["publish"]["ldap"] == {
        "url": "ldap://127.0.0.1",
        "base": "dc=example,dc=org",
        "bindDn": "cn=admin,dc=example,dc=org",
        "password": {"env": "LDAP_PW"},
        "timeout": 5.0,
    }
