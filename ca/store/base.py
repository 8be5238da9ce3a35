"""Session handling shared by the parts of :class:`ca.store.orders.Store`, and row -> view
conversion.

One session per call (the store is used from several threads); write sessions begin IMMEDIATE on
SQLite; database failures become :class:`StoreError` with the DSN's password redacted.
Transactions that append to the audit log hold the store's audit lock from before they begin, so
the in-process lock is always taken before the database lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ca.store.audit import AuditEvent, append_in_session
from ca.store.db import CertificateEmailRow, CertificateRow, JobRow, OrderRow
from ca.store.model import (
    CertificateStatus,
    CertificateView,
    JobKind,
    JobStatus,
    JobView,
    OrderStatus,
    OrderView,
    StoreConflict,
    StoreError,
    SubjectChange,
)
from config.database import view_of
from config.redact import redact_url, scrub


class StoreBase:
    def __init__(
        self, read_engine: Engine, write_engine: Engine, audit_hmac_key: bytes | None = None
    ) -> None:
        self._read_engine = read_engine
        self._write_engine = write_engine
        self._reader = sessionmaker(bind=read_engine, expire_on_commit=False)
        self._writer = sessionmaker(bind=write_engine, expire_on_commit=False)
        self._audit_lock = threading.Lock()
        self.audit_hmac_key = audit_hmac_key

    @property
    def dialect(self) -> str:
        return self._read_engine.dialect.name

    def _describe(self) -> str:
        return redact_url(self._dsn())

    def _dsn(self) -> str:
        return str(self._read_engine.url.render_as_string(hide_password=False))

    def _failure(self, ex: SQLAlchemyError) -> str:
        """``database <dsn>: <first line of the driver's message>``, passwords removed."""
        return scrub(f"database {self._dsn()}: {_short(ex)}", self._dsn())

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads (rolled back at the end)."""
        try:
            with self._reader() as session:
                yield session
        except StoreError:
            raise
        except SQLAlchemyError as ex:
            raise StoreError(self._failure(ex)) from ex

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A write transaction, committed when the block ends without an exception."""
        try:
            with self._writer.begin() as session:
                yield session
        except StoreError:
            raise
        except IntegrityError as ex:
            raise StoreConflict(self._failure(ex)) from ex
        except SQLAlchemyError as ex:
            raise StoreError(self._failure(ex)) from ex

    @contextmanager
    def audit_transaction(self) -> Iterator[Session]:
        """A write transaction that may append to the audit log (holds the audit lock)."""
        with self._audit_lock, self.write_session() as session:
            yield session

    def _audit(
        self,
        session: Session,
        event: AuditEvent | str,
        actor: str,
        subject: str | None,
        details: Mapping[str, Any] | None,
        now: datetime,
    ) -> None:
        append_in_session(
            session, event, actor, subject, details, now=now, hmac_key=self.audit_hmac_key
        )


def _short(ex: SQLAlchemyError) -> str:
    text = str(getattr(ex, "orig", None) or ex)
    return text.splitlines()[0][:300] if text else type(ex).__name__


def check_text(name: str, value: str | None, limit: int, *, required: bool = True) -> None:
    """Portable length check (SQLite would store longer strings, PostgreSQL would refuse)."""
    if value is None:
        if required:
            raise StoreError(f"{name} is required")
        return
    if not isinstance(value, str):
        raise StoreError(f"{name} must be text")
    if required and not value.strip():
        raise StoreError(f"{name} must not be empty")
    if len(value) > limit:
        raise StoreError(f"{name} is longer than {limit} characters")


def _subject_change(data: dict[str, str | None]) -> SubjectChange:
    """A recorded change (early databases named its fields ``field`` and ``applied``)."""
    return SubjectChange(
        str(data.get("attribute", data.get("field"))),
        data.get("requested"),
        data.get("issued", data.get("applied")),
        str(data.get("reason")),
    )


def order_view(session: Session, row: OrderRow) -> OrderView:
    serial = session.execute(
        select(CertificateRow.serial).where(CertificateRow.order_id == row.id)
    ).scalar_one_or_none()
    changes = tuple(_subject_change(c) for c in json.loads(row.subject_changes_json))
    return OrderView(
        id=row.id,
        account=row.account,
        product=row.product,
        subject=row.subject,
        emails=tuple(json.loads(row.emails_json)),
        validity=row.validity,
        csr_der=row.csr_der,
        status=OrderStatus(row.status),
        failure_reason=row.failure_reason,
        subject_changes=changes,
        transaction_id=None if row.transaction_id is None else int(row.transaction_id),
        sender_nonce=row.sender_nonce,
        pend_token=None if row.pend_token is None else bytes.fromhex(row.pend_token),
        requested_by=row.requested_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        certificate_serial=serial,
    )


def effective_status(row: CertificateRow, now: datetime) -> CertificateStatus:
    stored = CertificateStatus(row.status)
    if stored is CertificateStatus.VALID and row.not_after <= now:
        return CertificateStatus.EXPIRED
    return stored


def certificate_view(session: Session, row: CertificateRow, now: datetime) -> CertificateView:
    emails = session.execute(
        select(CertificateEmailRow.email)
        .where(CertificateEmailRow.certificate_id == row.id)
        .order_by(CertificateEmailRow.id)
    ).scalars()
    return CertificateView(
        serial=row.serial,
        order_id=row.order_id,
        subject=row.subject,
        issuer=row.issuer,
        emails=tuple(emails),
        not_before=row.not_before,
        not_after=row.not_after,
        status=effective_status(row, now),
        der=row.der,
        recorded_at=row.recorded_at,
    )


def job_view(row: JobRow) -> JobView:
    return view_of(JobView, row, kind=JobKind(row.kind), status=JobStatus(row.status))
