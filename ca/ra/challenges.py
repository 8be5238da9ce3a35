"""Mailbox control by email challenge (S/MIME BR 3.2.2.2; Certum's activation mail).

An order of a product with ``mailbox_validation`` whose addresses lie outside the account's
validated domains waits in PENDING_VALIDATION; :meth:`ChallengeService.start` (the
authority's ``on_pending_validation`` hook) mails each such address a random code and a link
to the confirmation page (:mod:`ca.ra.confirm_page`). The code is 24 base32 characters in
six groups of four (120 random bits: the BR ask for at least 112) and is valid for
``ra.challenge_hours`` (24 h by default). When every address is confirmed the order goes on
(:meth:`CertificateAuthority.resume`: issued, or PENDING_AUTHORIZATION for manual products).
Five wrong codes fail the challenge and the order; so does a lapsed challenge. Every step is
a comment on the order and an ``email_challenge`` audit record.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ca.periodic import add_periodic
from ca.ra.context import RaContext
from ca.ra.errors import RaError
from ca.ra.notify import Notifier
from ca.store.audit import append_audit
from ca.store.challenges import ChallengeStatus, ChallengeView, UnknownChallenge
from ca.store.model import OrderStatus, OrderView, UnknownOrder
from ca.store.orders import Store
from config.errors import CmcgateError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: look-alikes a person may type for base32 characters
_TYPOS = str.maketrans({"0": "O", "1": "I", "8": "B"})
EXPIRY_CHECK_MINUTES = 15
#: a confirmed order still waiting this long after its last confirmation was left by a stop
RESUME_AFTER = timedelta(minutes=5)


class ChallengeError(RaError):
    """An answer or request the challenge service refuses; ``status`` is the HTTP status."""

    status = 409


class UnknownChallengeError(ChallengeError):
    status = 404


class WrongCode(ChallengeError):
    status = 400


class ChallengeExpired(ChallengeError):
    status = 410


class Resumer(Protocol):
    """What :class:`ChallengeService` needs of the authority (``resume``, the order go-on)."""

    def resume(self, order_id: str, *, actor: str, csr_der: bytes | None = None) -> Any: ...


def new_code() -> str:
    """``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX``: 24 base32 characters, 120 bits from ``secrets``."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    return "-".join(chars[i : i + 4] for i in range(0, 24, 4))


def normalise_code(text: str) -> str:
    """Upper case, without spaces and dashes, look-alike digits mapped (as typed by hand)."""
    kept = "".join(c for c in text.upper() if c not in " -\t\r\n")
    kept = kept.translate(_TYPOS)[:64]
    return "-".join(kept[i : i + 4] for i in range(0, len(kept), 4))


