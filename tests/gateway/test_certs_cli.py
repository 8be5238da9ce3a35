"""``cmcgate gateway certs ...`` on a real SQLite store and a software key directory."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from config.errors import CmcgateError
from gateway import main as cmcgate_cli
from gateway.certs.cli import register_certs
from gateway.certs.models import Source
from gateway.certs.store import CertStore
from tests.gateway.test_store import NOW, Pki, ec_key, rsa_key

PASSPHRASE = "gateway key passphrase"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """``cmcgate gateway certs ...`` as gateway.main.main runs it, with the certs commands
    registered under ``gateway`` in a parser of the test's own."""
    parser = argparse.ArgumentParser(prog="cmcgate")
    groups = parser.add_subparsers(dest="group", required=True)
    gateway = groups.add_parser("gateway").add_subparsers(dest="command")
    register_certs(gateway)
    capsys.readouterr()
    args = parser.parse_args(["gateway", "certs", *argv])
    try:
        code = int(args.func(args) or 0)
    except CmcgateError as exc:  # what gateway.main.main does
        print(f"cmcgate: {exc}", file=sys.stderr)
        code = exc.exit_code
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    secret = tmp_path / "keys.pass"
    secret.touch(mode=0o600)
    secret.write_text(PASSPHRASE + "\n")
    dsn = f"sqlite:///{tmp_path}/gateway.db"
    return [
        "--store",
        dsn,
        "--keys-dir",
        str(tmp_path / "keys"),
        "--keys-password-file",
        str(secret),
    ]


def write_pem(path: Path, *certs: object) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))  # type: ignore[attr-defined]
    return path


