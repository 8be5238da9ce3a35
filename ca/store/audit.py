"""Tamper-evident audit log of the CA, kept in the store's database.

Every security-relevant event (CA init, order, authorization, issue, failure, revocation, key use,
RA login, refusal...) is appended as a record ``(seq, ts, event_type, actor, subject, details,
prev_hash, hash)`` where ``hash = SHA-256(canonical(seq, ts, event_type, actor, subject, details,
prev_hash))`` and ``prev_hash`` is the previous record's hash (64 zeros for record 1). A separate
one-row table, ``audit_head``, holds the last seq and hash so that cutting records off the end is
visible too.

Appends are serialised: a per-store lock inside the process, and a write transaction that locks
the head row (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).

Limit: the hash chain detects edits, deletions, reordering and truncation by someone who changes
some rows; someone who can rewrite the whole table *and* the head can recompute every hash. The
stronger mode closes that: give the store an HMAC key (``audit_hmac_key_file`` in ca.yaml, a file
only the CA service can read) and every record and the head also carry
``HMAC-SHA256(key, hash)``, which cannot be recomputed without the key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.store.db import AuditHeadRow, AuditRow, utcnow
from ca.store.model import StoreError
from config.database import view_of


class AuditedStore(Protocol):
    """What the audit functions need of :class:`ca.store.orders.Store`."""

    audit_hmac_key: bytes | None

    def audit_transaction(self) -> AbstractContextManager[Session]: ...

    def read_session(self) -> AbstractContextManager[Session]: ...


GENESIS_HASH = "0" * 64
_HEAD_ID = 1
_EVENT_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_REORDER_WINDOW = 2000


class AuditError(StoreError):
    """The audit log could not be written or read, or an event was malformed."""


class AuditEvent(enum.StrEnum):
    INIT = "init"
    ORDER = "order"
    AUTHORIZE = "authorize"
    ISSUE = "issue"
    FAIL = "fail"
    REVOKE = "revoke"
    KEY_USE = "key_use"
    LOGIN = "login"
    REFUSAL = "refusal"
    PUBLISH = "publish"
    COMMENT = "comment"
    HMAC_CHECKPOINT = "hmac_checkpoint"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime
    event_type: str
    actor: str
    subject: str | None
    details_json: str
    prev_hash: str
    hash: str
    mac: str | None

    @property
    def details(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.details_json)
        return parsed


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    records: int = 0
    head_seq: int | None = None
    mac_checked: bool = False
    #: with a key: the first record that must carry a MAC (1, or HMAC's checkpoint record)
    mac_from: int | None = None


def canonical_details(details: Mapping[str, Any] | None) -> str:
    """Details as canonical JSON (sorted keys, no spaces, ASCII); bytes become hex."""
    try:
        return json.dumps(
            _jsonable(dict(details or {})),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
    except (TypeError, ValueError) as ex:
        raise AuditError(f"audit details are not JSON-serialisable: {ex}") from ex


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return _ts_text(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _ts_text(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_encoding(
    seq: int,
    ts: datetime,
    event_type: str,
    actor: str,
    subject: str | None,
    details_json: str,
    prev_hash: str,
) -> bytes:
    """The bytes a record's hash covers: a JSON array of the seven fields, UTF-8."""
    fields = [seq, _ts_text(ts), event_type, actor, subject, details_json, prev_hash]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_hash(
    seq: int,
    ts: datetime,
    event_type: str,
    actor: str,
    subject: str | None,
    details_json: str,
    prev_hash: str,
) -> str:
    encoded = canonical_encoding(seq, ts, event_type, actor, subject, details_json, prev_hash)
    return hashlib.sha256(encoded).hexdigest()


def _mac(key: bytes | None, message: str) -> str | None:
    if key is None:
        return None
    return hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()


def _head_message(seq: int, hash_hex: str) -> str:
    return f"head:{seq}:{hash_hex}"