class ChallengeService:
    """Sends and checks email challenges; see the module docstring."""

    def __init__(self, ca: RaContext, notifier: Notifier) -> None:
        self.ca = ca
        self.notifier = notifier

    @property
    def store(self) -> Store:
        return self.ca.store

    def _now(self) -> datetime:
        return self.ca.clock().astimezone(UTC)

    def link(self, challenge_id: str) -> str:
        """The confirmation page, on the CA's public plain-HTTP listener (``ca.base_url``)."""
        return f"{self.ca.settings.ca.base_url.rstrip('/')}/ra/confirm/{challenge_id}"

    def _note(self, order_id: str, actor: str, text: str, **details: Any) -> None:
        self.store.add_comment(order_id, actor[:256] or "-", text, now=self._now())
        append_audit(self.store, "email_challenge", actor[:256] or "-", order_id,
                     {"note": text, **details}, now=self._now())  # fmt: skip

    # -- sending ----------------------------------------------------------------------------
    def start(self, order: OrderView, emails: tuple[str, ...]) -> None:
        """One challenge per address, mailed now (``ca.on_pending_validation``); see
        :meth:`list` for what was made."""
        for email in dict.fromkeys(e.lower() for e in emails):
            challenge_id = secrets.token_urlsafe(24)
            code = new_code()
            expires = self._now() + timedelta(hours=self.ca.settings.ra.challenge_hours)
            challenge = self.store.add_challenge(
                challenge_id, order.id, email, code, expires, now=self._now()
            )
            self._mail(challenge, code, "email challenge sent to")

    def _mail(self, challenge: ChallengeView, code: str, what: str) -> None:
        expires = challenge.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        try:
            sent = self.notifier.send(
                "email_challenge", challenge.email, order_id=challenge.order_id,
                email=challenge.email, code=code, url=self.link(challenge.id), expires=expires,
            )  # fmt: skip
            outcome = "" if sent.last_error is None else f" (not delivered: {sent.last_error})"
        except CmcgateError as exc:  # a bad address: the operator sees it on the order
            outcome = f" (not sent: {exc})"
        self._note(challenge.order_id, "ca", f"{what} {challenge.email}{outcome}",
                   challenge=challenge.id, email=challenge.email, expires=expires)  # fmt: skip

    def resend(self, challenge_id: str, *, by: str = "ra") -> ChallengeView:
        """A new code for a PENDING challenge, mailed again; the expiry starts again."""
        challenge = self._get(challenge_id)
        order = self.store.get_order(challenge.order_id)
        if challenge.status is not ChallengeStatus.PENDING or (
            order.status is not OrderStatus.PENDING_VALIDATION
        ):
            raise ChallengeError(
                f"email challenge {challenge.id} is {challenge.status.value} and its order"
                f" {order.id} {order.status.value}: nothing to resend"
            )
        code = new_code()
        expires = self._now() + timedelta(hours=self.ca.settings.ra.challenge_hours)
        renewed = self.store.renew_challenge(challenge.id, code, expires)
        self._mail(renewed, code, f"email challenge sent again (asked by {by}) to")
        return renewed

    def list(self, order_id: str) -> list[ChallengeView]:
        try:
            self.store.get_order(order_id)
        except UnknownOrder:
            raise UnknownChallengeError(f"no order {order_id[:64]}") from None
        return self.store.find_challenges(order_id)

    def _get(self, challenge_id: str) -> ChallengeView:
        try:
            return self.store.get_challenge(challenge_id)
        except UnknownChallenge:
            raise UnknownChallengeError("no such email challenge") from None

    # -- answering --------------------------------------------------------------------------
    def answer(self, challenge_id: str, code: str, *, by: str = "mailbox holder") -> OrderView:
        """Check the code; the order after (issued once every address is confirmed).

        WrongCode (attempts left), ChallengeError (too many wrong codes, or not waiting any
        more: the order FAILED) or ChallengeExpired (the order FAILED)."""
        before = self._get(challenge_id)
        challenge, matched = self.store.answer_challenge(
            before.id, normalise_code(code), by=by, max_attempts=MAX_ATTEMPTS, now=self._now()
        )
        order_id = challenge.order_id
        if matched:
            self._note(order_id, by, f"mailbox {challenge.email} confirmed by {by}",
                       challenge=challenge.id, email=challenge.email)  # fmt: skip
            return self._go_on(order_id, by)
        if challenge.status is ChallengeStatus.PENDING:
            left = MAX_ATTEMPTS - challenge.attempts
            self._note(order_id, by, f"wrong code for {challenge.email} ({left} attempts left)",
                       challenge=challenge.id, attempts=challenge.attempts)  # fmt: skip
            raise WrongCode(f"wrong code: {left} attempt(s) left")
        if challenge.status is ChallengeStatus.CONFIRMED:  # answered before: the order goes
            return self._go_on(order_id, by)  # on if a stopped CA left it waiting
        if challenge.status is ChallengeStatus.EXPIRED:
            self._fail(order_id, f"email challenge for {challenge.email} expired")
            raise ChallengeExpired("this confirmation code has expired; the order was cancelled")
        if before.status is ChallengeStatus.PENDING:  # this answer was the last wrong one
            self._fail(order_id, f"email challenge for {challenge.email} failed: "
                                 f"{MAX_ATTEMPTS} wrong codes")  # fmt: skip
        raise ChallengeError("too many wrong codes; the order was cancelled")

    def _go_on(self, order_id: str, actor: str) -> OrderView:
        order: OrderView = self.store.get_order(order_id)
        if order.status is not OrderStatus.PENDING_VALIDATION:
            return order
        pending = [
            c for c in self.store.find_challenges(order_id)
            if c.status is not ChallengeStatus.CONFIRMED
            and not self.store.mailbox_confirmed(order_id, c.email)
        ]  # fmt: skip
        if pending:
            return order
        resumer: Resumer = self.ca  # type: ignore[assignment]
        try:
            resumer.resume(order_id, actor=actor)
        except CmcgateError as exc:  # refused: the order is FAILED and says why
            log.info("order %s refused after mailbox confirmation: %s", order_id, exc)
        return self.store.get_order(order_id)

    def _fail(self, order_id: str, reason: str) -> None:
        order = self.store.get_order(order_id)
        if order.status is OrderStatus.PENDING_VALIDATION:
            self.store.fail(order_id, reason, now=self._now())
            self._note(order_id, "ca", reason)

    def resume_confirmed(self, older_than: timedelta = RESUME_AFTER) -> int:
        """Orders still waiting although every challenge was CONFIRMED ``older_than`` ago
        (the CA stopped between a confirmation and its resume; PENDING_VALIDATION is a
        wait, so neither recovery nor the clean-up looks at it): resumed. How many."""
        cutoff = self._now() - older_than
        resumed = 0
        for order in self.store.find_orders(status=OrderStatus.PENDING_VALIDATION):
            found = self.store.find_challenges(order.id)
            if found and all(
                c.status is ChallengeStatus.CONFIRMED and (c.confirmed_at or cutoff) <= cutoff
                for c in found
            ):
                self._go_on(order.id, "ca")
                resumed += 1
        return resumed

    def expire_due(self) -> int:
        """Lapsed challenges EXPIRED and their waiting orders FAILED; how many orders."""
        failed = 0
        for challenge in self.store.expire_challenges(self._now()):
            order = self.store.get_order(challenge.order_id)
            if order.status is OrderStatus.PENDING_VALIDATION:
                self._fail(order.id, f"email challenge for {challenge.email} expired")
                failed += 1
        return failed


def schedule_challenge_expiry(scheduler: Any, get_ca: Any) -> None:
    """``expire_due`` every quarter hour on ``cmcgate ca serve``'s scheduler (it sends no
    mail, so it needs no working SMTP server)."""

    def run() -> None:
        ca = get_ca()
        service = ChallengeService(ca, Notifier(ca))
        count = service.expire_due()
        if count:
            log.info("%d order(s) failed: email challenge expired", count)
        if service.resume_confirmed():
            log.info("resumed orders whose mailboxes were confirmed before a stop")

    add_periodic(scheduler, "challenge-expiry", "email challenge expiry", run,
                 minutes=EXPIRY_CHECK_MINUTES)  # fmt: skip
