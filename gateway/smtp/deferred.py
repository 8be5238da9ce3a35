"""Deferred copies: split copies the gateway answered 250 for but could not relay yet.

A message the pipeline split into copies (recipient groups with different treatment) is
relayed copy by copy, each in its own next-hop transaction.  When the next hop accepted an
earlier copy and then refuses a later one *temporarily*, answering the client 4xx would make
it send the whole message again, and the recipients of the earlier copies would get it
twice.  Instead the gateway keeps the later copies here and answers 250: the way every MTA
takes responsibility for a message it cannot deliver at once (RFC 5321 §6.1).  250 is given
only after the copies are durable on disk — each written to a temporary name, fsynced,
renamed into place, directory fsynced — otherwise the client gets the 4xx after all
(a duplicate is the lesser evil than a loss).

One file per copy (``<id>.copy``, mode 0600, in ``<stateDir>/deferred``): a line of JSON
with the envelope (queue id, client, sender, recipients, MAIL parameters such as
``BODY=8BITMIME``, time) followed by the copy's bytes exactly as they are to be sent.
:func:`retry_due` sends every copy that is due (first at once, then backing off from
:data:`FIRST_BACKOFF` to :data:`MAX_BACKOFF`); a copy is deleted only after the next hop
answered 250 to its DATA.  A copy the next hop refuses permanently, or that stays
undelivered for :data:`MAX_LIFETIME` (Postfix's ``maximal_queue_lifetime``), goes to the
quarantine with the reason (an operator can release or delete it: the gateway writes no
bounce messages) and is logged as an error.  A copy being sent is locked (``flock``), so two
processes never send the same copy.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.errors import CmcgateError
from gateway.quarantine import Quarantine, QuarantineError, fsync_directory
from gateway.smtp.message import Transaction
from gateway.smtp.relay import NextHop, Reply, send_copy

log = logging.getLogger("cmcgate.gateway.deferred")

SUFFIX = ".copy"
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
FIRST_BACKOFF = 60.0
MAX_BACKOFF = 3600.0
MAX_LIFETIME = timedelta(days=5)
#: How often the retry loop looks for due copies.
SCAN_INTERVAL = 5.0


class DeferredError(CmcgateError):
    """A deferred copy could not be written or read."""


@dataclass(frozen=True)
class DeferredCopy:
    """The envelope of one deferred copy (its bytes follow it in the file)."""

    id: str
    queue_id: str
    deferred_at: str
    client_address: str
    sender: str
    recipients: tuple[str, ...]
    mail_options: tuple[str, ...]
    reason: str


@dataclass
class _Schedule:
    attempts: int = 0
    due: float = 0.0


@dataclass
class DeferredQueue:
    """A directory of deferred copies; safe to use from several processes."""

    directory: Path
    _schedule: dict[str, _Schedule] = field(default_factory=dict, init=False, repr=False)

    def add(
        self,
        transaction: Transaction,
        copies: Sequence[tuple[tuple[str, ...], bytes]],
        mail_options: Sequence[str],
        reason: str,
    ) -> list[str]:
        """Write every (recipients, content) copy durably; all or none (then DeferredError)."""
        written: list[str] = []
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for recipients, content in copies:
                written.append(self._write(transaction, recipients, content, mail_options, reason))
            fsync_directory(self.directory)
        except OSError as exc:
            for ident in written:
                (self.directory / f"{ident}{SUFFIX}").unlink(missing_ok=True)
            raise DeferredError(f"cannot write to {self.directory}: {exc}") from exc
        return written

    def _write(
        self,
        t: Transaction,
        recipients: tuple[str, ...],
        content: bytes,
        mail_options: Sequence[str],
        reason: str,
    ) -> str:
        now = datetime.now(UTC)
        ident = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"
        envelope = DeferredCopy(
            ident, t.queue_id, now.isoformat(timespec="seconds"), t.client_address, t.sender,
            tuple(recipients), tuple(mail_options), reason,
        )  # fmt: skip
        head = json.dumps(asdict(envelope), ensure_ascii=True, sort_keys=True).encode("ascii")
        temporary = self.directory / f".{ident}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head + b"\n" + content)
                out.flush()
                os.fsync(out.fileno())
            os.rename(temporary, self.directory / f"{ident}{SUFFIX}")
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return ident

    def copies(self) -> list[DeferredCopy]:
        """Every deferred copy, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                with path.open("rb") as stream:
                    found.append(_parse(stream.readline(), path.name)[0])
            except (OSError, DeferredError):
                continue  # sent and deleted meanwhile, or damaged (reported when due)
        return found

    def due(self, now: float) -> list[str]:
        """Ids of the copies whose next attempt is due."""
        idents = [copy.id for copy in self.copies()]
        for gone in set(self._schedule) - set(idents):
            del self._schedule[gone]
        return [i for i in idents if self._schedule.setdefault(i, _Schedule()).due <= now]

    def postpone(self, ident: str, now: float) -> float:
        """Back off after a failed attempt; the seconds until the next one."""
        entry = self._schedule.setdefault(ident, _Schedule())
        entry.attempts += 1
        delay = min(FIRST_BACKOFF * 2 ** (entry.attempts - 1), MAX_BACKOFF)
        entry.due = now + delay
        return delay


