"""The CA database: engine set-up and the ORM tables (SQLAlchemy 2, typed).

SQL stays portable between SQLite (the default, ``sqlite:///<ca dir>/ca.db``) and PostgreSQL:
DER in LargeBinary, every String has a length, datetimes are stored as naive UTC and handed out
timezone-aware (:class:`UtcDateTime`). SQLite connections get WAL, foreign keys and a busy
timeout; write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two writers queue
on the busy timeout instead of failing when a read lock cannot be upgraded.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ca.store.model import StoreError
from config.database import make_engines as shared_make_engines
from config.database import utc_datetime_type

UtcDateTime = utc_datetime_type(StoreError)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class OrderRow(Base):
    __tablename__ = "orders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account: Mapped[str] = mapped_column(String(128), index=True)
    product: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(1024))
    emails_json: Mapped[str] = mapped_column(Text)
    validity: Mapped[str] = mapped_column(String(16))
    csr_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(32), index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    subject_changes_json: Mapped[str] = mapped_column(Text)
    transaction_id: Mapped[str | None] = mapped_column(String(80), index=True)
    sender_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    pend_token: Mapped[str | None] = mapped_column(String(128), unique=True)
    requested_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class StatusHistoryRow(Base):
    __tablename__ = "order_status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    note: Mapped[str | None] = mapped_column(Text)


class CertificateRow(Base):
    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True)
    subject: Mapped[str] = mapped_column(String(1024))
    issuer: Mapped[str] = mapped_column(String(1024))
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    not_after: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CertificateEmailRow(Base):
    __tablename__ = "certificate_emails"
    __table_args__ = (UniqueConstraint("certificate_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"))
    email: Mapped[str] = mapped_column(String(320), index=True)


class RevocationRow(Base):
    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), unique=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    reason_code: Mapped[int] = mapped_column(Integer)
    reason_name: Mapped[str] = mapped_column(String(32))
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime())
    invalidity_date: Mapped[datetime | None] = mapped_column(UtcDateTime())
    comment: Mapped[str | None] = mapped_column(Text)
    revoked_by: Mapped[str] = mapped_column(String(256))


class CommentRow(Base):
    __tablename__ = "order_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    author: Mapped[str] = mapped_column(String(256))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    text: Mapped[str] = mapped_column(Text)


class JobRow(Base):
    __tablename__ = "publication_jobs"
    __table_args__ = (Index("ix_publication_jobs_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    serial: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str] = mapped_column(String(320))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class NonceRow(Base):
    __tablename__ = "cmc_nonces"
    __table_args__ = (UniqueConstraint("transaction_id", "sender_nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(80))
    sender_nonce: Mapped[str] = mapped_column(String(256))  # hex
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(256))
    subject: Mapped[str | None] = mapped_column(String(256), index=True)
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))


class AuditHeadRow(Base):
    """One row (id 1): the last seq and hash appended; makes truncation at the end visible."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))


def default_dsn(ca_dir: str) -> str:
    """``sqlite:///<ca dir>/ca.db``."""
    return f"sqlite:///{ca_dir.rstrip('/')}/ca.db"


def make_engines(dsn: str) -> tuple[Engine, Engine]:
    """(read engine, write engine) sharing one pool; the write one begins IMMEDIATE on SQLite."""
    return shared_make_engines(dsn, StoreError)
