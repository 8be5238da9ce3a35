"""Which certificate an order renews (RA manual 3.5.4.2: renewal info, the list of
preceding certificates).

One row per renewal order: the serial of the certificate it replaces. Following the rows back
from a certificate's order gives its predecessors, newest first.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import StoreBase, check_text
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import normalise_serial


class RenewalRow(Base):
    __tablename__ = "ra_renewals"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), primary_key=True)
    predecessor_serial: Mapped[str] = mapped_column(String(64), index=True)
    requested_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RenewalsMixin(StoreBase):
    def record_renewal(
        self,
        order_id: str,
        predecessor_serial: int | str,
        *,
        requested_by: str,
        now: datetime | None = None,
    ) -> None:
        """``order_id`` renews the certificate ``predecessor_serial``; audited as ``renewal``."""
        check_text("requested by", requested_by, 256)
        serial = normalise_serial(predecessor_serial)
        at = now or utcnow()
        with self.audit_transaction() as session:
            session.add(
                RenewalRow(
                    order_id=order_id, predecessor_serial=serial, requested_by=requested_by,
                    created_at=at,
                )
            )  # fmt: skip
            session.flush()
            details = {"predecessor": serial}
            self._audit(session, "renewal", requested_by, order_id, details, at)

    def renewed_serial(self, order_id: str) -> str | None:
        """The serial the order renews, None for a first order."""
        with self.read_session() as session:
            row = session.get(RenewalRow, order_id)
            return None if row is None else row.predecessor_serial

    def renewal_orders(self, predecessor_serial: int | str) -> list[str]:
        """Orders that renew this certificate, oldest first."""
        serial = normalise_serial(predecessor_serial)
        with self.read_session() as session:
            return list(
                session.execute(
                    select(RenewalRow.order_id)
                    .where(RenewalRow.predecessor_serial == serial)
                    .order_by(RenewalRow.created_at)
                ).scalars()
            )


__all__ = ["RenewalRow", "RenewalsMixin"]
