"""Database and directory passwords never appear where a DSN or URL is shown: ``config check``
(text and JSON), start-up errors of ``cmcgate gateway run``, store errors of gateway and CA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.store.model import StoreError as CaStoreError
from ca.store.orders import Store
from cmc.transport.errors import InvalidTransportSettings
from cmc.transport.http import TransportSettings
from config.redact import redact_url, scrub
from gateway.certs.models import StoreError
from gateway.certs.store import CertStore
from gateway.main import main

CMCGATE = str(Path(sys.executable).parent / "cmcgate")
SECRETS = ("UserInfoSecret", "QuerySecret", "SslKeySecret")
DSN = (
    "postgresql+psycopg://gw:UserInfoSecret@db.example.org:5432/cmcgate"
    "?sslmode=verify-full&password=QuerySecret&sslpassword=SslKeySecret&application_name=gw"
)


def _gateway_props(dsn: str, tmp: Path) -> str:
    return (
        "cmcgate.gateway.listen=127.0.0.1:2525\n"
        "cmcgate.gateway.nextHop=127.0.0.1:2526\n"
        "cmcgate.gateway.internalDomains=example.org\n"
        f"cmcgate.store.dsn={dsn}\n"
        "cmcgate.keys.backend=software\n"
        f"cmcgate.keys.directory={tmp / 'keys'}\n"
        f"cmcgate.keys.passphraseFile={tmp / 'keys.pass'}\n"
        f"cmcgate.gateway.stateDir={tmp / 'state'}\n"
    )


@pytest.mark.parametrize("as_json", [False, True])
def test_config_check_shows_the_dsn_without_any_of_its_passwords(
    write_props, tmp_path, capsys, as_json
):
    path = write_props(_gateway_props(DSN, tmp_path))

    status = main(["config", "check", *(["--json"] if as_json else []), str(path)])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    for secret in SECRETS:
        assert secret not in captured.out + captured.err
    shown = (
        json.loads(captured.out)["store"]["dsn"]
        if as_json
        else next(line for line in captured.out.splitlines() if "store.dsn" in line)
    )
    assert "gw:***@db.example.org:5432/cmcgate" in shown
    assert "password=***" in shown and "sslpassword=***" in shown
    assert "sslmode=verify-full" in shown and "application_name=gw" in shown


def test_gateway_start_up_error_names_the_database_without_its_passwords(tmp_path):
    """psycopg is not installed here: the start fails on the DSN, and says which one."""
    (tmp_path / "keys.pass").write_text("keys-passphrase\n")
    (tmp_path / "keys.pass").chmod(0o600)
    config = tmp_path / "gateway.properties"
    config.write_text(_gateway_props(DSN, tmp_path))

    done = subprocess.run(
        [CMCGATE, "gateway", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 2, done.stdout + done.stderr
    assert "db.example.org" in done.stderr
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr


def test_gateway_store_open_error_hides_a_query_password(tmp_path):
    dsn = f"sqlite:///{tmp_path / 'missing-dir' / 'gateway.db'}?password=QuerySecret"
    with pytest.warns(Warning), pytest.raises(StoreError) as failed:
        CertStore.open(dsn)
    assert "missing-dir" in str(failed.value)
    assert "QuerySecret" not in str(failed.value)


def test_ca_store_errors_hide_both_passwords(tmp_path):
    with pytest.raises(CaStoreError) as unknown_driver:
        Store.open(DSN)
    dsn = f"sqlite:///{tmp_path / 'missing-dir' / 'ca.db'}?password=QuerySecret"
    with pytest.warns(Warning):
        store = Store.open(dsn)
    try:
        with pytest.raises(CaStoreError) as cannot_open:
            store.create_all()
    finally:
        store.close()
    for failed in (unknown_driver, cannot_open):
        for secret in SECRETS:
            assert secret not in str(failed.value)
    assert "db.example.org" in str(unknown_driver.value)
    assert "missing-dir" in str(cannot_open.value)


def test_cmc_url_errors_hide_the_password():
    with pytest.raises(InvalidTransportSettings) as refused:
        TransportSettings(url="http://ra:UserInfoSecret@ra.example/cmc?token=QuerySecret")
    assert "ra:***@ra.example/cmc?token=***" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////var/lib/cmcgate/gw.db", "sqlite:////var/lib/cmcgate/gw.db"),
        ("sqlite:///rel/a@b.db", "sqlite:///rel/a@b.db"),
        ("postgresql://gw@db/gw", "postgresql://gw@db/gw"),
        ("postgresql://gw:p@ss:w/rd@db/gw", "postgresql://gw:***@db/gw"),
        ("postgresql://db/gw?user=gw&PassWord=x%26y", "postgresql://db/gw?user=gw&PassWord=***"),
        ("mysql+pymysql://u:pw@h/d?charset=utf8;passwd=pw", "mysql+pymysql://u:***@h/d?charset=utf8;passwd=***"),
        ("ldaps://ldap.example.org/dc=x?cn", "ldaps://ldap.example.org/dc=x?cn"),
        ("https://ra.example/cmc?account=a&api_key=k#top", "https://ra.example/cmc?account=a&api_key=***#top"),
    ],
)  # fmt: skip
def test_redact_url_hides_passwords_and_keeps_the_rest(url, shown):
    assert redact_url(url) == shown


_secret = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789!$()*+,-._~", min_size=6, max_size=24)


@given(password=_secret, query_password=_secret)
def test_no_password_survives_redaction_or_scrubbing(password, query_password):
    password, query_password = "Zq" + password, "Zq" + query_password  # not a DSN's other word
    dsn = f"postgresql+psycopg://gw:{password}@db.example.org/gw?password={query_password}"
    message = f'connection to "{dsn}" failed for gw:{password} ({query_password})'
    for text in (redact_url(dsn), scrub(message, dsn)):
        assert password not in text and query_password not in text
