"""LDAP publication jobs of :class:`ca.store.orders.Store` (publish on issue, unpublish on revoke).

A job is WAITING (created, not yet to run, e.g. until its order is ISSUED), PENDING (due at
``next_attempt_at``), PROCESSING (claimed by a worker), SUCCESS, RETRY (failed, due again after
an exponential back-off) or FAILED (after ``max_attempts``).

Claiming is atomic without SQLite-only SQL: candidate rows are selected (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL) and each is taken by ``UPDATE ... WHERE id = ? AND status IN (PENDING,
RETRY)``; only a row the UPDATE changed (rowcount 1) is handed out, so two workers never get the
same job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from ca.store.base import StoreBase, check_text, job_view
from ca.store.db import JobRow, utcnow
from ca.store.model import (
    JobKind,
    JobStatus,
    JobView,
    StoreError,
    UnknownJob,
    normalise_email,
    normalise_serial,
)

DEFAULT_BACKOFF = timedelta(minutes=1)
DEFAULT_MAX_BACKOFF = timedelta(hours=6)
DEFAULT_MAX_ATTEMPTS = 8
_DUE = (JobStatus.PENDING.value, JobStatus.RETRY.value)


def retry_delay(attempts: int, backoff: timedelta, max_backoff: timedelta) -> timedelta:
    """``backoff * 2**(attempts-1)``, capped at ``max_backoff`` (attempts counts from 1)."""
    exponent = max(0, attempts - 1)
    if exponent > 40:
        return max_backoff
    return min(max_backoff, backoff * (2**exponent))


def new_job_row(
    kind: JobKind | str,
    serial: int | str,
    email: str,
    order_id: str | None,
    waiting: bool,
    at: datetime,
) -> JobRow:
    """A job row (not yet added to a session), PENDING and due ``at`` or WAITING."""
    try:
        job_kind = JobKind(str(kind).upper())
    except ValueError:
        raise StoreError(f"unknown job kind {kind!r}: use PUBLISH or UNPUBLISH") from None
    check_text("email", email, 320)
    status = JobStatus.WAITING if waiting else JobStatus.PENDING
    return JobRow(
        kind=job_kind.value,
        serial=normalise_serial(serial),
        email=normalise_email(email),
        order_id=order_id,
        status=status.value,
        attempts=0,
        next_attempt_at=at,
        last_error=None,
        created_at=at,
        updated_at=at,
    )


class JobsMixin(StoreBase):
    def enqueue_job(
        self,
        kind: JobKind | str,
        serial: int | str,
        email: str,
        *,
        order_id: str | None = None,
        waiting: bool = False,
        now: datetime | None = None,
    ) -> JobView:
        """A new job, PENDING and due now, or WAITING until :meth:`release_jobs`."""
        row = new_job_row(kind, serial, email, order_id, waiting, now or utcnow())
        with self.write_session() as session:
            session.add(row)
            session.flush()
            return job_view(row)

    def release_jobs(self, order_id: str, *, now: datetime | None = None) -> int:
        """WAITING jobs of an order become PENDING, due now; returns how many."""
        at = now or utcnow()
        with self.write_session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.order_id == order_id, JobRow.status == JobStatus.WAITING.value)
                .values(status=JobStatus.PENDING.value, next_attempt_at=at, updated_at=at)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def claim_due_jobs(self, now: datetime | None = None, limit: int = 10) -> list[JobView]:
        """Take up to ``limit`` due jobs (PENDING/RETRY, next_attempt_at <= now) for this worker.

        Each claimed job is PROCESSING with ``attempts`` incremented.
        """
        at = now or utcnow()
        if limit <= 0:
            return []
        with self.write_session() as session:
            candidates = (
                session.execute(
                    select(JobRow.id)
                    .where(JobRow.status.in_(_DUE), JobRow.next_attempt_at <= at)
                    .order_by(JobRow.next_attempt_at, JobRow.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            claimed: list[int] = []
            for job_id in candidates:
                result = session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status.in_(_DUE))
                    .values(
                        status=JobStatus.PROCESSING.value,
                        attempts=JobRow.attempts + 1,
                        updated_at=at,
                    )
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(job_id)
            if not claimed:
                return []
            rows = session.execute(
                select(JobRow).where(JobRow.id.in_(claimed)).order_by(JobRow.id)
            ).scalars()
            return [job_view(r) for r in rows]

    def mark_job_success(self, job_id: int, *, now: datetime | None = None) -> JobView:
        at = now or utcnow()
        with self.write_session() as session:
            row = _processing(session.get(JobRow, job_id, with_for_update=True), job_id)
            row.status = JobStatus.SUCCESS.value
            row.last_error = None
            row.updated_at = at
            session.flush()
            return job_view(row)

    def mark_job_retry(
        self,
        job_id: int,
        error: str,
        *,
        backoff: timedelta = DEFAULT_BACKOFF,
        max_backoff: timedelta = DEFAULT_MAX_BACKOFF,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        now: datetime | None = None,
    ) -> JobView:
        """A failed attempt: RETRY after ``retry_delay(attempts)``, or FAILED at max_attempts."""
        at = now or utcnow()
        with self.write_session() as session:
            row = _processing(session.get(JobRow, job_id, with_for_update=True), job_id)
            row.last_error = error[:4000]
            row.updated_at = at
            if row.attempts >= max_attempts:
                row.status = JobStatus.FAILED.value
            else:
                row.status = JobStatus.RETRY.value
                row.next_attempt_at = at + retry_delay(row.attempts, backoff, max_backoff)
            session.flush()
            return job_view(row)

    def requeue_stale_jobs(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """PROCESSING jobs untouched for ``older_than`` (a worker died) become RETRY, due now."""
        at = now or utcnow()
        with self.write_session() as session:
            result = session.execute(
                update(JobRow)
                .where(
                    JobRow.status == JobStatus.PROCESSING.value,
                    JobRow.updated_at <= at - older_than,
                )
                .values(status=JobStatus.RETRY.value, next_attempt_at=at, updated_at=at)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def get_job(self, job_id: int) -> JobView:
        with self.read_session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise UnknownJob(f"no publication job {job_id}")
            return job_view(row)

    def find_jobs(
        self,
        *,
        serial: int | str | None = None,
        order_id: str | None = None,
        status: JobStatus | None = None,
    ) -> list[JobView]:
        query = select(JobRow).order_by(JobRow.id)
        if serial is not None:
            query = query.where(JobRow.serial == normalise_serial(serial))
        if order_id is not None:
            query = query.where(JobRow.order_id == order_id)
        if status is not None:
            query = query.where(JobRow.status == JobStatus(status).value)
        with self.read_session() as session:
            return [job_view(r) for r in session.execute(query).scalars()]


def _processing(row: JobRow | None, job_id: int) -> JobRow:
    if row is None:
        raise UnknownJob(f"no publication job {job_id}")
    if row.status != JobStatus.PROCESSING.value:
        raise StoreError(f"publication job {job_id} is {row.status}, not PROCESSING")
    return row
