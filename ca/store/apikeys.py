"""API users, their grants on accounts and their API keys (SwissSign RA manual 4.1-4.3, 3.8.3).

The manual's "API user" of type SERVICE holds permissions per *client*; a client is what
ca.yaml calls an account. A key is 64 random characters shown once; only its SHA-256 is kept
(with ~381 bits of entropy a plain hash is enough, no slow KDF needed) and compared in constant
time. Rolling a key marks the previous one ``superseded_at``: it stays usable for the
rollover period (``ra.api_key_rollover_days``), a deleted key (``deleted_at``) is refused at once.
Rows are never removed, so the audit log's key ids always resolve.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ca.store.base import StoreBase, check_text
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import StoreConflict, StoreError

#: The permissions a grant may carry: the issue's four plus the manual's publication,
#: metadata/comment and domain pre-validation rights, kept separate.
PERMISSIONS = ("read", "issue", "revoke", "approve", "publish", "comment", "domains")


class UnknownApiUser(StoreError):
    """No API user with this name."""

    status = 404


class ApiUserRow(Base):
    __tablename__ = "api_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiGrantRow(Base):
    __tablename__ = "api_grants"
    __table_args__ = (UniqueConstraint("user_id", "account"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("api_users.id"), index=True)
    account: Mapped[str] = mapped_column(String(128))
    permissions: Mapped[str] = mapped_column(String(256))  # comma-separated, sorted


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("api_users.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class ApiKeyView:
    id: str
    user: str
    key_hash: str
    created_at: datetime
    superseded_at: datetime | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class ApiUserView:
    name: str
    type: str
    created_at: datetime
    disabled: bool
    #: (account, permissions) pairs, sorted by account
    grants: tuple[tuple[str, tuple[str, ...]], ...]
    keys: tuple[ApiKeyView, ...]

    def permissions(self) -> dict[str, frozenset[str]]:
        return {account: frozenset(perms) for account, perms in self.grants}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated permission names; StoreError for an unknown one."""
    if isinstance(permissions, str):
        permissions = [p for p in permissions.split(",") if p.strip()]
    out = set()
    for perm in permissions:
        name = str(perm).strip().lower()
        if name not in PERMISSIONS:
            raise StoreError(f"unknown permission {perm!r}: use {', '.join(PERMISSIONS)}")
        out.add(name)
    return tuple(sorted(out))


