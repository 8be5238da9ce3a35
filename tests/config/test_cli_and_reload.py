"""``cmcgate config check --json`` redaction, ``config subject``, and reload on SIGHUP."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from config.errors import ConfigError
from config.model import Config
from config.properties import ConfigHolder
from gateway.main import main

from .conftest import SWISSSIGN_BLOCK


def test_json_output_never_shows_secrets(write_props, tmp_path, capsys, monkeypatch):
    (tmp_path / "access.pass").write_text("p12-secret-value\n")
    monkeypatch.setenv("LDAP_PW", "ldap-secret-value")
    path = write_props(
        SWISSSIGN_BLOCK
        + "cmcgate.store.dsn=postgresql+psycopg://cmc:db-secret-value@db.example.org/cmcgate\n"
        + "cmcgate.lookup.ldap.corp.url=ldaps://ldap.example.org\n"
        + "cmcgate.lookup.ldap.corp.base=dc=example,dc=org\n"
        + "cmcgate.lookup.ldap.corp.bindDn=cn=gw,dc=example,dc=org\n"
        + "cmcgate.lookup.ldap.corp.passwordEnv=LDAP_PW\n"
    )

    status = main(["config", "check", "--json", str(path)])

    out = capsys.readouterr().out
    assert status == 0
    for secret in ("p12-secret-value", "ldap-secret-value", "db-secret-value"):
        assert secret not in out
    data = json.loads(out)
    assert data["store"]["dsn"] == "postgresql+psycopg://cmc:***@db.example.org/cmcgate"
    assert data["pki"]["accessCertificatePassword"] == {"file": str(tmp_path / "access.pass")}
    assert data["lookup"]["ldap"][0]["password"] == {"env": "LDAP_PW"}


def test_check_warns_about_missing_referenced_files_but_succeeds(write_props, capsys):
    path = write_props(SWISSSIGN_BLOCK)

    status = main(["config", "check", str(path)])

    err = capsys.readouterr().err
    assert status == 0
    assert f"{path}:13: cmcgate.pki.accessCertificate: warning: " in err
    assert "access.p12 does not exist" in err


def test_config_subject_previews_a_users_subject(write_props, capsys):
    path = write_props(SWISSSIGN_BLOCK)

    status = main(["config", "subject", str(path), "ann@example.org", "--display-name", "Ann"])

    out = capsys.readouterr().out
    assert status == 0
    assert "subject: CN=Ann,O=Organisation name,C=CH" in out
    assert "san: rfc822Name:ann@example.org" in out


def test_reload_applies_a_good_file_and_notifies(write_props):
    path = write_props("cmcgate.policy.sign=never\n")
    holder = ConfigHolder(path)
    seen: list[Config] = []
    holder.subscribe(seen.append)
    path.write_text("cmcgate.policy.sign=always\n")

    assert holder.reload() == ()
    assert holder.current.policy.default_sign.value == "always"
    assert seen == [holder.current]


def test_reload_keeps_the_old_config_when_the_new_file_is_bad(write_props, caplog):
    path = write_props("cmcgate.policy.sign=never\n")
    holder = ConfigHolder(path)
    old = holder.current
    path.write_text("cmcgate.policy.sign=sometimes\n")

    with caplog.at_level(logging.ERROR, logger="config.properties"):
        errors = holder.reload()

    assert holder.current is old
    assert [str(e) for e in errors] == [
        f"{path}:1: cmcgate.policy.sign: expected one of never, allow, always, not 'sometimes'"
    ]
    assert "cmcgate.policy.sign" in caplog.text


def test_a_service_does_not_start_on_a_bad_file(write_props):
    with pytest.raises(ConfigError):
        ConfigHolder(write_props("cmcgate.gateway.listen=nowhere\n"))


def test_sighup_reloads(write_props):
    path = write_props("cmcgate.policy.sign=never\n")
    holder = ConfigHolder(path)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        holder.install_sighup()
        path.write_text("cmcgate.policy.sign=allow\n")
        os.kill(os.getpid(), signal.SIGHUP)
        assert holder.current.policy.default_sign.value == "allow"
    finally:
        signal.signal(signal.SIGHUP, previous)
