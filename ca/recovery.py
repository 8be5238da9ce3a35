"""Orders a stopped CA left half-way, brought to an end: at ``cmcgate ca serve`` start-up
(before the port opens) and by ``cmcgate ca recover``.

A CA killed during issuance (kill -9, power loss, OOM) leaves orders in the statuses it was
working in (:attr:`OrderStatus.in_progress`). Each is decided by what is in the store:

* no certificate stored (NEW ... ISSUE): nothing was issued that anyone could hold (a
  certificate is only handed out after it is stored), so the order goes FAILED with the
  reason ``interrupted at <status>``; the client sent no further request for it and gets a
  failure if it polls. Re-driving is not safe: an approved sponsor order's personal name is
  not kept, and the client's request has long timed out.
* a VALID certificate stored (ISSUE, POST_VALIDATION, FINALIZE_ISSUANCE): the issuance is
  finished as it would have been — post-issuance lint, LDAP publication jobs, ISSUED — and
  can be fetched with CMC getCert. A certificate that cannot be finished (its product is no
  longer in ca.yaml) is revoked as ``cessationOfOperation``, one that fails the lint as
  ``superseded``; the order goes FAILED.
* a certificate stored but revoked already (killed between the post-lint revocation and the
  failure): the order goes FAILED.

Finally no VALID certificate may belong to a FAILED order: any such is revoked
(``cessationOfOperation``). Every action is audited (``recover``, ``fail``, ``revoke``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from sqlalchemy import select

from ca.authority import CertificateAuthority, OrderRefused
from ca.store.audit import append_audit
from ca.store.base import order_view
from ca.store.db import CertificateRow, OrderRow, utcnow
from ca.store.model import CertificateStatus, OrderStatus, OrderView
from ca.store.orders import Store

log = logging.getLogger(__name__)
S = OrderStatus
ACTOR = "ca-recovery"
_IN_PROGRESS = sorted(s.value for s in OrderStatus if s.in_progress)


@dataclass(frozen=True)
class Recovered:
    """What recovery did with one order."""

    order_id: str
    was: OrderStatus
    now: OrderStatus
    action: str  # finished | failed | revoked | error
    detail: str
    serial: str | None = None

    def line(self) -> str:
        serial = f" serial {self.serial}" if self.serial else ""
        return f"{self.order_id} {self.was.value} -> {self.now.value} ({self.action}{serial}): " + (
            self.detail
        )


def stuck_orders(store: Store, *, updated_before: datetime | None = None) -> list[OrderView]:
    """Orders in an in-progress status, oldest first (``updated_before``: untouched since)."""
    query = select(OrderRow).where(OrderRow.status.in_(_IN_PROGRESS))
    if updated_before is not None:
        query = query.where(OrderRow.updated_at <= updated_before)
    with store.read_session() as session:
        rows = session.execute(query.order_by(OrderRow.created_at, OrderRow.id)).scalars()
        return [order_view(session, r) for r in rows]


def _valid_certificates_of_failed_orders(
    store: Store, updated_before: datetime
) -> list[tuple[str, str]]:
    """(serial, order id) of VALID certificates whose order is FAILED."""
    query = (
        select(CertificateRow.serial, OrderRow.id)
        .join(OrderRow, CertificateRow.order_id == OrderRow.id)
        .where(
            CertificateRow.status == CertificateStatus.VALID.value,
            OrderRow.status == S.FAILED.value,
            OrderRow.updated_at <= updated_before,
        )
    )
    with store.read_session() as session:
        return [(serial, order_id) for serial, order_id in session.execute(query)]


def recover(ca: CertificateAuthority, *, older_than: timedelta = timedelta(0)) -> list[Recovered]:
    """Bring every stuck order untouched for ``older_than`` to ISSUED or FAILED."""
    done: list[Recovered] = []
    cutoff = utcnow() - older_than
    for order in stuck_orders(ca.store, updated_before=cutoff):
        try:
            done.append(_recover_order(ca, order))
        except Exception as exc:  # noqa: BLE001 - one bad order must not stop the others
            log.exception("recovery of order %s failed", order.id)
            now = ca.store.get_order(order.id).status
            done.append(Recovered(order.id, order.status, now, "error", str(exc)))
    for serial, order_id in _valid_certificates_of_failed_orders(ca.store, cutoff):
        ca.revoke(serial, "cessationOfOperation", by=ACTOR, comment="its order had failed")
        done.append(
            Recovered(order_id, S.FAILED, S.FAILED, "revoked",
                      "a valid certificate of a failed order", serial)
        )  # fmt: skip
    for item in done:
        log.warning("recovered order %s", item.line())
    return done


def _recover_order(ca: CertificateAuthority, order: OrderView) -> Recovered:
    store = ca.store
    certs = store.find_certificates(order_id=order.id)
    if not certs:
        reason = (
            f"interrupted at {order.status.value}: the CA stopped before a certificate was issued"
        )
        store.fail(order.id, reason, actor=ACTOR)
        return Recovered(order.id, order.status, S.FAILED, "failed", reason)
    cert = certs[0]
    if cert.status is CertificateStatus.REVOKED:
        reason = f"interrupted at {order.status.value}: the certificate had been revoked"
        store.fail(order.id, reason, actor=ACTOR)
        return Recovered(order.id, order.status, S.FAILED, "failed", reason, cert.serial)
    product = ca.settings.product(order.product)
    if product is None:
        reason = (
            f"interrupted at {order.status.value} and cannot be finished: product "
            f"{order.product!r} is no longer in ca.yaml; the certificate was revoked"
        )
        ca.revoke(cert.serial, "cessationOfOperation", by=ACTOR, comment=reason)
        store.fail(order.id, reason, actor=ACTOR)
        return Recovered(order.id, order.status, S.FAILED, "revoked", reason, cert.serial)
    certificate = x509.load_der_x509_certificate(cert.der)
    if order.status is S.FINALIZE_ISSUANCE:  # finish_issuance commits this with ISSUED
        done = store.transition(order.id, S.ISSUED, "recovered", actor=ACTOR)
    else:
        try:
            done = ca.complete_issuance(order, certificate, product, actor=ACTOR)
        except OrderRefused as exc:
            return Recovered(order.id, order.status, S.FAILED, "revoked", str(exc), cert.serial)
    details = {"from": order.status.value, "serial": cert.serial}
    append_audit(store, "recover", ACTOR, order.id, details)
    return Recovered(
        order.id, order.status, done.status, "finished",
        "the stored certificate was linted, queued for publication and issued", cert.serial,
    )  # fmt: skip


__all__ = ["Recovered", "recover", "stuck_orders"]
