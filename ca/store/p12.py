"""Server-generated PKCS#12 files waiting for pick-up (RA manual 3.4.3, "PKCS#12" products).

One row per order whose key the CA generated: the PKCS#12 as issued (already encrypted with
the subscriber's PIN: the private key is never stored in the clear), the SHA-256 of the
one-time pick-up token (the token itself is only in the mailed link), and when it was made,
picked up or purged. Picking it up or purging it deletes the bytes; the row stays as a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import StoreBase, check_text
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import StoreError


class UnknownPickup(StoreError):
    """No PKCS#12 for this pick-up token (never issued, or a wrong token)."""


class PickupGone(StoreError):
    """The PKCS#12 was picked up already or purged: its bytes no longer exist."""


class Pkcs12Row(Base):
    __tablename__ = "ra_pkcs12"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    p12: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    picked_up_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class Pkcs12View:
    """A stored PKCS#12 without its bytes (what status pages and the REST API show)."""

    order_id: str
    email: str
    created_at: datetime
    picked_up_at: datetime | None
    purged_at: datetime | None

    @property
    def available(self) -> bool:
        return self.picked_up_at is None and self.purged_at is None


def _view(row: Pkcs12Row) -> Pkcs12View:
    return Pkcs12View(row.order_id, row.email, row.created_at, row.picked_up_at, row.purged_at)


class Pkcs12Mixin(StoreBase):
    def store_pkcs12(
        self,
        order_id: str,
        token_sha256: str,
        email: str,
        p12: bytes,
        *,
        actor: str = "ca",
        now: datetime | None = None,
    ) -> Pkcs12View:
        """Keep an order's PIN-encrypted PKCS#12 until pick-up; audited as ``p12``."""
        check_text("email", email, 320)
        if len(token_sha256) != 64 or not p12:
            raise StoreError("a PKCS#12 needs its bytes and the SHA-256 (hex) of its token")
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = Pkcs12Row(
                order_id=order_id, token_sha256=token_sha256, email=email, p12=p12,
                created_at=at, picked_up_at=None, purged_at=None,
            )  # fmt: skip
            session.add(row)
            session.flush()
            self._audit(session, "p12", actor, order_id, {"action": "stored", "email": email}, at)
            return _view(row)

    def take_pkcs12(
        self,
        token_sha256: str,
        *,
        created_after: datetime | None = None,
        now: datetime | None = None,
    ) -> bytes:
        """The PKCS#12 for a token, once: its bytes are deleted in the same transaction.

        ``created_after``: an older file is past its retention (PickupGone, even before the
        purge job has deleted it)."""
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = session.execute(
                select(Pkcs12Row).where(Pkcs12Row.token_sha256 == token_sha256).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise UnknownPickup("no PKCS#12 for this link")
            if row.p12 is None:
                what = "picked up" if row.picked_up_at is not None else "purged"
                raise PickupGone(f"the PKCS#12 of order {row.order_id} was {what} already")
            if created_after is not None and row.created_at < created_after:
                raise PickupGone(f"the PKCS#12 of order {row.order_id} has expired")
            p12 = row.p12
            row.p12 = None
            row.picked_up_at = at
            self._audit(session, "p12", "subscriber", row.order_id, {"action": "picked up"}, at)
            return p12

    def purge_pkcs12(
        self, created_before: datetime, *, only: str | None = None, now: datetime | None = None
    ) -> int:
        """Delete the bytes of PKCS#12 files not picked up and made before ``created_before``
        (``only``: of this order alone)."""
        at = now or utcnow()
        with self.audit_transaction() as session:
            query = select(Pkcs12Row.order_id).where(
                Pkcs12Row.p12.is_not(None), Pkcs12Row.created_at <= created_before
            )
            if only is not None:
                query = query.where(Pkcs12Row.order_id == only)
            orders = list(session.execute(query).scalars())
            if not orders:
                return 0
            session.execute(
                update(Pkcs12Row)
                .where(Pkcs12Row.order_id.in_(orders))
                .values(p12=None, purged_at=at)
                .execution_options(synchronize_session=False)
            )
            for order_id in orders:
                self._audit(session, "p12", "ca", order_id, {"action": "purged"}, at)
            return len(orders)

    def pkcs12_of(self, order_id: str) -> Pkcs12View | None:
        with self.read_session() as session:
            row = session.execute(
                select(Pkcs12Row).where(Pkcs12Row.order_id == order_id)
            ).scalar_one_or_none()
            return None if row is None else _view(row)

    def pkcs12_bytes_of(self, order_id: str) -> bytes | None:
        """The stored (PIN-encrypted) bytes, without taking them: for checks and tests."""
        with self.read_session() as session:
            return session.execute(
                select(Pkcs12Row.p12).where(Pkcs12Row.order_id == order_id)
            ).scalar_one_or_none()


__all__ = ["PickupGone", "Pkcs12Mixin", "Pkcs12Row", "Pkcs12View", "UnknownPickup"]
