"""Mailbox-control challenges (S/MIME BR 3.2.2.2: a random value sent to the address, valid
for a limited time; Certum's "activation" mail) of :class:`ca.store.orders.Store`.

One row per (order, address) challenge; its random ``id`` is in the mailed link, the code is
kept only as a hash (SHA-256 over id and code: the code carries 120 random bits, so no slow
hash is needed). Answering is one locked transaction: a code compared in constant time,
attempts counted, the status moved PENDING → CONFIRMED, FAILED (too many wrong codes) or
EXPIRED — two concurrent answers can never both count.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import StoreBase, check_text
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import StoreError, normalise_email
from config.database import view_of


class UnknownChallenge(StoreError):
    """No challenge with that id."""


class ChallengeStatus(enum.StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"


class ChallengeRow(Base):
    __tablename__ = "mailbox_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    confirmed_by: Mapped[str | None] = mapped_column(String(256))


@dataclass(frozen=True)
class ChallengeView:
    """A challenge as the RA shows it (never the code or its hash)."""

    id: str
    order_id: str
    email: str
    expires_at: datetime
    attempts: int
    status: ChallengeStatus
    created_at: datetime
    confirmed_at: datetime | None
    confirmed_by: str | None


def _view(row: ChallengeRow) -> ChallengeView:
    return view_of(ChallengeView, row, status=ChallengeStatus(row.status))


def code_hash(challenge_id: str, code: str) -> str:
    """The stored form of a (normalised) code: SHA-256 over the challenge id and the code."""
    return hashlib.sha256(f"{challenge_id}:{code}".encode()).hexdigest()


class ChallengesMixin(StoreBase):
    def add_challenge(
        self,
        challenge_id: str,
        order_id: str,
        email: str,
        code: str,
        expires_at: datetime,
        *,
        now: datetime | None = None,
    ) -> ChallengeView:
        check_text("challenge id", challenge_id, 64)
        check_text("email", email, 320)
        at = now or utcnow()
        with self.write_session() as session:
            row = ChallengeRow(
                id=challenge_id, order_id=order_id, email=normalise_email(email),
                code_hash=code_hash(challenge_id, code), expires_at=expires_at, attempts=0,
                status=ChallengeStatus.PENDING.value, created_at=at, confirmed_at=None,
                confirmed_by=None,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _view(row)

    def get_challenge(self, challenge_id: str) -> ChallengeView:
        with self.read_session() as session:
            row = session.get(ChallengeRow, challenge_id[:64])
            if row is None:
                raise UnknownChallenge(f"no email challenge {challenge_id[:64]}")
            return _view(row)

    def find_challenges(
        self, order_id: str | None = None, *, status: ChallengeStatus | None = None
    ) -> list[ChallengeView]:
        query = select(ChallengeRow).order_by(ChallengeRow.created_at, ChallengeRow.id)
        if order_id is not None:
            query = query.where(ChallengeRow.order_id == order_id)
        if status is not None:
            query = query.where(ChallengeRow.status == ChallengeStatus(status).value)
        with self.read_session() as session:
            return [_view(r) for r in session.execute(query).scalars()]

    def answer_challenge(
        self,
        challenge_id: str,
        code: str,
        *,
        by: str,
        max_attempts: int,
        now: datetime | None = None,
    ) -> tuple[ChallengeView, bool]:
        """Check ``code`` against a PENDING challenge: (the challenge after, matched).

        A lapsed challenge becomes EXPIRED (not compared); a wrong code counts an attempt and
        the ``max_attempts``-th wrong one makes it FAILED; the right one CONFIRMED. A challenge
        that is not PENDING is handed back unchanged (matched False).
        """
        at = now or utcnow()
        with self.write_session() as session:
            row = session.get(ChallengeRow, challenge_id[:64], with_for_update=True)
            if row is None:
                raise UnknownChallenge(f"no email challenge {challenge_id[:64]}")
            if row.status != ChallengeStatus.PENDING.value:
                return _view(row), False
            if row.expires_at <= at:
                row.status = ChallengeStatus.EXPIRED.value
                return _view(row), False
            matched = hmac.compare_digest(row.code_hash, code_hash(row.id, code))
            if matched:
                row.status = ChallengeStatus.CONFIRMED.value
                row.confirmed_at, row.confirmed_by = at, by[:256]
            else:
                row.attempts += 1
                if row.attempts >= max_attempts:
                    row.status = ChallengeStatus.FAILED.value
            session.flush()
            return _view(row), matched

    def renew_challenge(self, challenge_id: str, code: str, expires_at: datetime) -> ChallengeView:
        """A new code and expiry for a PENDING challenge (attempts start again)."""
        with self.write_session() as session:
            row = session.get(ChallengeRow, challenge_id[:64], with_for_update=True)
            if row is None:
                raise UnknownChallenge(f"no email challenge {challenge_id[:64]}")
            if row.status != ChallengeStatus.PENDING.value:
                raise StoreError(f"email challenge {row.id} is {row.status}, not PENDING")
            row.code_hash, row.expires_at, row.attempts = code_hash(row.id, code), expires_at, 0
            session.flush()
            return _view(row)

    def expire_challenges(self, now: datetime | None = None) -> list[ChallengeView]:
        """PENDING challenges past their expiry become EXPIRED; returns them."""
        at = now or utcnow()
        with self.write_session() as session:
            rows = (
                session.execute(
                    select(ChallengeRow)
                    .where(
                        ChallengeRow.status == ChallengeStatus.PENDING.value,
                        ChallengeRow.expires_at <= at,
                    )
                    .with_for_update()
                )
                .scalars()
                .all()
            )
            for row in rows:
                row.status = ChallengeStatus.EXPIRED.value
            session.flush()
            return [_view(r) for r in rows]

    def mailbox_confirmed(self, order_id: str, email: str) -> bool:
        """The holder of ``email`` answered one of this order's challenges."""
        with self.read_session() as session:
            found = session.execute(
                select(ChallengeRow.id).where(
                    ChallengeRow.order_id == order_id,
                    ChallengeRow.email == normalise_email(email),
                    ChallengeRow.status == ChallengeStatus.CONFIRMED.value,
                )
            ).first()
            return found is not None
