"""Searches of the RA API over orders, certificates and publication jobs, by account set.

The REST API shows a user only the accounts they hold a grant for, so every search here takes
the set of accounts to look in (an empty set finds nothing). Results are paged (``limit``,
``offset``) with a stable order. ``find_orders``/``find_certificates`` of the store keep their
behaviour; these are the RA's own, richer queries (a separate module keeps orders.py under
its size limit).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from ca.store.base import StoreBase, certificate_view, job_view, order_view
from ca.store.certs import certificate_filters
from ca.store.db import CertificateRow, JobRow, OrderRow, utcnow
from ca.store.model import (
    CertificateStatus,
    CertificateView,
    JobStatus,
    JobView,
    OrderStatus,
    OrderView,
    StoreConflict,
    UnknownJob,
    normalise_email,
    normalise_serial,
)


@dataclass(frozen=True)
class Page:
    limit: int = 100
    offset: int = 0


class SearchMixin(StoreBase):
    def search_orders(
        self,
        accounts: Collection[str],
        *,
        email: str | None = None,
        status: OrderStatus | None = None,
        product: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        page: Page = Page(),
    ) -> list[OrderView]:
        """Orders of ``accounts``, newest first; ``email`` matches an address of the order."""
        query = select(OrderRow).where(OrderRow.account.in_(list(accounts)))
        if status is not None:
            query = query.where(OrderRow.status == OrderStatus(status).value)
        if product is not None:
            query = query.where(OrderRow.product == product)
        if created_from is not None:
            query = query.where(OrderRow.created_at >= created_from)
        if created_to is not None:
            query = query.where(OrderRow.created_at < created_to)
        if email is not None:
            # emails_json is a JSON list of the order's addresses: match the quoted address
            needle = '"' + normalise_email(email).replace('"', "") + '"'
            query = query.where(func.lower(OrderRow.emails_json).contains(needle, autoescape=True))
        query = query.order_by(OrderRow.created_at.desc(), OrderRow.id).limit(page.limit)
        with self.read_session() as session:
            rows = session.execute(query.offset(page.offset)).scalars().all()
            return [order_view(session, r) for r in rows]

    def search_certificates(
        self,
        accounts: Collection[str],
        *,
        email: str | None = None,
        status: CertificateStatus | None = None,
        serial: str | None = None,
        expiring_within: timedelta | None = None,
        page: Page = Page(),
        now: datetime | None = None,
    ) -> list[CertificateView]:
        """Certificates whose order belongs to ``accounts``, soonest expiry first."""
        at = now or utcnow()
        owned = select(OrderRow.id).where(OrderRow.account.in_(list(accounts)))
        query = select(CertificateRow).where(CertificateRow.order_id.in_(owned))
        query = certificate_filters(query, email, expiring_within, status, at)
        if serial is not None:
            query = query.where(CertificateRow.serial == normalise_serial(serial))
        query = query.order_by(CertificateRow.not_after, CertificateRow.id).limit(page.limit)
        with self.read_session() as session:
            rows = session.execute(query.offset(page.offset)).scalars().all()
            return [certificate_view(session, r, at) for r in rows]

    def search_jobs(
        self,
        accounts: Collection[str],
        *,
        status: JobStatus | None = None,
        serial: str | None = None,
        page: Page = Page(),
    ) -> list[JobView]:
        """Publication jobs of orders of ``accounts``, newest first."""
        owned = select(OrderRow.id).where(OrderRow.account.in_(list(accounts)))
        query = select(JobRow).where(JobRow.order_id.in_(owned))
        if status is not None:
            query = query.where(JobRow.status == JobStatus(status).value)
        if serial is not None:
            query = query.where(JobRow.serial == normalise_serial(serial))
        query = query.order_by(JobRow.id.desc()).limit(page.limit).offset(page.offset)
        with self.read_session() as session:
            return [job_view(r) for r in session.execute(query).scalars()]

    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> JobView:
        """A FAILED or RETRY job becomes PENDING and due now (the manual's job "retry")."""
        at = now or utcnow()
        with self.write_session() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise UnknownJob(f"no publication job {job_id}")
            if row.status not in (JobStatus.FAILED.value, JobStatus.RETRY.value):
                raise StoreConflict(
                    f"publication job {job_id} is {row.status}; only FAILED or RETRY jobs are "
                    "retried"
                )
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(status=JobStatus.PENDING.value, next_attempt_at=at, updated_at=at)
                .execution_options(synchronize_session=False)
            )
            session.refresh(row)
            return job_view(row)