def load_hmac_key(path: str | Path) -> bytes:
    """The audit HMAC key: the file's bytes (stripped of surrounding whitespace), >= 16 bytes."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as ex:
        raise AuditError(f"cannot read the audit HMAC key file {path}: {ex.strerror}") from ex
    if len(key) < 16:
        raise AuditError(f"the audit HMAC key in {path} is too short: use at least 16 bytes")
    return key


def ensure_head(session: Session) -> None:
    """Create the head row (seq 0) if missing; called by Store.create_all."""
    if session.get(AuditHeadRow, _HEAD_ID) is None:
        session.add(AuditHeadRow(id=_HEAD_ID, seq=0, hash=GENESIS_HASH, mac=None))
        session.flush()


def append_in_session(
    session: Session,
    event_type: AuditEvent | str,
    actor: str,
    subject: str | None = None,
    details: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
    hmac_key: bytes | None = None,
) -> AuditRecord:
    """Append one record inside the caller's open write transaction (which the caller commits).

    The caller holds the store's audit lock; the head row is read FOR UPDATE.
    """
    etype = str(event_type.value if isinstance(event_type, AuditEvent) else event_type)
    if not _EVENT_RE.match(etype):
        raise AuditError(f"malformed audit event type {etype!r}")
    if not actor or len(actor) > 256:
        raise AuditError("an audit record needs an actor of 1..256 characters")
    if subject is not None and len(subject) > 256:
        raise AuditError("an audit subject is at most 256 characters")
    ts = now or utcnow()
    details_json = canonical_details(details)
    head = session.execute(
        select(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID).with_for_update()
    ).scalar_one_or_none()
    if head is None:
        head = AuditHeadRow(id=_HEAD_ID, seq=0, hash=GENESIS_HASH, mac=None)
        session.add(head)
    seq = head.seq + 1
    prev_hash = head.hash
    digest = record_hash(seq, ts, etype, actor, subject, details_json, prev_hash)
    row = AuditRow(
        seq=seq,
        ts=ts,
        event_type=etype,
        actor=actor,
        subject=subject,
        details=details_json,
        prev_hash=prev_hash,
        hash=digest,
        mac=_mac(hmac_key, digest),
    )
    session.add(row)
    head.seq = seq
    head.hash = digest
    head.mac = _mac(hmac_key, _head_message(seq, digest))
    session.flush()
    return _view(row)


def _view(row: AuditRow) -> AuditRecord:
    return view_of(AuditRecord, row, details_json=row.details)


def append_audit(
    store: AuditedStore,
    event_type: AuditEvent | str,
    actor: str,
    subject: str | None = None,
    details: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> AuditRecord:
    """Append one record in its own transaction (key use, login, refusal, init...)."""
    with store.audit_transaction() as session:
        return append_in_session(
            session, event_type, actor, subject, details, now=now, hmac_key=store.audit_hmac_key
        )


def audit_records(
    store: AuditedStore, *, subject: str | None = None, event_type: str | None = None
) -> list[AuditRecord]:
    """Records in seq order, optionally only those about one order/serial or of one type."""
    with store.read_session() as session:
        query = select(AuditRow).order_by(AuditRow.seq)
        if subject is not None:
            query = query.where(AuditRow.subject == subject)
        if event_type is not None:
            query = query.where(AuditRow.event_type == str(event_type))
        return [_view(r) for r in session.execute(query).scalars()]


def verify_audit(store: AuditedStore, *, hmac_key: bytes | None = None) -> AuditReport:
    """Check the whole chain; problems name the records: ``record 17: modified (...)``.

    ``hmac_key`` defaults to the store's key; with a key, record and head MACs are checked too.
    """
    key = hmac_key if hmac_key is not None else store.audit_hmac_key
    with store.read_session() as session:
        rows = [
            _view(r) for r in session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars()
        ]
        head = session.get(AuditHeadRow, _HEAD_ID)
        head_view = None if head is None else (head.seq, head.hash, head.mac)
    problems = check_chain(rows, head_view, key)
    return AuditReport(
        ok=not problems,
        problems=problems,
        records=len(rows),
        head_seq=None if head_view is None else head_view[0],
        mac_checked=key is not None,
        mac_from=None if key is None else mac_start(rows, key),
    )


def mac_start(rows: list[AuditRecord], key: bytes) -> int:
    """The first seq that must carry a MAC under ``key``: 1, or the last ``hmac_checkpoint``
    record whose hash and MAC verify (HMAC turned on for an existing log, see
    :mod:`ca.store.audit_hmac`). Records before it are held by the hash chain, which the
    checkpoint's MAC pins: changing any of them changes the checkpoint's prev_hash."""
    start = 1
    for row in rows:
        if row.event_type == AuditEvent.HMAC_CHECKPOINT.value and _intact(row):
            if _mac_ok(key, row.hash, row.mac):
                start = row.seq
    return start


def _intact(row: AuditRecord) -> bool:
    return row.hash == record_hash(
        row.seq, row.ts, row.event_type, row.actor, row.subject, row.details_json, row.prev_hash
    )


def check_chain(
    rows: list[AuditRecord],
    head: tuple[int, str, str | None] | None,
    key: bytes | None = None,
) -> list[str]:
    """Pure verification of records sorted by seq against the head (seq, hash, mac)."""
    problems: list[str] = []
    expected_seq = 1
    prev_stored_hash = GENESIS_HASH
    prev_flagged = False
    all_seqs = [r.seq for r in rows]
    macs_from = mac_start(rows, key) if key is not None else 0
    for row in rows:
        if row.seq > expected_seq:
            problems.append(
                _missing(expected_seq, row.seq - 1, "deleted (missing from the sequence)")
            )
            prev_flagged = True
        recomputed = record_hash(
            row.seq,
            row.ts,
            row.event_type,
            row.actor,
            row.subject,
            row.details_json,
            row.prev_hash,
        )
        flagged = False
        if recomputed != row.hash:
            flagged = True
            origin = _original_seq(row, all_seqs)
            if origin is not None:
                problems.append(
                    f"record {row.seq}: reordered (holds the content of record {origin})"
                )
            else:
                problems.append(f"record {row.seq}: modified (hash mismatch)")
        elif row.prev_hash != prev_stored_hash and not prev_flagged:
            flagged = True
            before = "the chain start" if row.seq == 1 else f"record {row.seq - 1}"
            problems.append(
                f"record {row.seq}: chain broken (prev_hash does not match {before}; "
                "a preceding record was rewritten, replaced or reordered)"
            )
        needs_mac = key is not None and row.seq >= macs_from and not flagged
        if needs_mac and key is not None and not _mac_ok(key, row.hash, row.mac):
            flagged = True
            problems.append(f"record {row.seq}: MAC mismatch (written without the audit key)")
        prev_stored_hash = row.hash
        prev_flagged = flagged
        expected_seq = row.seq + 1
    last_seq = rows[-1].seq if rows else 0
    last_hash = rows[-1].hash if rows else GENESIS_HASH
    problems.extend(_check_head(head, last_seq, last_hash, key))
    return problems


def _check_head(
    head: tuple[int, str, str | None] | None, last_seq: int, last_hash: str, key: bytes | None
) -> list[str]:
    if head is None:
        if last_seq == 0:
            return []
        return ["audit head: missing (cannot tell whether records were cut off the end)"]
    head_seq, head_hash, head_mac = head
    if head_seq > last_seq:
        return [_missing(last_seq + 1, head_seq, f"truncated (the audit head says {head_seq})")]
    if head_seq < last_seq:
        return [
            _missing(
                head_seq + 1, last_seq, f"appended outside the audit log (head says {head_seq})"
            )
        ]
    if head_hash != last_hash:
        return [f"audit head: hash does not match record {last_seq}"]
    head_message = _head_message(head_seq, head_hash)
    if key is not None and last_seq and not _mac_ok(key, head_message, head_mac):
        return ["audit head: MAC mismatch (written without the audit key)"]
    return []


def _mac_ok(key: bytes, message: str, mac: str | None) -> bool:
    expected = _mac(key, message)
    return mac is not None and expected is not None and hmac.compare_digest(expected, mac)


def _missing(first: int, last: int, what: str) -> str:
    if first == last:
        return f"record {first}: {what}"
    return f"records {first}..{last}: {what}"


def _original_seq(row: AuditRecord, seqs: list[int]) -> int | None:
    """The seq a moved record was written with, if its hash matches it under another seq."""
    candidates = [s for s in seqs if s != row.seq and abs(s - row.seq) <= _REORDER_WINDOW]
    for seq in candidates:
        digest = record_hash(
            seq, row.ts, row.event_type, row.actor, row.subject, row.details_json, row.prev_hash
        )
        if digest == row.hash:
            return seq
    return None
