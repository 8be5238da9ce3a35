"""Domain pre-validation records of :class:`ca.store.orders.Store` (SwissSign RA manual 3.7).

One row per (account, domain): the random token the account publishes as a TXT record at
``record_name``, and the state the checks leave (:class:`DomainStatus`). A domain is usable
for issuance while it is VALIDATED and ``valid_until`` lies ahead (:meth:`domain_validated`);
the RA service (:mod:`ca.ra.domains`) decides the transitions, this module only stores them,
each change audited (event ``domain``) in the same transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ca.store.base import StoreBase
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import StoreError
from config.database import view_of

AUDIT_EVENT = "domain"


class DomainStatus(enum.StrEnum):
    #: token issued, not (yet) found in DNS
    PENDING = "PENDING"
    #: token found; issuance allowed until ``valid_until``
    VALIDATED = "VALIDATED"
    #: the token or the validation lapsed: a new token is needed
    EXPIRED = "EXPIRED"


class UnknownDomain(StoreError):
    """No such domain requested by this account."""

    status = 404


class DomainRow(Base):
    __tablename__ = "ra_domains"
    __table_args__ = (
        UniqueConstraint("account", "domain"),
        Index("ix_ra_domains_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(128), index=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    status: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(128))
    record_name: Mapped[str] = mapped_column(String(320))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    token_expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    validated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class DomainView:
    account: str
    domain: str
    status: DomainStatus
    token: str
    record_name: str
    requested_at: datetime
    token_expires_at: datetime
    validated_at: datetime | None
    valid_until: datetime | None
    last_checked_at: datetime | None
    last_error: str | None


def _view(row: DomainRow) -> DomainView:
    return view_of(DomainView, row, status=DomainStatus(row.status))


def parent_domains(domain: str) -> tuple[str, ...]:
    """``a.b.example.org`` → itself, ``b.example.org``, ``example.org``, ``org``."""
    labels = domain.strip(".").lower().split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels)))


class DomainsMixin(StoreBase):
    def request_domain(
        self,
        account: str,
        domain: str,
        *,
        token: str,
        record_name: str,
        token_expires_at: datetime,
        by: str,
        now: datetime | None = None,
    ) -> DomainView:
        """Record a domain request, or give a requested domain a new token (the manual's
        'Generate new validation token'). A VALIDATED domain stays validated until its
        ``valid_until``; a PENDING or EXPIRED one is PENDING with the new token."""
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = _row(session, account, domain, lock=True)
            action = "requested" if row is None else "new_token"
            if row is None:
                row = DomainRow(account=account, domain=domain, validated_at=None,
                                valid_until=None, last_checked_at=None)  # fmt: skip
                session.add(row)
            if row.status != DomainStatus.VALIDATED or _lapsed(row, at):
                row.status = DomainStatus.PENDING.value
            row.token, row.record_name = token, record_name
            row.requested_at, row.token_expires_at = at, token_expires_at
            row.last_error, row.updated_at = None, at
            session.flush()
            details = {"account": account, "action": action, "record": record_name}
            self._audit(session, AUDIT_EVENT, by, domain, details, at)
            return _view(row)

    def update_domain(
        self,
        account: str,
        domain: str,
        *,
        by: str,
        action: str,
        now: datetime | None = None,
        **changes: Any,
    ) -> DomainView:
        """Set the given columns (status, validated_at, valid_until, last_checked_at,
        last_error) of a domain and audit ``action`` with them."""
        at = now or utcnow()
        allowed = {"status", "validated_at", "valid_until", "last_checked_at", "last_error"}
        if not set(changes) <= allowed:
            raise StoreError(f"cannot change {sorted(set(changes) - allowed)} of a domain")
        with self.audit_transaction() as session:
            row = _row(session, account, domain, lock=True)
            if row is None:
                raise UnknownDomain(f"account {account} has not requested domain {domain}")
            for name, value in changes.items():
                setattr(row, name, value.value if isinstance(value, enum.Enum) else value)
            row.updated_at = at
            session.flush()
            details = {"account": account, "action": action, "status": row.status}
            if row.last_error and "last_error" in changes:
                details["error"] = row.last_error[:500]
            if row.valid_until is not None and "valid_until" in changes:
                details["valid_until"] = row.valid_until.isoformat()
            self._audit(session, AUDIT_EVENT, by, domain, details, at)
            return _view(row)

    def get_domain(self, account: str, domain: str) -> DomainView:
        with self.read_session() as session:
            row = _row(session, account, domain)
            if row is None:
                raise UnknownDomain(f"account {account} has not requested domain {domain}")
            return _view(row)

    def find_domains(
        self, *, account: str | None = None, status: DomainStatus | str | None = None
    ) -> list[DomainView]:
        query = select(DomainRow).order_by(DomainRow.account, DomainRow.domain)
        if account is not None:
            query = query.where(DomainRow.account == account)
        if status is not None:
            try:
                query = query.where(DomainRow.status == DomainStatus(str(status).upper()).value)
            except ValueError:
                raise StoreError(f"unknown domain status {status!r}") from None
        with self.read_session() as session:
            return [_view(r) for r in session.execute(query).scalars()]

    def delete_domain(
        self, account: str, domain: str, *, by: str, now: datetime | None = None
    ) -> DomainView:
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = _row(session, account, domain, lock=True)
            if row is None:
                raise UnknownDomain(f"account {account} has not requested domain {domain}")
            view = _view(row)
            session.delete(row)
            self._audit(session, AUDIT_EVENT, by, domain,
                        {"account": account, "action": "deleted"}, at)  # fmt: skip
            return view

    def domain_validated(
        self, account: str, email_domain: str, now: datetime | None = None
    ) -> bool:
        """The domain or a parent of it is VALIDATED for ``account`` and has not lapsed."""
        at = now or utcnow()
        query = select(DomainRow.id).where(
            DomainRow.account == account,
            DomainRow.domain.in_(parent_domains(email_domain)),
            DomainRow.status == DomainStatus.VALIDATED.value,
            DomainRow.valid_until > at,
        )
        with self.read_session() as session:
            return session.execute(query.limit(1)).first() is not None


def _row(session: Session, account: str, domain: str, *, lock: bool = False) -> DomainRow | None:
    query = select(DomainRow).where(DomainRow.account == account, DomainRow.domain == domain)
    if lock:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def _lapsed(row: DomainRow, at: datetime) -> bool:
    return row.valid_until is None or row.valid_until <= at
