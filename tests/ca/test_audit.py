"""The tamper-evident audit log: tampering with the SQLite file directly is detected and named."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.store.audit import (
    GENESIS_HASH,
    AuditError,
    AuditEvent,
    append_audit,
    audit_records,
    canonical_encoding,
    load_hmac_key,
    record_hash,
    verify_audit,
)
from ca.store.orders import Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def fill(store: Store, n: int = 10) -> None:
    for i in range(1, n + 1):
        append_audit(
            store,
            AuditEvent.KEY_USE,
            "ca",
            f"serial-{i:02x}",
            {"label": "issuing-ca", "n": i, "raw": b"\x01\x02"},
            now=T0 + timedelta(seconds=i),
        )


def sql(db_path: Path, *statements: str) -> None:
    with sqlite3.connect(db_path) as raw:
        for statement in statements:
            raw.execute(statement)


def test_an_untouched_log_verifies_and_records_chain_by_hash(store: Store) -> None:
    append_audit(store, AuditEvent.INIT, "admin", None, {"root": "CN=Root"}, now=T0)
    append_audit(store, "login", "totemoag.ra", None, {"fingerprint": "ab" * 32}, now=T0)
    append_audit(store, AuditEvent.REFUSAL, "unknown", None, {"why": "bad signature"})
    records = audit_records(store)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH
    assert records[1].prev_hash == records[0].hash
    first = records[0]
    expected = hashlib.sha256(
        canonical_encoding(1, T0, "init", "admin", None, '{"root":"CN=Root"}', GENESIS_HASH)
    ).hexdigest()
    assert first.hash == expected
    assert first.details == {"root": "CN=Root"}
    report = verify_audit(store)
    assert report.ok and report.problems == [] and report.records == 3 and report.head_seq == 3


def test_an_empty_log_verifies(store: Store) -> None:
    report = verify_audit(store)
    assert report.ok and report.records == 0


def test_a_record_changed_with_sql_update_is_named(store: Store, db_path: Path) -> None:
    fill(store)
    sql(db_path, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 4")
    report = verify_audit(store)
    assert not report.ok
    assert report.problems == ["record 4: modified (hash mismatch)"]


def test_a_record_changed_and_rehashed_breaks_the_chain_after_it(
    store: Store, db_path: Path
) -> None:
    fill(store, 5)
    rec = audit_records(store)[2]
    new_hash = record_hash(
        3, rec.ts, rec.event_type, "mallory", rec.subject, rec.details_json, rec.prev_hash
    )
    sql(db_path, f"UPDATE audit_log SET actor = 'mallory', hash = '{new_hash}' WHERE seq = 3")
    problems = verify_audit(store).problems
    assert len(problems) == 1 and problems[0].startswith("record 4: chain broken")


def test_a_deleted_record_is_named(store: Store, db_path: Path) -> None:
    fill(store)
    sql(db_path, "DELETE FROM audit_log WHERE seq = 7")
    report = verify_audit(store)
    assert report.problems == ["record 7: deleted (missing from the sequence)"]


def test_deleting_the_first_records_is_named(store: Store, db_path: Path) -> None:
    fill(store)
    sql(db_path, "DELETE FROM audit_log WHERE seq <= 2")
    assert verify_audit(store).problems == ["records 1..2: deleted (missing from the sequence)"]


def test_two_records_with_swapped_seq_are_named(store: Store, db_path: Path) -> None:
    fill(store)
    sql(
        db_path,
        "UPDATE audit_log SET seq = -1 WHERE seq = 5",
        "UPDATE audit_log SET seq = 5 WHERE seq = 6",
        "UPDATE audit_log SET seq = 6 WHERE seq = -1",
    )
    report = verify_audit(store)
    assert report.problems == [
        "record 5: reordered (holds the content of record 6)",
        "record 6: reordered (holds the content of record 5)",
    ]


def test_records_cut_off_the_end_are_named_by_the_head(store: Store, db_path: Path) -> None:
    fill(store)
    sql(db_path, "DELETE FROM audit_log WHERE seq >= 9")
    report = verify_audit(store)
    assert report.problems == ["records 9..10: truncated (the audit head says 10)"]


def test_a_record_inserted_behind_the_logs_back_is_named(store: Store, db_path: Path) -> None:
    fill(store, 3)
    last = audit_records(store)[-1]
    ts = T0 + timedelta(minutes=5)
    digest = record_hash(4, ts, "issue", "ca", None, "{}", last.hash)
    naive = ts.replace(tzinfo=None).isoformat(sep=" ")
    sql(
        db_path,
        "INSERT INTO audit_log (seq, ts, event_type, actor, subject, details, prev_hash, hash) "
        f"VALUES (4, '{naive}', 'issue', 'ca', NULL, '{{}}', '{last.hash}', '{digest}')",
    )
    assert verify_audit(store).problems == [
        "record 4: appended outside the audit log (head says 3)"
    ]


def test_with_an_hmac_key_a_fully_recomputed_log_is_still_caught(
    tmp_path: Path, db_path: Path
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(b"0123456789abcdef-secret\n")
    keyed = Store.open(f"sqlite:///{db_path}", audit_hmac_key=key_file)
    keyed.create_all()
    fill(keyed, 3)
    assert verify_audit(keyed).ok and verify_audit(keyed).mac_checked
    # an attacker rewrites record 2 and recomputes every hash and the head, but has no key
    records = audit_records(keyed)
    prev = records[0].hash
    for rec in records[1:]:
        actor = "mallory" if rec.seq == 2 else rec.actor
        digest = record_hash(
            rec.seq, rec.ts, rec.event_type, actor, rec.subject, rec.details_json, prev
        )
        sql(
            db_path,
            f"UPDATE audit_log SET actor='{actor}', prev_hash='{prev}', "
            f"hash='{digest}' WHERE seq={rec.seq}",
        )
        prev = digest
    sql(db_path, f"UPDATE audit_head SET hash='{prev}'")
    unkeyed = Store.open(f"sqlite:///{db_path}")
    assert verify_audit(unkeyed).ok  # the documented limit of the plain hash chain
    problems = verify_audit(unkeyed, hmac_key=load_hmac_key(key_file)).problems
    assert problems == [
        "record 2: MAC mismatch (written without the audit key)",
        "record 3: MAC mismatch (written without the audit key)",
        "audit head: MAC mismatch (written without the audit key)",
    ]


def test_a_short_hmac_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"short")
    with pytest.raises(AuditError):
        load_hmac_key(tmp_path / "k")
    with pytest.raises(AuditError):
        load_hmac_key(tmp_path / "missing")


def test_malformed_events_are_refused(store: Store) -> None:
    with pytest.raises(AuditError):
        append_audit(store, "DROP TABLE", "ca")
    with pytest.raises(AuditError):
        append_audit(store, AuditEvent.LOGIN, "")
    with pytest.raises(AuditError):
        append_audit(store, AuditEvent.LOGIN, "ra", None, {"x": object()})
    assert audit_records(store) == []


def test_appends_from_many_threads_and_two_stores_form_one_unbroken_chain(
    store: Store, db_path: Path
) -> None:
    other = Store.open(f"sqlite:///{db_path}")

    def worker(s: Store, name: str) -> None:
        for i in range(15):
            append_audit(s, AuditEvent.KEY_USE, name, None, {"i": i})

    threads = [
        threading.Thread(target=worker, args=(store if n % 2 else other, f"w{n}")) for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    report = verify_audit(store)
    assert report.ok, report.problems
    assert report.records == 60 and report.head_seq == 60
