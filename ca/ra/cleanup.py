"""Clean-up of lost orders (RA manual, status UNKNOWN: "undefined state, the order is lost and
is cleaned up by the scheduler optionally revoking the certificate if present and valid").

While the CA runs, an order makes progress within seconds; one left in an in-progress status
(NEW ... FINALIZE_ISSUANCE, :attr:`OrderStatus.in_progress`) for :data:`STUCK_AFTER` (15
minutes) was lost by the thread working on it, unless a thread of this process is still
working on it (:mod:`ca.inflight`: an HSM may block a signature for longer). The
scheduler (every :data:`INTERVAL_MINUTES`) marks it UNKNOWN with a note, then settles it:

* a VALID certificate stored for it: the certificate is revoked (``cessationOfOperation``,
  the CRL rewritten) and the order goes REVOKED, as the manual says. Unlike start-up
  recovery (:mod:`ca.recovery`), which finishes such an issuance because nobody could have
  been waiting on it, a running CA's client has long been told something else;
* otherwise the order goes FAILED (``lost at <status>``).

UNKNOWN orders left by an interrupted run are settled the same way. A renewal that waits in
PENDING_CSR_RENEWAL for :data:`RENEWAL_CSR_DAYS` (30) days goes FAILED ("no renewal CSR
received"); the old certificate is untouched. Start-up recovery keeps its own rules; this
module reuses its query (:func:`ca.recovery.stuck_orders`) and result type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ca.inflight import in_flight
from ca.periodic import add_periodic
from ca.recovery import Recovered, stuck_orders
from ca.store.audit import append_audit
from ca.store.base import order_view
from ca.store.db import OrderRow
from ca.store.model import CertificateStatus, OrderStatus, OrderView

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority

log = logging.getLogger(__name__)
S = OrderStatus
ACTOR = "ca-cleanup"
STUCK_AFTER = timedelta(minutes=15)
RENEWAL_CSR_DAYS = 30
INTERVAL_MINUTES = 5


def cleanup_lost_orders(
    ca: CertificateAuthority,
    *,
    now: datetime | None = None,
    stuck_after: timedelta = STUCK_AFTER,
    renewal_csr_days: int = RENEWAL_CSR_DAYS,
) -> list[Recovered]:
    """One clean-up run: lost orders to UNKNOWN and on to REVOKED or FAILED, overdue
    renewals to FAILED. What was done, one :class:`Recovered` per order."""
    at = now or ca.clock()
    done: list[Recovered] = []
    lost = stuck_orders(ca.store, updated_before=at - stuck_after)
    for order in lost + _orders_in(ca, S.UNKNOWN, at):
        if in_flight(order.id) or _moved(ca, order):
            continue  # alive (a slow HSM), or it moved on since the query
        try:
            done.append(_settle(ca, order))
        except Exception as exc:  # noqa: BLE001 - one bad order must not stop the others
            log.exception("clean-up of order %s failed", order.id)
            now_status = ca.store.get_order(order.id).status
            done.append(Recovered(order.id, order.status, now_status, "error", str(exc)))
    cutoff = at - timedelta(days=renewal_csr_days)
    for order in _orders_in(ca, S.PENDING_CSR_RENEWAL, cutoff):
        reason = f"no renewal CSR received within {renewal_csr_days} days"
        ca.store.fail(order.id, reason, actor=ACTOR)
        done.append(Recovered(order.id, order.status, S.FAILED, "failed", reason))
    for item in done:
        log.warning("clean-up: %s", item.line())
    return done


def _orders_in(ca: CertificateAuthority, status: OrderStatus, before: datetime) -> list[OrderView]:
    query = (
        select(OrderRow)
        .where(OrderRow.status == status.value, OrderRow.updated_at <= before)
        .order_by(OrderRow.created_at, OrderRow.id)
    )
    with ca.store.read_session() as session:
        return [order_view(session, r) for r in session.execute(query).scalars()]


def _moved(ca: CertificateAuthority, order: OrderView) -> bool:
    now = ca.store.get_order(order.id)
    return now.status is not order.status or now.updated_at != order.updated_at


def _settle(ca: CertificateAuthority, order: OrderView) -> Recovered:
    store = ca.store
    was = order.status
    if was is not S.UNKNOWN:
        note = f"lost: no progress in {was.value} since {order.updated_at:%Y-%m-%d %H:%M:%S} UTC"
        store.transition(order.id, S.UNKNOWN, note, actor=ACTOR)
        append_audit(store, "cleanup", ACTOR, order.id, {"from": was.value, "to": "UNKNOWN"})
    valid = [
        c for c in store.find_certificates(order_id=order.id)
        if c.status is CertificateStatus.VALID
    ]  # fmt: skip
    if valid:
        serial = valid[0].serial
        ca.revoke(serial, "cessationOfOperation", by=ACTOR, comment="its order was lost")
        store.transition(order.id, S.REVOKED, "lost order: certificate revoked", actor=ACTOR)
        detail = "lost order: its valid certificate was revoked (cessationOfOperation)"
        return Recovered(order.id, was, S.REVOKED, "revoked", detail, serial)
    reason = f"lost at {was.value}: the order made no progress and was cleaned up"
    store.fail(order.id, reason, actor=ACTOR)
    return Recovered(order.id, was, S.FAILED, "failed", reason, order.certificate_serial)


def schedule_cleanup(scheduler: Any, get_ca: Callable[[], CertificateAuthority]) -> None:
    """Run the clean-up every few minutes in ``cmcgate ca serve``."""

    add_periodic(scheduler, "ra-cleanup", "clean-up of lost orders",
                 lambda: cleanup_lost_orders(get_ca()), minutes=INTERVAL_MINUTES)  # fmt: skip


__all__ = ["RENEWAL_CSR_DAYS", "STUCK_AFTER", "cleanup_lost_orders", "schedule_cleanup"]