def write_key(path: Path, key: object, password: bytes | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    return path


def test_an_administrator_imports_a_certificate_chain_and_key_and_finds_it_again(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki("CLI Root", intermediate=True)
    cert, key = pki.issue("alice@example.org", key=rsa_key(7))
    chain = write_pem(tmp_path / "alice.pem", cert, pki.issuer, pki.root)
    key_file = write_key(tmp_path / "alice.key", key, b"pw")
    password = tmp_path / "alice.pass"
    password.touch(mode=0o600)
    password.write_text("pw\n")
    serial = format(cert.serial_number, "x")

    imported = run(
        ["import", *where, "--email", "Alice@Example.org", "--cert", str(chain)]
        + ["--key", str(key_file), "--key-password-file", str(password)],
        capsys,
    )

    assert imported.code == 0, imported.err
    assert f"imported certificate {serial} for alice@example.org" in imported.out
    assert "private key  user:alice@example.org:1" in imported.out
    assert "chain        2 CA certificate(s), 2 new" in imported.out
    assert "usable for   signing and encryption" in imported.out

    listed = run(["list", *where], capsys)
    header, row = listed.out.splitlines()
    assert header.split() == ["SERIAL", "NOT", "AFTER", "STATE", "SOURCE", "USE", "KEY", "EMAILS"]
    assert row.split() == [
        serial,
        f"{cert.not_valid_after_utc:%Y-%m-%d}",
        "valid",
        "imported",
        "SE",
        "yes",
        "alice@example.org",
    ]

    as_json = json.loads(run(["list", *where, "--json"], capsys).out)
    assert [(c["serial"], c["has_private_key"]) for c in as_json] == [(serial, True)]

    shown = run(["show", *where, serial, "--pem"], capsys)
    assert shown.code == 0
    assert "emails:      alice@example.org" in shown.out
    assert "issuer:      CN=CLI Root Issuing" in shown.out
    assert "private key: user:alice@example.org:1" in shown.out
    assert shown.out.endswith(cert.public_bytes(serialization.Encoding.PEM).decode())

    with CertStore.open(where[1]) as store:
        record = store.get(serial)
        assert store.chain_for(record) == [pki.issuer, pki.root]
        assert store.best_for_signing("alice@example.org").key_label == "user:alice@example.org:1"  # type: ignore[union-attr]


def test_a_key_that_does_not_belong_to_the_certificate_is_refused(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki("CLI Root")
    cert, _ = pki.issue("bob@example.org", key=rsa_key(7))
    wrong = write_key(tmp_path / "wrong.key", rsa_key(8))

    result = run(
        ["import", *where, "--email", "bob@example.org"]
        + ["--cert", str(write_pem(tmp_path / "bob.pem", cert)), "--key", str(wrong)],
        capsys,
    )

    assert result.code == 2
    assert "does not belong to certificate" in result.err and len(result.err.splitlines()) == 1
    assert run(["list", *where], capsys).out.strip() == "no certificates"
    assert list((tmp_path / "keys").glob("*.pem")) == []


def test_a_certificate_for_another_address_is_refused(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = Pki("CLI Root").issue("carol@example.org")
    result = run(
        ["import", *where, "--email", "dave@example.org"]
        + ["--cert", str(write_pem(tmp_path / "carol.pem", cert))],
        capsys,
    )
    assert result.code == 2
    assert "no end-entity certificate for dave@example.org" in result.err
    assert "carol@example.org" in result.err


def test_listing_only_what_expires_soon(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pki = Pki("CLI Root")
    soon, _ = pki.issue("erin@example.org", key=ec_key(), not_after=NOW + timedelta(days=10))
    later, _ = pki.issue("frank@example.org", not_after=NOW + timedelta(days=100))
    with CertStore.open(where[1]) as store:
        store.add(soon, Source.PKI)
        store.add(later, Source.LDAP)

    soon_only = run(["list", *where, "--expiring-within", "30"], capsys)
    by_email = run(["list", *where, "--email", "FRANK@example.org", "--json"], capsys)

    assert [line.split()[-1] for line in soon_only.out.splitlines()[1:]] == ["erin@example.org"]
    assert "S-" not in soon_only.out and " SE " in soon_only.out  # EC: keyAgreement counts
    assert [c["emails"] for c in json.loads(by_email.out)] == [["frank@example.org"]]


def test_removing_a_certificate_and_its_key(
    tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = Pki("CLI Root").issue("grace@example.org", key=rsa_key(9))
    run(
        ["import", *where, "--email", "grace@example.org"]
        + ["--cert", str(write_pem(tmp_path / "g.pem", cert))]
        + ["--key", str(write_key(tmp_path / "g.key", key))],
        capsys,
    )
    with CertStore.open(where[1]) as store:
        fingerprint = store.get(format(cert.serial_number, "x")).fingerprint

    removed = run(["remove", *where, fingerprint, "--delete-key"], capsys)

    assert removed.code == 0, removed.err
    assert "removed certificate" in removed.out
    assert "deleted private key user:grace@example.org:1" in removed.out
    assert list((tmp_path / "keys").glob("*.pem")) == []
    missing = run(["show", *where, fingerprint], capsys)
    assert missing.code == 2 and "no stored certificate" in missing.err


def import_by_properties(
    tmp: Path, capsys: pytest.CaptureFixture[str], email: str, seed: int
) -> tuple[Path, x509.Certificate, Result]:
    """A ``gateway.properties`` naming a SQLite store and a software key directory in ``tmp``
    (passphrase file ``keys.pass``), and ``cmcgate gateway certs import`` of ``email``'s
    certificate and RSA key through it: (the properties file, the certificate, the result)."""
    (tmp / "keys.pass").touch(mode=0o600)
    (tmp / "keys.pass").write_text(PASSPHRASE)
    properties = tmp / "gateway.properties"
    properties.write_text(
        "cmcgate.store.dsn = sqlite:///gw.db\n"
        "cmcgate.keys.backend = software\n"
        "cmcgate.keys.directory = keys\n"
        "cmcgate.keys.passphraseFile = keys.pass\n"
    )
    cert, key = Pki("CLI Root").issue(email, key=rsa_key(seed))
    result = run(
        ["import", "--config", str(properties), "--email", email]
        + ["--cert", str(write_pem(tmp / f"{email[0]}.pem", cert))]
        + ["--key", str(write_key(tmp / f"{email[0]}.key", key))],
        capsys,
    )
    return properties, cert, result


def test_the_stores_can_be_named_by_the_gateway_properties_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    properties, _, result = import_by_properties(tmp_path, capsys, "heidi@example.org", 10)

    assert result.code == 0, result.err
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["user%3Aheidi@example.org%3A1.pem"]
    assert "heidi@example.org" in run(["list", "--config", str(properties)], capsys).out


def test_the_commands_say_where_the_store_must_be_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(["list"], capsys)
    assert result.code == 2 and "--config FILE or --store DSN" in result.err
    keyless = run(["remove", "--store", f"sqlite:///{tmp_path}/gw.db", "1", "--delete-key"], capsys)
    assert keyless.code == 2 and "no key backend configured" in keyless.err


def test_the_certs_commands_are_part_of_cmcgate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = cmcgate_cli.main(
            ["gateway", "certs", "list", "--store", f"sqlite:///{tmp_path}/g.db"]
        )
    except SystemExit:
        pytest.skip("gateway/cli.py does not call gateway.certs.cli.register_certs yet")
    assert code == 0
    assert capsys.readouterr().out.strip() == "no certificates"


def test_listing_and_showing_need_no_key_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator who may not read the key passphrase (or the HSM PIN) can still look."""
    properties, cert, imported = import_by_properties(tmp_path, capsys, "ivan@example.org", 11)
    assert imported.code == 0, imported.err
    secret = tmp_path / "keys.pass"
    secret.unlink()  # the passphrase is not there for this operator

    listed = run(["list", "--config", str(properties)], capsys)
    assert listed.code == 0, listed.err
    assert "ivan@example.org" in listed.out and "yes" in listed.out  # the key is still known
    serial = format(cert.serial_number, "x")
    shown = run(["show", "--config", str(properties), serial], capsys)
    assert shown.code == 0, shown.err
    assert "ivan@example.org" in shown.out
    dsn = ["--store", f"sqlite:///{tmp_path}/gw.db"]
    missing = ["--keys-dir", str(tmp_path / "keys"), "--keys-password-file", str(secret)]
    assert run(["list", *dsn, *missing], capsys).code == 0
    # a command that needs the keys still says what is wrong
    removed = run(["remove", "--config", str(properties), "--delete-key", serial], capsys)
    assert removed.code == 2 and "keys.pass" in removed.err
