"""The CA's order store: orders and their status history, certificates, revocations, comments,
LDAP publication jobs and CMC replay protection, in SQLite (default) or PostgreSQL.

    store = Store.open("sqlite:////var/lib/cmcgate/ca/ca.db")
    store.create_all()
    order = store.new_order("totemoag.ra", "totemo-persogold", "CN=Alice",
                            ["alice@example.com"], "1y", csr_der=csr, requested_by="totemoag.ra")
    store.transition(order.id, OrderStatus.KEY_VALIDATION)

Every method opens its own session (usable from threads) and returns frozen views. Orders,
authorizations, issuance, failures and revocations are appended to the audit log
(:mod:`ca.store.audit`) in the same transaction as the change itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ca.store.audit import AuditEvent, ensure_head, load_hmac_key
from ca.store.base import check_text, order_view
from ca.store.certs import CertificatesMixin
from ca.store.db import (
    Base,
    CommentRow,
    NonceRow,
    OrderRow,
    StatusHistoryRow,
    default_dsn,
    make_engines,
    utcnow,
)
from ca.store.jobs import JobsMixin, new_job_row
from ca.store.model import (
    CommentView,
    OrderStatus,
    OrderView,
    StatusChange,
    StoreConflict,
    StoreError,
    SubjectChange,
    UnknownOrder,
    check_transition,
)
from ca.store.ra import RaStoreMixin
from config.closing import Closing
from config.redact import scrub

__all__ = ["Store", "default_dsn"]


class Store(CertificatesMixin, JobsMixin, RaStoreMixin, Closing):
    """Typed access to the CA database. Create with :meth:`open`."""

    @classmethod
    def open(cls, dsn: str, *, audit_hmac_key: bytes | str | Path | None = None) -> Store:
        """Connect to ``dsn`` (``sqlite:///path``, ``postgresql+psycopg://...``).

        ``audit_hmac_key``: the key bytes, or a path to the key file (stronger audit mode).
        """
        read_engine, write_engine = make_engines(dsn)
        key: bytes | None
        if audit_hmac_key is None or isinstance(audit_hmac_key, bytes):
            key = audit_hmac_key
        else:
            key = load_hmac_key(audit_hmac_key)
        return cls(read_engine, write_engine, key)

    @classmethod
    def open_ca_dir(cls, ca_dir: str | Path) -> Store:
        """The default SQLite database ``<ca_dir>/ca.db``."""
        return cls.open(default_dsn(str(Path(ca_dir).resolve())))

    def create_all(self) -> None:
        """Create missing tables (idempotent) and the audit head row."""
        try:
            Base.metadata.create_all(self._write_engine)
        except SQLAlchemyError as ex:
            dsn = self._dsn()
            raise StoreError(scrub(f"cannot create the tables in {dsn}: {ex}", dsn)) from ex
        with self.write_session() as session:
            ensure_head(session)

    def close(self) -> None:
        self._read_engine.dispose()

    # -- orders -----------------------------------------------------------------------------

    def new_order(
        self,
        account: str,
        product: str,
        subject: str,
        emails: Sequence[str],
        validity: str,
        *,
        requested_by: str,
        csr_der: bytes | None = None,
        transaction_id: int | None = None,
        sender_nonce: bytes | None = None,
        pend_token: bytes | None = None,
        note: str | None = None,
        now: datetime | None = None,
    ) -> OrderView:
        """A NEW order ``ord-<uuid4>`` with its first history row; audited as ``order``."""
        check_text("account", account, 128)
        check_text("product", product, 128)
        check_text("subject", subject, 1024, required=False)
        check_text("validity", validity, 16)
        check_text("requested by", requested_by, 256)
        if isinstance(emails, str):
            raise StoreError("emails must be a list of addresses, not one string")
        for email in emails:
            check_text("email", email, 320)
        _check_transaction_id(transaction_id)
        at = now or utcnow()
        order_id = f"ord-{uuid.uuid4()}"
        with self.audit_transaction() as session:
            row = OrderRow(
                id=order_id,
                account=account,
                product=product,
                subject=subject,
                emails_json=json.dumps([e.strip() for e in emails]),
                validity=validity,
                csr_der=csr_der,
                status=OrderStatus.NEW.value,
                failure_reason=None,
                subject_changes_json="[]",
                transaction_id=None if transaction_id is None else str(transaction_id),
                sender_nonce=sender_nonce,
                pend_token=None if pend_token is None else pend_token.hex(),
                requested_by=requested_by,
                created_at=at,
                updated_at=at,
            )
            session.add(row)
            session.add(
                StatusHistoryRow(
                    order_id=order_id, from_status=None, to_status=row.status, at=at, note=note
                )
            )
            details = {
                "account": account,
                "product": product,
                "subject": subject,
                "emails": list(emails),
                "validity": validity,
            }
            self._audit(session, AuditEvent.ORDER, requested_by, order_id, details, at)
            session.flush()
            return order_view(session, row)

    def get_order(self, order_id: str) -> OrderView:
        with self.read_session() as session:
            row = session.get(OrderRow, order_id)
            if row is None:
                raise UnknownOrder(f"no order {order_id}")
            return order_view(session, row)

    def find_orders(
        self,
        *,
        account: str | None = None,
        status: OrderStatus | None = None,
        transaction_id: int | None = None,
    ) -> list[OrderView]:
        """Orders oldest first, filtered by account, status and/or CMC transactionId."""
        query = select(OrderRow).order_by(OrderRow.created_at, OrderRow.id)
        if account is not None:
            query = query.where(OrderRow.account == account)
        if status is not None:
            query = query.where(OrderRow.status == OrderStatus(status).value)
        if transaction_id is not None:
            query = query.where(OrderRow.transaction_id == str(transaction_id))
        with self.read_session() as session:
            return [order_view(session, r) for r in session.execute(query).scalars()]

    def find_order_by_pend_token(self, pend_token: bytes) -> OrderView | None:
        with self.read_session() as session:
            row = session.execute(
                select(OrderRow).where(OrderRow.pend_token == pend_token.hex())
            ).scalar_one_or_none()
            return None if row is None else order_view(session, row)

    def transition(
        self,
        order_id: str,
        to: OrderStatus,
        note: str | None = None,
        *,
        actor: str = "ca",
        now: datetime | None = None,
    ) -> OrderView:
        """Move an order to ``to`` (IllegalTransition if not allowed) and record the change.

        Leaving PENDING_AUTHORIZATION for anything but FAILED is audited as ``authorize`` with
        ``actor`` (the RA operator who authorized). Use :meth:`fail` to fail an order.
        """
        wanted = OrderStatus(to)
        if wanted is OrderStatus.FAILED:
            return self.fail(order_id, note or "failed", actor=actor, now=now)
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = _locked_order(session, order_id)
            current = OrderStatus(row.status)
            check_transition(order_id, current, wanted)
            _set_status(session, row, wanted, at, note)
            if current is OrderStatus.PENDING_AUTHORIZATION:
                details = {"to": wanted.value, "note": note}
                self._audit(session, AuditEvent.AUTHORIZE, actor, order_id, details, at)
            session.flush()
            return order_view(session, row)

    def advance(
        self, order_id: str, *steps: OrderStatus, now: datetime | None = None
    ) -> OrderStatus:
        """Move an order through ``steps`` in one transaction; the status it ends in.

        The issuance pipeline's fast path: every step is checked and recorded in the history
        as :meth:`transition` does, but without building an :class:`OrderView` per step.
        Not for leaving PENDING_AUTHORIZATION (that is audited: use :meth:`transition`).
        """
        with self.write_session() as session:
            row = _locked_order(session, order_id)
            _advance_row(session, row, steps, now or utcnow())
            return OrderStatus(row.status)

    def finish_issuance(
        self, order_id: str, publish: Sequence[tuple[int, str]] = (), *, now: datetime | None = None
    ) -> OrderView:
        """FINALIZE_ISSUANCE, the LDAP publication jobs ``(serial, email)``, then ISSUED: one
        transaction, so an issued order never lacks its publication jobs."""
        at = now or utcnow()
        with self.write_session() as session:
            row = _locked_order(session, order_id)
            _advance_row(session, row, (OrderStatus.FINALIZE_ISSUANCE, OrderStatus.ISSUED), at)
            for serial, email in publish:
                session.add(new_job_row("publish", serial, email, order_id, False, at))
            session.flush()
            return order_view(session, row)

    def fail(
        self, order_id: str, reason: str, *, actor: str = "ca", now: datetime | None = None
    ) -> OrderView:
        """Move a not yet ISSUED order to FAILED with ``reason``; audited as ``fail``."""
        check_text("failure reason", reason, 4000)
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = _locked_order(session, order_id)
            current = OrderStatus(row.status)
            check_transition(order_id, current, OrderStatus.FAILED)
            row.failure_reason = reason
            _set_status(session, row, OrderStatus.FAILED, at, reason)
            details = {"from": current.value, "reason": reason}
            self._audit(session, AuditEvent.FAIL, actor, order_id, details, at)
            session.flush()
            return order_view(session, row)

    def history(self, order_id: str) -> list[StatusChange]:
        """The order's status changes, oldest first (the first has from_status None)."""
        with self.read_session() as session:
            if session.get(OrderRow, order_id) is None:
                raise UnknownOrder(f"no order {order_id}")
            rows = session.execute(
                select(StatusHistoryRow)
                .where(StatusHistoryRow.order_id == order_id)
                .order_by(StatusHistoryRow.id)
            ).scalars()
            return [
                StatusChange(
                    order_id=r.order_id,
                    from_status=None if r.from_status is None else OrderStatus(r.from_status),
                    to_status=OrderStatus(r.to_status),
                    at=r.at,
                    note=r.note,
                )
                for r in rows
            ]

    def set_csr(
        self, order_id: str, csr_der: bytes, *, now: datetime | None = None, first: bool = False
    ) -> OrderView:
        """Attach the CSR an order (e.g. PENDING_CSR_RENEWAL) was waiting for; ``first``:
        only if it has none yet (of two uploads at once, the second is refused)."""
        with self.write_session() as session:
            row = _locked_order(session, order_id)
            if first and row.csr_der is not None:
                raise StoreConflict(f"order {order_id} has its CSR already")
            row.csr_der = csr_der
            row.updated_at = now or utcnow()
            session.flush()
            return order_view(session, row)

    def set_pend_token(
        self, order_id: str, pend_token: bytes, *, now: datetime | None = None
    ) -> OrderView:
        """The CMC pendToken that lets a client poll this order."""
        if not pend_token or len(pend_token) > 64:
            raise StoreError("a pend token is 1..64 bytes")
        return self._update_order(order_id, now, pend_token=pend_token.hex())

    def record_subject_changes(
        self, order_id: str, changes: Sequence[SubjectChange], *, now: datetime | None = None
    ) -> OrderView:
        """Append subject fields the CA changed or dropped (kept as JSON on the order)."""
        with self.write_session() as session:
            row = _locked_order(session, order_id)
            known = json.loads(row.subject_changes_json)
            known.extend(asdict(c) for c in changes)
            row.subject_changes_json = json.dumps(known)
            row.updated_at = now or utcnow()
            session.flush()
            return order_view(session, row)

    def _update_order(self, order_id: str, now: datetime | None, **values: object) -> OrderView:
        try:
            with self.write_session() as session:
                row = _locked_order(session, order_id)
                for name, value in values.items():
                    setattr(row, name, value)
                row.updated_at = now or utcnow()
                session.flush()
                return order_view(session, row)
        except StoreConflict as ex:
            raise StoreConflict(f"order {order_id}: {', '.join(values)} already in use") from ex

    # -- comments ---------------------------------------------------------------------------

    def add_comment(
        self, order_id: str, author: str, text: str, *, now: datetime | None = None
    ) -> CommentView:
        check_text("comment author", author, 256)
        check_text("comment", text, 10_000)
        at = now or utcnow()
        with self.write_session() as session:
            _locked_order(session, order_id)
            row = CommentRow(order_id=order_id, author=author, at=at, text=text)
            session.add(row)
            session.flush()
            return CommentView(id=row.id, order_id=order_id, author=author, at=at, text=text)

    def comments(self, order_id: str) -> list[CommentView]:
        with self.read_session() as session:
            rows = session.execute(
                select(CommentRow).where(CommentRow.order_id == order_id).order_by(CommentRow.id)
            ).scalars()
            return [
                CommentView(id=r.id, order_id=r.order_id, author=r.author, at=r.at, text=r.text)
                for r in rows
            ]

    # -- CMC replay protection -----------------------------------------------------------------

    def remember_nonce(
        self, transaction_id: int | str, sender_nonce: bytes, *, now: datetime | None = None
    ) -> bool:
        """Record a (transactionId, senderNonce) pair: False when it was seen before (replay)."""
        return self.record_nonce(transaction_id, sender_nonce, now=now) is None

    def record_nonce(
        self, transaction_id: int | str, sender_nonce: bytes, *, now: datetime | None = None
    ) -> datetime | None:
        """Record a (transactionId, senderNonce) pair: None when it is new, else when it was
        first seen (the message is a replay; :mod:`ca.service.replay` decides how to answer)."""
        txid = str(int(transaction_id))
        if len(txid) > 80 or not sender_nonce or len(sender_nonce) > 128:
            raise StoreError("transactionId or senderNonce out of range")
        nonce = sender_nonce.hex()
        query = select(NonceRow.seen_at).where(
            NonceRow.transaction_id == txid, NonceRow.sender_nonce == nonce
        )
        try:
            with self.write_session() as session:
                seen = session.execute(query).scalar_one_or_none()
                if seen is not None:
                    return seen
                session.add(
                    NonceRow(transaction_id=txid, sender_nonce=nonce, seen_at=now or utcnow())
                )
                session.flush()
                return None
        except StoreConflict:  # another process recorded the same pair first
            with self.read_session() as session:
                return session.execute(query).scalar_one()

    def forget_nonces_before(self, cutoff: datetime) -> int:
        """Drop replay records older than ``cutoff`` (older messages fail the time check)."""
        with self.write_session() as session:
            result = session.execute(
                delete(NonceRow)
                .where(NonceRow.seen_at < cutoff)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _check_transaction_id(transaction_id: int | None) -> None:
    if transaction_id is not None and (
        isinstance(transaction_id, bool)
        or not isinstance(transaction_id, int)
        or len(str(transaction_id)) > 80
    ):
        raise StoreError("a CMC transactionId is an integer of at most 80 digits")


def _locked_order(session: Session, order_id: str) -> OrderRow:
    row = session.get(OrderRow, order_id, with_for_update=True)
    if row is None:
        raise UnknownOrder(f"no order {order_id}")
    return row


def _advance_row(
    session: Session, row: OrderRow, steps: Sequence[OrderStatus], at: datetime
) -> None:
    """Issuance steps in order, each checked and recorded (no FAILED, no leaving
    PENDING_AUTHORIZATION: those are audited by fail/transition)."""
    for step in steps:
        wanted = OrderStatus(step)
        current = OrderStatus(row.status)
        if wanted is OrderStatus.FAILED or current is OrderStatus.PENDING_AUTHORIZATION:
            raise StoreError(
                f"order {row.id}: {current.value} -> {wanted.value} is not a step of issuance"
            )
        check_transition(row.id, current, wanted)
        _set_status(session, row, wanted, at, None)


def _set_status(
    session: Session, row: OrderRow, to: OrderStatus, at: datetime, note: str | None
) -> None:
    session.add(
        StatusHistoryRow(
            order_id=row.id, from_status=row.status, to_status=to.value, at=at, note=note
        )
    )
    row.status = to.value
    row.updated_at = at
