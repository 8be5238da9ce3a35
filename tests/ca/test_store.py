"""The CA's order store, read back from a real SQLite database in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.store.audit import audit_records, verify_audit
from ca.store.jobs import retry_delay
from ca.store.model import (
    ISSUANCE_PATH,
    CertificateStatus,
    DuplicateCertificate,
    IllegalTransition,
    JobKind,
    JobStatus,
    OrderStatus,
    RevocationReason,
    RevocationRefused,
    StoreConflict,
    StoreError,
    SubjectChange,
    UnknownOrder,
)
from ca.store.orders import Store
from config.errors import CmcgateError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(
    serial: int,
    emails: list[str],
    not_before: datetime = T0,
    days: int = 365,
    subject_email: str | None = None,
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, emails[0] if emails else "nobody")]
    if subject_email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
    name = x509.Name(attrs)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cmcgate Test Issuing CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
    )
    if emails:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]), critical=False
        )
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def issued_order(store: Store, serial: int, emails: list[str], **cert_kw: object) -> str:
    order = store.new_order(
        "totemoag.ra",
        "totemo-persogold",
        "CN=x",
        emails,
        "1y",
        requested_by="totemoag.ra",
        now=T0,
    )
    for status in ISSUANCE_PATH[1:6]:
        store.transition(order.id, status, now=T0)
    store.record_certificate(order.id, make_cert(serial, emails, **cert_kw), now=T0)  # type: ignore[arg-type]
    for status in ISSUANCE_PATH[6:]:
        store.transition(order.id, status, now=T0)
    return order.id


def test_an_order_walks_from_new_to_issued_and_every_step_is_in_the_history(
    store: Store, db_path: Path
) -> None:
    order = store.new_order(
        "totemoag.ra",
        "totemo-persogold",
        "CN=Alice Example,O=Totemo AG",
        ["alice@example.com"],
        "1y",
        requested_by="totemoag.ra",
        csr_der=b"\x30\x03\x02\x01\x00",
        transaction_id=4711,
        sender_nonce=b"nonce-1",
        now=T0,
    )
    assert order.id.startswith("ord-") and len(order.id) == 40
    assert order.status is OrderStatus.NEW
    for i, status in enumerate(ISSUANCE_PATH[1:], start=1):
        if status is OrderStatus.ISSUE:
            store.transition(order.id, status, note="signing", now=T0 + timedelta(seconds=i))
            store.record_certificate(order.id, make_cert(0x1234, ["alice@example.com"]))
            continue
        store.transition(order.id, status, now=T0 + timedelta(seconds=i))

    final = store.get_order(order.id)
    assert final.status is OrderStatus.ISSUED
    assert final.certificate_serial == "1234"
    assert final.transaction_id == 4711 and final.sender_nonce == b"nonce-1"
    assert final.csr_der == b"\x30\x03\x02\x01\x00"
    history = store.history(order.id)
    assert [h.to_status for h in history] == list(ISSUANCE_PATH)
    assert history[0].from_status is None
    assert history[5].note == "signing"
    assert history[-1].at == T0 + timedelta(seconds=8)
    assert history[-1].at.tzinfo is not None

    # read back with plain sqlite3: WAL is on and the rows are there
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = raw.execute(
            "SELECT from_status, to_status FROM order_status_history WHERE order_id = ? "
            "ORDER BY id",
            (order.id,),
        ).fetchall()
    assert rows[0] == (None, "NEW") and rows[-1] == ("FINALIZE_ISSUANCE", "ISSUED")
    assert len(rows) == len(ISSUANCE_PATH)


def test_a_manual_product_order_waits_for_authorization_and_the_operator_is_audited(
    store: Store,
) -> None:
    order = store.new_order("acme.ra", "p", "CN=x", ["x@acme.test"], "2y", requested_by="acme.ra")
    assert OrderStatus.PENDING_APPROVAL is OrderStatus.PENDING_AUTHORIZATION
    store.transition(order.id, OrderStatus.PENDING_APPROVAL)
    store.transition(order.id, OrderStatus.KEY_VALIDATION, "looks fine", actor="operator.bob")
    events = audit_records(store, subject=order.id)
    assert [e.event_type for e in events] == ["order", "authorize"]
    assert events[1].actor == "operator.bob"


def test_an_illegal_transition_is_refused_and_the_order_is_unchanged(store: Store) -> None:
    order = store.new_order("a.ra", "p", "CN=x", [], "1y", requested_by="a.ra")
    with pytest.raises(IllegalTransition) as info:
        store.transition(order.id, OrderStatus.ISSUED)
    assert "NEW -> ISSUED" in str(info.value)
    assert isinstance(info.value, CmcgateError)
    assert store.get_order(order.id).status is OrderStatus.NEW
    assert len(store.history(order.id)) == 1


def test_a_failed_order_keeps_its_reason_and_cannot_move_on(store: Store) -> None:
    order = store.new_order("a.ra", "p", "CN=x", [], "1y", requested_by="a.ra")
    store.transition(order.id, OrderStatus.KEY_VALIDATION)
    failed = store.fail(order.id, "key too small: rsa1024")
    assert failed.status is OrderStatus.FAILED
    assert failed.failure_reason == "key too small: rsa1024"
    assert store.history(order.id)[-1].note == "key too small: rsa1024"
    with pytest.raises(IllegalTransition):
        store.transition(order.id, OrderStatus.GENERATE_TBS)
    with pytest.raises(IllegalTransition):
        store.fail(order.id, "again")
    assert [e.event_type for e in audit_records(store, subject=order.id)] == ["order", "fail"]


def test_an_issued_order_cannot_fail(store: Store) -> None:
    order_id = issued_order(store, 77, ["a@example.com"])
    with pytest.raises(IllegalTransition):
        store.fail(order_id, "too late")


def test_unknown_order_is_a_typed_error(store: Store) -> None:
    with pytest.raises(UnknownOrder):
        store.transition("ord-nope", OrderStatus.KEY_VALIDATION)


def test_subject_changes_comments_and_pend_token_are_read_back(store: Store) -> None:
    order = store.new_order("a.ra", "p", "CN=x,L=Bern", ["x@a.test"], "1y", requested_by="a.ra")
    change = SubjectChange("L", "Bern", None, "locality not validated for this account")
    store.record_subject_changes(order.id, [change])
    store.set_pend_token(order.id, b"\x01\x02pend")
    store.add_comment(order.id, "operator.bob", "called the customer", now=T0)
    again = store.get_order(order.id)
    assert again.subject_changes == (change,)
    assert store.find_order_by_pend_token(b"\x01\x02pend") == again
    assert store.find_order_by_pend_token(b"other") is None
    comments = store.comments(order.id)
    assert [(c.author, c.text, c.at) for c in comments] == [
        ("operator.bob", "called the customer", T0)
    ]


def test_subject_changes_recorded_under_the_early_field_names_are_read(
    store: Store, db_path: Path
) -> None:
    order = store.new_order("a.ra", "p", "CN=x,O=Evil", ["x@a.test"], "1y", requested_by="a.ra")
    legacy = '[{"field": "O", "requested": "Evil", "applied": null, "reason": "not validated"}]'
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE orders SET subject_changes_json = ? WHERE id = ?", (legacy, order.id))
    assert store.get_order(order.id).subject_changes == (
        SubjectChange("O", "Evil", None, "not validated"),
    )


def test_certificates_are_found_by_email_case_insensitively(store: Store) -> None:
    issued_order(store, 0xA1, ["Alice@Example.com", "alice.alias@example.com"])
    issued_order(store, 0xB2, ["bob@example.com"], subject_email="BOB@example.com")
    found = store.find_certificates(email="alice@example.COM")
    assert [c.serial for c in found] == ["a1"]
    assert found[0].emails == ("alice@example.com", "alice.alias@example.com")
    assert [c.serial for c in store.find_certificates(email="bob@example.com")] == ["b2"]
    assert store.find_certificates(email="carol@example.com") == []
    cert = store.get_certificate("00:A1")
    assert cert.issuer == "CN=cmcgate Test Issuing CA"
    assert cert.not_after == T0 + timedelta(days=365)


def test_certificates_expiring_within_a_window_leave_out_revoked_and_expired(
    store: Store,
) -> None:
    issued_order(store, 1, ["soon@example.com"], days=20)
    issued_order(store, 2, ["later@example.com"], days=200)
    issued_order(store, 3, ["gone@example.com"], days=5, not_before=T0 - timedelta(days=30))
    issued_order(store, 4, ["revoked@example.com"], days=10)
    store.revoke(4, RevocationReason.SUPERSEDED, by="operator.bob")
    now = T0 + timedelta(days=1)
    expiring = store.find_certificates(expiring_within=timedelta(days=30), now=now)
    assert [c.serial for c in expiring] == ["1"]
    expired = store.find_certificates(status=CertificateStatus.EXPIRED, now=now)
    assert [(c.serial, c.status) for c in expired] == [("3", CertificateStatus.EXPIRED)]
    valid = store.find_certificates(status=CertificateStatus.VALID, now=now)
    assert sorted(c.serial for c in valid) == ["1", "2"]
    assert store.mark_expired(now=now) == 1


def test_a_revocation_is_stored_with_its_reason_and_the_order_becomes_revoked(
    store: Store, db_path: Path
) -> None:
    order_id = issued_order(store, 0xC0FFEE, ["carol@example.com"])
    at = T0 + timedelta(days=3)
    rev = store.revoke(
        "c0ffee",
        "keyCompromise",
        by="operator.bob",
        comment="laptop stolen",
        invalidity_date=T0 + timedelta(days=2),
        now=at,
    )
    assert rev.reason is RevocationReason.KEY_COMPROMISE and rev.reason_name == "keyCompromise"
    assert store.get_certificate(0xC0FFEE).status is CertificateStatus.REVOKED
    assert store.get_order(order_id).status is OrderStatus.REVOKED
    entries = store.revoked_entries()
    assert [(e.serial_number, e.reason, e.revoked_at) for e in entries] == [
        (0xC0FFEE, RevocationReason.KEY_COMPROMISE, at)
    ]
    assert entries[0].reason.crl_flag is x509.ReasonFlags.key_compromise
    with sqlite3.connect(db_path) as raw:
        row = raw.execute(
            "SELECT serial, reason_code, reason_name, comment, revoked_by FROM revocations"
        ).fetchone()
    assert row == ("c0ffee", 1, "keyCompromise", "laptop stolen", "operator.bob")
    with pytest.raises(RevocationRefused, match="revoked already"):
        store.revoke(0xC0FFEE, RevocationReason.SUPERSEDED, by="operator.bob")
    assert verify_audit(store).ok


@pytest.mark.parametrize("reason", ["certificateHold", 6, "removeFromCRL", "cACompromise"])
def test_certificate_hold_and_other_non_smime_reasons_are_refused(
    store: Store, reason: str | int
) -> None:
    issued_order(store, 0xD0, ["dave@example.com"])
    with pytest.raises(RevocationRefused):
        store.revoke(0xD0, reason, by="operator.bob")
    assert store.get_certificate(0xD0, now=T0).status is CertificateStatus.VALID
    assert store.revoked_entries() == []


def test_revocation_reasons_parse_from_names_and_codes() -> None:
    assert RevocationReason.parse("cessationOfOperation") is RevocationReason.CESSATION_OF_OPERATION
    assert RevocationReason.parse("affiliation_changed") is RevocationReason.AFFILIATION_CHANGED
    assert RevocationReason.parse(9).rfc_name == "privilegeWithdrawn"
    assert RevocationReason.UNSPECIFIED.crl_flag is None
    with pytest.raises(RevocationRefused):
        RevocationReason.parse(7)


def test_a_certificate_is_recorded_only_in_status_issue_and_only_once(store: Store) -> None:
    order = store.new_order("a.ra", "p", "CN=x", [], "1y", requested_by="a.ra")
    with pytest.raises(StoreError, match="status ISSUE"):
        store.record_certificate(order.id, make_cert(5, ["e@example.com"]))
    issued_order(store, 6, ["f@example.com"])
    with pytest.raises(DuplicateCertificate):
        store.record_certificate(None, make_cert(6, ["f@example.com"]))


def test_a_publication_job_is_retried_with_backoff_then_fails_after_max_attempts(
    store: Store,
) -> None:
    job = store.enqueue_job(JobKind.PUBLISH, 0xAB, "Alice@example.com", now=T0)
    assert job.status is JobStatus.PENDING and job.email == "alice@example.com"
    now = T0
    delays = []
    for attempt in range(1, 5):
        (claimed,) = store.claim_due_jobs(now, limit=5)
        assert claimed.id == job.id and claimed.attempts == attempt
        assert claimed.status is JobStatus.PROCESSING
        assert store.claim_due_jobs(now, limit=5) == []  # taken: nobody else gets it
        after = store.mark_job_retry(
            job.id,
            "ldap down",
            backoff=timedelta(seconds=10),
            max_backoff=timedelta(seconds=30),
            max_attempts=4,
            now=now,
        )
        if attempt < 4:
            assert after.status is JobStatus.RETRY
            delays.append(after.next_attempt_at - now)
            assert store.claim_due_jobs(now + delays[-1] - timedelta(seconds=1)) == []
            now = after.next_attempt_at
        else:
            assert after.status is JobStatus.FAILED and after.last_error == "ldap down"
    assert delays == [timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=30)]
    assert store.claim_due_jobs(now + timedelta(days=1)) == []
    assert retry_delay(100, timedelta(minutes=1), timedelta(hours=6)) == timedelta(hours=6)


def test_a_waiting_job_runs_only_after_release_and_success_is_final(store: Store) -> None:
    order = store.new_order("a.ra", "p", "CN=x", [], "1y", requested_by="a.ra")
    job = store.enqueue_job("publish", 0x10, "g@example.com", order_id=order.id, waiting=True)
    assert job.status is JobStatus.WAITING
    assert store.claim_due_jobs(T0 + timedelta(days=1)) == []
    assert store.release_jobs(order.id, now=T0) == 1
    (claimed,) = store.claim_due_jobs(T0)
    done = store.mark_job_success(claimed.id, now=T0)
    assert done.status is JobStatus.SUCCESS
    assert store.find_jobs(serial=0x10, status=JobStatus.SUCCESS)[0].id == job.id
    with pytest.raises(StoreError):
        store.mark_job_success(claimed.id)


def test_two_workers_claiming_at_once_never_get_the_same_job(db_path: Path) -> None:
    first = Store.open(f"sqlite:///{db_path}")
    first.create_all()
    second = Store.open(f"sqlite:///{db_path}")  # another engine: as if another process
    for i in range(60):
        first.enqueue_job(JobKind.UNPUBLISH, i + 1, f"u{i}@example.com", now=T0)
    got: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(name: str, store: Store) -> None:
        barrier.wait()
        while True:
            jobs = store.claim_due_jobs(T0 + timedelta(seconds=1), limit=3)
            if not jobs:
                return
            got[name].extend(j.id for j in jobs)

    threads = [
        threading.Thread(target=worker, args=("a", first)),
        threading.Thread(target=worker, args=("b", second)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = got["a"] + got["b"]
    assert len(claimed) == 60 and len(set(claimed)) == 60
    assert all(j.attempts == 1 for j in first.find_jobs(status=JobStatus.PROCESSING))
    assert len(first.find_jobs(status=JobStatus.PROCESSING)) == 60


def test_a_replayed_transaction_id_and_nonce_is_detected(store: Store) -> None:
    assert store.remember_nonce(4711, b"\x00nonce") is True
    assert store.remember_nonce(4711, b"\x00nonce") is False
    assert store.remember_nonce(4711, b"\x00other") is True
    assert store.remember_nonce(4712, b"\x00nonce") is True
    assert store.forget_nonces_before(datetime.now(UTC) + timedelta(seconds=5)) == 3
    assert store.remember_nonce(4711, b"\x00nonce") is True


def test_an_unusable_dsn_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        Store.open("nosuchdb://x/y")
    with pytest.raises(StoreError):
        Store.open("sqlite:////nonexistent/dir/ca.db").create_all()


def test_a_job_for_an_unknown_order_is_a_conflict_not_a_crash(store: Store) -> None:
    with pytest.raises(StoreConflict):
        store.enqueue_job(JobKind.PUBLISH, 1, "x@example.com", order_id="ord-missing")
    assert store.find_jobs() == []