class ApiKeysMixin(StoreBase):
    def add_api_user(
        self,
        name: str,
        grants: Mapping[str, Iterable[str]],
        *,
        by: str,
        now: datetime | None = None,
    ) -> ApiUserView:
        """A SERVICE user with ``grants`` (account -> permissions); audited as ``api_key``."""
        check_text("API user name", name, 128)
        checked = {_account(a): check_permissions(p) for a, p in grants.items()}
        at = now or utcnow()
        with self.audit_transaction() as session:
            if session.execute(select(ApiUserRow.id).where(ApiUserRow.name == name)).first():
                raise StoreConflict(f"API user {name} exists already")
            row = ApiUserRow(name=name, type="SERVICE", created_at=at, disabled=False)
            session.add(row)
            session.flush()
            for account, perms in checked.items():
                session.add(_grant_row(row.id, account, perms))
            details = {"action": "user added", "grants": {a: list(p) for a, p in checked.items()}}
            self._audit(session, "api_key", by, name, details, at)
            session.flush()
            return _user_view(session, row)

    def set_api_grant(
        self,
        name: str,
        account: str,
        permissions: Iterable[str],
        *,
        by: str,
        now: datetime | None = None,
    ) -> ApiUserView:
        """Replace the user's permissions on ``account`` (none: the grant is removed)."""
        perms = check_permissions(permissions)
        account = _account(account)
        at = now or utcnow()
        with self.audit_transaction() as session:
            user = _user_row(session, name)
            grant = session.execute(
                select(ApiGrantRow).where(
                    ApiGrantRow.user_id == user.id, ApiGrantRow.account == account
                )
            ).scalar_one_or_none()
            if grant is not None and not perms:
                session.delete(grant)
            elif grant is not None:
                grant.permissions = ",".join(perms)
            elif perms:
                session.add(_grant_row(user.id, account, perms))
            details = {"action": "grant", "account": account, "permissions": list(perms)}
            self._audit(session, "api_key", by, name, details, at)
            session.flush()
            return _user_view(session, user)

    def add_api_key(
        self, name: str, hashed: str, *, roll: bool, by: str, now: datetime | None = None
    ) -> ApiKeyView:
        """Record a new key (by its hash); ``roll`` marks the user's current keys superseded."""
        at = now or utcnow()
        key_id = f"key-{uuid.uuid4().hex[:16]}"
        with self.audit_transaction() as session:
            user = _user_row(session, name)
            current = session.execute(
                select(ApiKeyRow).where(
                    ApiKeyRow.user_id == user.id,
                    ApiKeyRow.deleted_at.is_(None),
                    ApiKeyRow.superseded_at.is_(None),
                )
            ).scalars()
            superseded = []
            for old in current:
                if roll:
                    old.superseded_at = at
                    superseded.append(old.id)
            row = ApiKeyRow(id=key_id, user_id=user.id, key_hash=hashed, created_at=at)
            session.add(row)
            details = {"action": "key rolled" if roll else "key created", "key": key_id,
                       "superseded": superseded}  # fmt: skip
            self._audit(session, "api_key", by, name, details, at)
            session.flush()
            return _key_view(row, name)

    def delete_api_key(
        self, name: str, key_id: str, *, by: str, now: datetime | None = None
    ) -> ApiKeyView:
        at = now or utcnow()
        with self.audit_transaction() as session:
            user = _user_row(session, name)
            row = session.get(ApiKeyRow, key_id, with_for_update=True)
            if row is None or row.user_id != user.id:
                raise UnknownApiUser(f"API user {name} has no key {key_id}")
            if row.deleted_at is None:
                row.deleted_at = at
            self._audit(session, "api_key", by, name, {"action": "key deleted", "key": key_id}, at)
            session.flush()
            return _key_view(row, name)

    def set_api_user_disabled(
        self, name: str, disabled: bool, *, by: str, now: datetime | None = None
    ) -> ApiUserView:
        """A disabled user gets no JWT, and the JWTs they hold are refused at once (the
        manual's user deactivation); enabling them again revives their valid keys."""
        at = now or utcnow()
        with self.audit_transaction() as session:
            user = _user_row(session, name)
            user.disabled = disabled
            action = "user disabled" if disabled else "user enabled"
            self._audit(session, "api_key", by, name, {"action": action}, at)
            session.flush()
            return _user_view(session, user)

    def get_api_user(self, name: str) -> ApiUserView:
        with self.read_session() as session:
            return _user_view(session, _user_row(session, name))

    def api_users(self) -> list[ApiUserView]:
        with self.read_session() as session:
            rows = session.execute(select(ApiUserRow).order_by(ApiUserRow.name)).scalars().all()
            return [_user_view(session, r) for r in rows]

    def get_api_key(self, key_id: str) -> ApiKeyView | None:
        with self.read_session() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                return None
            user = session.get(ApiUserRow, row.user_id)
            return _key_view(row, user.name if user else "?")


def _grant_row(user_id: int, account: str, perms: tuple[str, ...]) -> ApiGrantRow:
    return ApiGrantRow(user_id=user_id, account=account, permissions=",".join(perms))


def _account(account: str) -> str:
    check_text("account", account, 128)
    return account.strip()


def _user_row(session: Session, name: str) -> ApiUserRow:
    row = session.execute(select(ApiUserRow).where(ApiUserRow.name == name)).scalar_one_or_none()
    if row is None:
        raise UnknownApiUser(f"no API user {name!r}")
    return row


def _key_view(row: ApiKeyRow, user: str) -> ApiKeyView:
    return ApiKeyView(row.id, user, row.key_hash, row.created_at, row.superseded_at, row.deleted_at)


def _user_view(session: Session, row: ApiUserRow) -> ApiUserView:
    grants = session.execute(
        select(ApiGrantRow).where(ApiGrantRow.user_id == row.id).order_by(ApiGrantRow.account)
    ).scalars()
    keys = session.execute(
        select(ApiKeyRow).where(ApiKeyRow.user_id == row.id).order_by(ApiKeyRow.created_at)
    ).scalars()
    return ApiUserView(
        name=row.name,
        type=row.type,
        created_at=row.created_at,
        disabled=bool(row.disabled),
        grants=tuple((g.account, tuple(p for p in g.permissions.split(",") if p)) for g in grants),
        keys=tuple(_key_view(k, row.name) for k in keys),
    )
