"""HMAC mode turned on for a CA that has been running without it (``cmcgate ca audit
enable-hmac``): a checkpoint record MACed with the new key pins the older records; verify
is OK afterwards and still catches tampering after the checkpoint. Real CA, real CLI, SQL
tampering on the real database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ca.store.audit import audit_records, load_hmac_key, record_hash
from ca.store.orders import Store
from gateway.main import main as cli_main
from tests.ca.test_ca_cli import ACCOUNT, DOMAIN, PRODUCT, run, write_csr


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    assert cli_main(["ca", "init", "--dir", str(directory), "--key-type", "ec-p256",
                     "--domain", DOMAIN, "--base-url", "http://pki.example.org"]) == 0  # fmt: skip
    return directory


def _issue(ca_dir: Path, tmp_path: Path, name: str) -> None:
    csr = write_csr(tmp_path / f"{name}.csr", f"{name}@{DOMAIN}")
    assert cli_main(["ca", "issue", "--dir", str(ca_dir), "--csr", str(csr),
                     "--account", ACCOUNT, "--product", PRODUCT, "--out",
                     str(tmp_path / f"{name}.pem")]) == 0  # fmt: skip


def _sql(ca_dir: Path, statement: str) -> None:
    with sqlite3.connect(ca_dir / "ca.db") as db:
        db.execute(statement)


def test_hmac_turned_on_later_verifies_and_catches_tampering_after_the_checkpoint(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--dir", str(ca_dir)]
    _issue(ca_dir, tmp_path, "anna")
    _issue(ca_dir, tmp_path, "bert")
    before = len(audit_records(Store.open_ca_dir(ca_dir)))

    code, out, err = run(capsys, "ca", "audit", "enable-hmac", *d, "--operator", "rita")
    assert code == 0, err
    key_file = ca_dir / "audit.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert 'hmac_key_file: "audit.key"' in (ca_dir / "ca.yaml").read_text()
    assert f"audit HMAC on from record {before + 1}" in out

    _issue(ca_dir, tmp_path, "carl")
    code, out, err = run(capsys, "ca", "audit", "verify", *d)
    assert code == 0, out + err
    assert f"MACs checked from record {before + 1} (HMAC turned on there)" in out
    records = audit_records(Store.open_ca_dir(ca_dir))
    checkpoint = records[before]
    assert checkpoint.event_type == "hmac_checkpoint" and checkpoint.actor == "rita"
    assert all(r.mac for r in records[before:]) and not any(r.mac for r in records[:before])
    # running it again changes nothing
    code, out, _ = run(capsys, "ca", "audit", "enable-hmac", *d)
    assert code == 0 and "on already" in out
    assert len(audit_records(Store.open_ca_dir(ca_dir))) == len(records)

    # someone without the key rewrites a record after the checkpoint and recomputes the chain
    prev = records[before].hash
    for rec in records[before + 1 :]:
        actor = "mallory" if rec is records[-2] else rec.actor
        digest = record_hash(
            rec.seq, rec.ts, rec.event_type, actor, rec.subject, rec.details_json, prev
        )
        _sql(ca_dir, f"UPDATE audit_log SET actor='{actor}', prev_hash='{prev}', "
                     f"hash='{digest}' WHERE seq={rec.seq}")  # fmt: skip
        prev = digest
    _sql(ca_dir, f"UPDATE audit_head SET hash='{prev}'")
    code, out, err = run(capsys, "ca", "audit", "verify", *d)
    assert code == 1 and "audit log BROKEN" in err
    assert f"record {records[-2].seq}: MAC mismatch (written without the audit key)" in out


def test_a_tampered_record_before_the_checkpoint_is_still_caught(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--dir", str(ca_dir)]
    _issue(ca_dir, tmp_path, "dora")
    assert run(capsys, "ca", "audit", "enable-hmac", *d)[0] == 0
    _sql(ca_dir, "UPDATE audit_log SET actor='mallory' WHERE seq=2")
    code, out, _ = run(capsys, "ca", "audit", "verify", *d)
    assert code == 1 and "record 2: modified (hash mismatch)" in out


def test_a_key_named_by_hand_in_ca_yaml_is_made_to_verify_by_the_checkpoint(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The way docs/ca.md used to describe: set audit.hmac_key_file, restart. Verify then
    reported BROKEN for every older record, for ever."""
    d = ["--dir", str(ca_dir)]
    _issue(ca_dir, tmp_path, "emil")
    key_file = tmp_path / "audit.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    key_file.chmod(0o600)
    ca_yaml = ca_dir / "ca.yaml"
    text = ca_yaml.read_text()
    ca_yaml.write_text(text.replace("  # audit:\n  #   hmac_key_file: \"audit.key\"",
                                    f"  audit:\n    hmac_key_file: \"{key_file}\""))  # fmt: skip
    _issue(ca_dir, tmp_path, "fritz")  # MACed: the CA reads the key now
    code, out, _ = run(capsys, "ca", "audit", "verify", *d)
    assert code == 1 and "record 1: MAC mismatch" in out

    code, out, err = run(capsys, "ca", "audit", "enable-hmac", *d)
    assert code == 0, err
    assert "new audit HMAC key" not in out  # the configured key is used
    code, out, err = run(capsys, "ca", "audit", "verify", *d)
    assert code == 0, out + err
    keyed = Store.open(f"sqlite:///{ca_dir / 'ca.db'}", audit_hmac_key=load_hmac_key(key_file))
    assert audit_records(keyed)[-1].event_type == "hmac_checkpoint"


def test_no_checkpoint_covers_a_record_written_without_the_key_after_macs_began(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--dir", str(ca_dir)]
    assert run(capsys, "ca", "audit", "enable-hmac", *d)[0] == 0
    _issue(ca_dir, tmp_path, "gert")
    last = audit_records(Store.open_ca_dir(ca_dir))[-1]
    _sql(ca_dir, f"UPDATE audit_log SET mac=NULL WHERE seq={last.seq}")
    code, _, err = run(capsys, "ca", "audit", "enable-hmac", *d)
    assert code == 2 and f"record {last.seq} has no valid MAC" in err