def _parse(data: bytes, name: str) -> tuple[DeferredCopy, bytes]:
    head, _, content = data.partition(b"\n")
    try:
        fields: dict[str, Any] = json.loads(head)
        fields["recipients"] = tuple(fields["recipients"])
        fields["mail_options"] = tuple(fields["mail_options"])
        return DeferredCopy(**fields), content
    except (ValueError, TypeError, KeyError) as exc:
        raise DeferredError(f"deferred copy {name} is damaged: {exc}") from exc


async def retry_due(
    queue: DeferredQueue,
    next_hop: Callable[[], NextHop],
    quarantine: Quarantine | None,
    *,
    now: Callable[[], float] = time.monotonic,
) -> dict[str, Reply]:
    """Send every due copy once; the next hop's final reply per copy id."""
    results: dict[str, Reply] = {}
    for ident in queue.due(now()):
        if not _ID.match(ident):
            continue
        reply = await _attempt(queue, ident, next_hop(), quarantine, now)
        if reply is not None:
            results[ident] = reply
    return results


async def _attempt(
    queue: DeferredQueue,
    ident: str,
    hop: NextHop,
    quarantine: Quarantine | None,
    now: Callable[[], float],
) -> Reply | None:
    path = queue.directory / f"{ident}{SUFFIX}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # another process sent it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another process is sending it right now
        if os.fstat(fd).st_nlink == 0:
            return None  # sent and deleted while we waited for the lock
        copy, content = _parse(await asyncio.to_thread(_read_all, fd), path.name)
        reply = await send_copy(hop, copy.sender, copy.mail_options, copy.recipients, content)
        if reply.ok:
            await asyncio.to_thread(_delete, path)
            log.info(
                "queue_id=%s deferred copy %s to %s delivered: %s",
                copy.queue_id, ident, ",".join(copy.recipients), reply.line,
            )  # fmt: skip
        elif reply.temporary and not _expired(copy):
            delay = queue.postpone(ident, now())
            log.warning(
                "queue_id=%s deferred copy %s to %s: next hop said %s; next try in %.0f s",
                copy.queue_id, ident, ",".join(copy.recipients), reply.line, delay,
            )  # fmt: skip
        elif not await asyncio.to_thread(_give_up, path, copy, content, reply, quarantine):
            queue.postpone(ident, now())
        return reply
    except (DeferredError, OSError) as exc:
        log.error("deferred copy %s: %s", ident, exc)
        queue.postpone(ident, now())
        return None
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as stream:
        stream.seek(0)
        return stream.read()


def _delete(path: Path) -> None:
    """Delete a delivered copy for good (a crash before the fsync may only re-send it)."""
    path.unlink()
    fsync_directory(path.parent)


def _expired(copy: DeferredCopy) -> bool:
    return datetime.now(UTC) - datetime.fromisoformat(copy.deferred_at) > MAX_LIFETIME


def _give_up(
    path: Path, copy: DeferredCopy, content: bytes, reply: Reply, quarantine: Quarantine | None
) -> bool:
    """A permanent refusal or too old: into the quarantine for an operator (no bounce).

    False when the copy had to stay (no quarantine, or it cannot be written)."""
    why = f"next hop refused the deferred copy: {reply.line}"
    if reply.temporary:
        why = f"not delivered within {MAX_LIFETIME.days} days, last reply {reply.line}"
    if quarantine is None:
        log.error("queue_id=%s deferred copy %s: %s; kept", copy.queue_id, copy.id, why)
        return False
    transaction = Transaction(
        copy.queue_id, copy.client_address, copy.sender, copy.recipients, content
    )
    try:
        held = quarantine.hold(transaction, copy.recipients, why)
    except QuarantineError as exc:
        log.error("queue_id=%s deferred copy %s: %s; kept: %s", copy.queue_id, copy.id, why, exc)
        return False
    _delete(path)
    log.error(
        "queue_id=%s deferred copy to %s: %s; moved to quarantine as %s",
        copy.queue_id, ",".join(copy.recipients), why, held,
    )  # fmt: skip
    return True


async def run_retries(
    queue: DeferredQueue,
    next_hop: Callable[[], NextHop],
    quarantine: Quarantine | None,
    interval: float = SCAN_INTERVAL,
) -> None:
    """Retry due copies every ``interval`` seconds until cancelled."""
    while True:
        try:
            await retry_due(queue, next_hop, quarantine)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the loop must survive a bug; the copies stay
            log.exception("retrying deferred copies failed")
        await asyncio.sleep(interval)
