"""The SQL engine both stores use (the CA's orders and the gateway's certificates).

SQLite by default — WAL journal, foreign keys on, a busy timeout, and write transactions
that begin ``IMMEDIATE`` so concurrent writers queue instead of failing — or any DSN
SQLAlchemy knows (PostgreSQL for scale-out).  Datetimes are stored as naive UTC and handed
out timezone-aware, so the SQL stays portable.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.types import TypeDecorator

from config.redact import redact_url, scrub

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

View = TypeVar("View", bound="DataclassInstance")

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option that makes a SQLite transaction begin IMMEDIATE (takes the write lock).
IMMEDIATE = "cmcgate_immediate"


def view_of(view: type[View], row: object, **converted: object) -> View:
    """The frozen dataclass ``view`` of a store row: each field from the row's attribute of
    the same name, except those given in ``converted`` (enums, tuples, renamed columns)."""
    copied = {f.name: getattr(row, f.name) for f in fields(view) if f.name not in converted}
    return view(**copied, **converted)


def utc_datetime_type(error: type[Exception]) -> type[TypeDecorator[datetime]]:
    """A column type for aware UTC datetimes; a naive one raises ``error`` (a store's own)."""

    class UtcDateTime(TypeDecorator[datetime]):
        """Aware UTC datetimes in, aware UTC datetimes out; naive UTC in the column."""

        impl = DateTime
        cache_ok = True

        def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise error("naive datetime handed to the store: use timezone-aware UTC")
            return value.astimezone(UTC).replace(tzinfo=None)

        def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
            if value is None:
                return None
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    return UtcDateTime


def make_engines(dsn: str, error: type[Exception]) -> tuple[Engine, Engine]:
    """(read engine, write engine) sharing one pool; the write one begins IMMEDIATE on SQLite."""
    try:
        engine = create_engine(dsn, pool_pre_ping=not dsn.startswith("sqlite"))
    except (ArgumentError, NoSuchModuleError, ImportError) as ex:
        raise error(f"cannot use database DSN {redact_url(dsn)}: {scrub(str(ex), dsn)}") from ex
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine, engine.execution_options(**{IMMEDIATE: True})


def _configure_sqlite(engine: Engine) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own BEGIN is deferred)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
