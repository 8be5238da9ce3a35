"""What the SMTP front hands the pipeline and gets back: a transaction, its copies, a refusal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from config.errors import CmcgateError
from gateway.smtp.relay import (
    Reply,
)


class DeferredQueue(Protocol):
    """Where split copies the next hop deferred are kept
    (:class:`gateway.smtp.deferred.DeferredQueue`)."""

    def add(
        self,
        transaction: Transaction,
        copies: Sequence[tuple[tuple[str, ...], bytes]],
        mail_options: Sequence[str],
        reason: str,
    ) -> list[str]: ...


class MessageRefused(CmcgateError):
    """The pipeline refuses the message; :attr:`reply` (4xx or 5xx) goes to the client."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.line)
        self.reply = reply


@dataclass(frozen=True)
class Copy:
    """One transformed copy of a message and the recipients it goes to."""

    recipients: tuple[str, ...]
    content: bytes
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transaction:
    """What the client handed over: the envelope and the raw message."""

    queue_id: str
    client_address: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes


#: The pipeline: transforms one message into the copies to relay, or raises MessageRefused.
Pipeline = Callable[[Transaction], Awaitable[Sequence[Copy]]]


#: A copy with this action was put in quarantine by the pipeline: it is not relayed.
HELD = "hold"
