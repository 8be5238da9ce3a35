"""The gateway store's database: engine set-up and ORM tables (SQLAlchemy 2, typed).

SQL stays portable between SQLite (the default, ``sqlite:///<dir>/gateway.db``) and
PostgreSQL: DER in LargeBinary, every String has a length, datetimes are stored as naive UTC and
handed out timezone-aware (:class:`UtcDateTime`). SQLite connections get WAL, foreign keys and
a busy timeout; write transactions on SQLite begin ``IMMEDIATE`` so that two writers (the SMTP
front harvesting certificates, an administrator importing one) queue on the busy timeout
instead of failing when a read lock cannot be upgraded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from config.closing import Closing
from config.database import make_engines as shared_make_engines
from config.database import utc_datetime_type
from gateway.certs.models import StoreError

UtcDateTime = utc_datetime_type(StoreError)


class Base(DeclarativeBase):
    pass


class CertificateRow(Base):
    __tablename__ = "gw_certificates"
    __table_args__ = (UniqueConstraint("issuer_hash", "serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    serial: Mapped[str] = mapped_column(String(64), index=True)
    issuer: Mapped[str] = mapped_column(String(2048))
    issuer_hash: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(2048))
    source: Mapped[str] = mapped_column(String(16), index=True)
    not_before: Mapped[datetime] = mapped_column(UtcDateTime())
    not_after: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    key_algorithm: Mapped[str] = mapped_column(String(16))
    can_sign: Mapped[bool] = mapped_column(Boolean)
    can_encrypt: Mapped[bool] = mapped_column(Boolean)
    revocation: Mapped[str] = mapped_column(String(16))
    revocation_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    key_label: Mapped[str | None] = mapped_column(String(200))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    emails: Mapped[list[CertificateEmailRow]] = relationship(
        back_populates="certificate",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
        order_by="CertificateEmailRow.email",
    )


class CertificateEmailRow(Base):
    __tablename__ = "gw_certificate_emails"
    __table_args__ = (UniqueConstraint("certificate_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[int] = mapped_column(
        ForeignKey("gw_certificates.id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320), index=True)

    certificate: Mapped[CertificateRow] = relationship(back_populates="emails")


class ChainCertificateRow(Base):
    """CA certificates that came with imported leaves: sent along when signing."""

    __tablename__ = "gw_chain_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(2048))
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    issuer_hash: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[datetime] = mapped_column(UtcDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime())


class MissingRecipientRow(Base):
    """Negative cache: no certificate could be found for ``email`` until ``until``."""

    __tablename__ = "gw_missing_recipients"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    until: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


def make_engines(dsn: str) -> tuple[Engine, Engine]:
    """(read engine, write engine) sharing one pool; the write one begins IMMEDIATE on SQLite."""
    return shared_make_engines(dsn, StoreError)


def default_dsn(directory: str) -> str:
    """``sqlite:///<directory>/gateway.db``."""
    return f"sqlite:///{directory.rstrip('/')}/gateway.db"


def aware_now(at: datetime | None) -> datetime:
    """``at`` (which must be timezone-aware), or now."""
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise StoreError("naive datetime handed to the store: use timezone-aware UTC")
    return at


class SessionScope(Closing):
    """Engines and transactions shared by the store's parts; database errors -> StoreError.

    ``IntegrityError`` passes through untranslated so that callers can retry a lost race.
    """

    def __init__(self, read_engine: Engine, write_engine: Engine) -> None:
        self._read = read_engine
        self._write = write_engine

    def close(self) -> None:
        self._read.dispose()

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        engine = self._write if write else self._read
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as ex:
            raise StoreError(f"gateway store: {getattr(ex, 'orig', None) or ex}") from ex
