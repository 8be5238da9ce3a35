"""Turning the audit log's HMAC mode on for a CA that has been running without it:
``cmcgate ca audit enable-hmac``.

The records written before have no MAC, and nobody can add one honestly afterwards. So the
command appends a *checkpoint* record (``hmac_checkpoint``) MACed with the new key; its
prev_hash is the chain head at that moment, so the MAC pins every earlier record through the
hash chain. ``verify`` then checks records before the checkpoint by hash and everything from
the checkpoint on by hash and MAC (:func:`ca.store.audit.mac_start`).

The checkpoint is refused when it would whitewash tampering: the hash chain must be intact,
and records lacking a MAC under the key may only come *before* records that have one (an
operator who set ``audit.hmac_key_file`` by hand left such a prefix; a record without a MAC
after a MACed one was written by someone without the key).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ca.store.audit import (
    AuditError,
    AuditEvent,
    AuditRecord,
    _mac_ok,
    _view,
    append_in_session,
    check_chain,
    mac_start,
)
from ca.store.db import AuditHeadRow, AuditRow
from ca.store.orders import Store
from config.files import write_atomically

_COMMENTED = re.compile(r"^  # audit:\n  #   hmac_key_file: .*$", re.MULTILINE)


def key_id(key: bytes) -> str:
    """A name for the key that does not reveal it (the first 16 hex of its SHA-256)."""
    return hashlib.sha256(key).hexdigest()[:16]


def _log(session: Session) -> tuple[list[AuditRecord], tuple[int, str, str | None] | None]:
    rows = [_view(r) for r in session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars()]
    head = session.get(AuditHeadRow, 1)
    return rows, None if head is None else (head.seq, head.hash, head.mac)


def hmac_problem(store: Store, key: bytes) -> str | None:
    """Why a checkpoint would be refused now, or None (read-only check)."""
    with store.read_session() as session:
        rows, head = _log(session)
    return _refusal(rows, head, key)


def _refusal(
    rows: list[AuditRecord], head: tuple[int, str, str | None] | None, key: bytes
) -> str | None:
    broken = check_chain(rows, head, None)
    if broken:
        return "the audit log's hash chain is broken (" + "; ".join(broken[:3]) + ")"
    start = mac_start(rows, key)
    macs = [(r.seq, _mac_ok(key, r.hash, r.mac)) for r in rows if r.seq >= start]
    first_good = next((seq for seq, ok in macs if ok), None)
    late = [seq for seq, ok in macs if not ok and first_good is not None and seq > first_good]
    if late:
        return (
            f"record {late[0]} has no valid MAC although record {first_good} before it has "
            "one: it was written without the key after HMAC was on (investigate)"
        )
    return None


def enable_hmac(store: Store, key: bytes, *, actor: str) -> AuditRecord | None:
    """Append the checkpoint MACed with ``key``; None when the log verifies with it already.

    Raises AuditError when the checkpoint would cover up a problem (see the module doc).
    """
    with store.audit_transaction() as session:
        rows, head = _log(session)
        if rows and not check_chain(rows, head, key):
            return None  # every record that must carry a MAC has one
        why = _refusal(rows, head, key)
        if why is not None:
            raise AuditError(f"HMAC not turned on: {why}")
        details = {
            "key_id": key_id(key),
            "previous_head_seq": 0 if head is None else head[0],
            "previous_head_hash": None if head is None else head[1],
        }
        return append_in_session(
            session, AuditEvent.HMAC_CHECKPOINT, actor, None, details, hmac_key=key
        )


def new_key_file(path: Path) -> bytes:
    """A fresh random key (64 hex characters) in a new file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path.read_bytes().strip()


def name_key_file_in_ca_yaml(ca_yaml: Path, key_file: Path) -> None:
    """Set ``ca.store.audit.hmac_key_file`` in ca.yaml (relative when inside the CA directory),
    keeping the rest of the file and its comments; AuditError if it cannot be done safely."""
    text = ca_yaml.read_text()
    try:
        value = str(key_file.resolve().relative_to(ca_yaml.parent.resolve()))
    except ValueError:
        value = str(key_file.resolve())
    lines = f"  audit:\n    hmac_key_file: {json.dumps(value)}"
    if _COMMENTED.search(text):
        updated = _COMMENTED.sub(lambda _: lines, text, count=1)
    elif re.search(r"^  audit:", text, re.MULTILINE) or not re.search(r"^ca:[ \t]*$", text, re.M):
        raise AuditError(
            f"cannot place the key in {ca_yaml}: add `audit: hmac_key_file: {value}` under "
            "`ca:` by hand and run the command again"
        )
    else:
        updated = re.sub(
            r"^ca:[ \t]*\n", lambda m: m.group(0) + lines + "\n", text, count=1, flags=re.M
        )
    write_atomically(ca_yaml, updated.encode())


__all__ = ["enable_hmac", "hmac_problem", "key_id", "name_key_file_in_ca_yaml", "new_key_file"]
