"""Quarantine: where "hold" puts a message until an operator releases or deletes it.

What CipherMail users expect from "hold": the gateway accepts the message (250) — so the
sender's MTA forgets it — and keeps it in a quarantine an operator can list, inspect,
release to the next hop or delete.  Because 250 means "the gateway is now responsible",
:meth:`Quarantine.hold` returns only once the message is durable on disk: it writes one file
per message to a temporary name, fsyncs it, renames it into place and fsyncs the directory.

One file per message (``<id>.held``, mode 0600): a line of JSON with the envelope (queue id,
client, sender, the held recipients, reason, time) followed by the raw message bytes, so a
file is self-contained and appears atomically.  Temporary files start with ``.`` and are
ignored (a crash mid-write leaves at most such a file behind, never a half message).

Releasing sends the message as it is stored — the original, untransformed bytes — to the
held recipients over SMTP (:func:`release_to`); the file is deleted only after the next hop
answered 250.  Re-checking the policy (e.g. encrypting now that a certificate appeared) is
out of scope: the operator decides, and releasing means "send it like this".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.errors import CmcgateError
from config.values import is_number
from gateway.smtp.message import Transaction
from gateway.smtp.relay import NextHop, NextHopTransaction, Reply

SUFFIX = ".held"
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")


class QuarantineError(CmcgateError):
    """A quarantine operation failed (unknown id, unreadable file, disk trouble)."""


class NotInQuarantine(QuarantineError):
    """No held message has this id."""


@dataclass(frozen=True)
class HeldMessage:
    """The envelope of one held message (its bytes: :meth:`Quarantine.get`)."""

    id: str
    queue_id: str
    held_at: str
    client_address: str
    sender: str
    recipients: tuple[str, ...]
    reason: str
    size: int


class Quarantine:
    """A directory of held messages; every method is safe to call from several processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def hold(self, transaction: Transaction, recipients: Sequence[str], reason: str) -> str:
        """Store the message for ``recipients`` durably; return its id."""
        now = datetime.now(UTC)
        ident = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"
        envelope = HeldMessage(
            id=ident,
            queue_id=transaction.queue_id,
            held_at=now.isoformat(timespec="seconds"),
            client_address=transaction.client_address,
            sender=transaction.sender,
            recipients=tuple(recipients),
            reason=reason,
            size=len(transaction.content),
        )
        head = json.dumps(asdict(envelope), ensure_ascii=True, sort_keys=True).encode("ascii")
        temporary = self.directory / f".{ident}.tmp"
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(head + b"\n" + transaction.content)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            os.rename(temporary, self._path(ident))
            fsync_directory(self.directory)
        except OSError as exc:
            raise QuarantineError(f"cannot write to quarantine {self.directory}: {exc}") from exc
        return ident

    def list(self) -> list[HeldMessage]:
        """Every held message, oldest first."""
        if not self.directory.is_dir():
            return []
        held = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                held.append(self.get(path.name[: -len(SUFFIX)])[0])
            except NotInQuarantine:
                continue  # deleted meanwhile
        return held

    def get(self, ident: str) -> tuple[HeldMessage, bytes]:
        """The envelope and the raw message bytes of a held message."""
        try:
            data = self._path(ident).read_bytes()
        except FileNotFoundError:
            raise NotInQuarantine(f"no held message {ident!r}") from None
        except OSError as exc:
            raise QuarantineError(f"cannot read held message {ident!r}: {exc}") from exc
        head, _, content = data.partition(b"\n")
        try:
            fields = json.loads(head)
            fields["recipients"] = tuple(fields["recipients"])
            return HeldMessage(**fields), content
        except (ValueError, TypeError, KeyError) as exc:
            raise QuarantineError(f"held message {ident!r} is damaged: {exc}") from exc

    def release(self, ident: str) -> Transaction:
        """The held message as a transaction to relay; delete it once the next hop took it."""
        envelope, content = self.get(ident)
        return Transaction(
            queue_id=envelope.queue_id,
            client_address=envelope.client_address,
            sender=envelope.sender,
            recipients=envelope.recipients,
            content=content,
        )

    def delete(self, ident: str) -> None:
        try:
            self._path(ident).unlink()
        except FileNotFoundError:
            raise NotInQuarantine(f"no held message {ident!r}") from None
        except OSError as exc:
            raise QuarantineError(f"cannot delete held message {ident!r}: {exc}") from exc
        fsync_directory(self.directory)

    def _path(self, ident: str) -> Path:
        if not _ID.match(ident):
            raise NotInQuarantine(f"no held message {ident!r}: not a quarantine id")
        return self.directory / f"{ident}{SUFFIX}"


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def release_to(quarantine: Quarantine, ident: str, next_hop: NextHop) -> Reply:
    """Send a held message to its recipients via ``next_hop``; delete it only after 250.

    The reply returned is the first refusal (nothing deleted then) or the DATA reply.
    """
    transaction = quarantine.release(ident)
    hop = NextHopTransaction(next_hop)
    await hop.open()
    try:
        reply = await hop.mail(transaction.sender)
        for recipient in transaction.recipients:
            if reply.ok:
                reply = await hop.rcpt(recipient)
        if reply.ok:
            reply = await hop.data(transaction.content)
    finally:
        await hop.close()
    if reply.ok:
        quarantine.delete(ident)
    return reply


# -- command line: cmcgate gateway quarantine ... -----------------------------------------------
def register_quarantine(gateway_subparsers: Any) -> None:
    """Add ``quarantine`` with list/show/delete/release to the ``gateway`` group."""
    parser: argparse.ArgumentParser = gateway_subparsers.add_parser(
        "quarantine", help="messages held by the policy (list, show, release, delete)"
    )
    sub = parser.add_subparsers(dest="quarantine_command", metavar="COMMAND")

    def add(name: str, help_: str, func: Any, with_id: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dir", required=True, type=Path, help="the quarantine directory")
        if with_id:
            p.add_argument("id", help="the held message's id (see `list`)")
        p.set_defaults(func=func)
        return p

    add("list", "list held messages", _cmd_list, with_id=False).add_argument(
        "--json", action="store_true", help="print JSON"
    )
    add("show", "print a held message's envelope and content", _cmd_show).add_argument(
        "--raw", action="store_true", help="print only the raw message"
    )
    add("delete", "delete a held message for good", _cmd_delete)
    add("release", "send a held message as it is to the next hop, then delete it", _cmd_release)
    release = sub.choices["release"]
    release.add_argument("--next-hop", required=True, metavar="HOST:PORT", type=_host_port)


def _host_port(value: str) -> NextHop:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not is_number(port):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return NextHop(host.strip("[]"), int(port), timeout=30)


def _cmd_list(args: argparse.Namespace) -> int:
    held = Quarantine(args.dir).list()
    if args.json:
        print(json.dumps([asdict(h) for h in held], indent=2))
        return 0
    for h in held:
        print(f"{h.id}  {h.held_at}  <{h.sender}> -> {','.join(h.recipients)}  {h.reason}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    envelope, content = Quarantine(args.dir).get(args.id)
    if not args.raw:
        print(json.dumps(asdict(envelope), indent=2))
        print()
    sys.stdout.flush()
    sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    Quarantine(args.dir).delete(args.id)
    print(f"deleted {args.id}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    import asyncio

    reply = asyncio.run(release_to(Quarantine(args.dir), args.id, args.next_hop))
    if not reply.ok:
        raise QuarantineError(f"next hop refused {args.id}: {reply.line}; it stays held")
    print(f"released {args.id}: {reply.line}")
    return 0
