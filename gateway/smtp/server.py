"""The SMTP front: an aiosmtpd handler that relays in step with the next hop.

aiosmtpd runs the protocol; this handler only translates between SMTP and the pipeline
(see STYLE.md): MAIL and RCPT are forwarded to the next hop and its replies mirrored, so a
recipient the next hop refuses is refused to the client with the same reply; DATA is handed
to the pipeline, which may split the recipients into groups that each get their own
transformed copy, and the client's DATA reply is the next hop's reply to those copies.

Mail is never acknowledged before the next hop (or, for split copies, the deferred queue)
has it.  A split message is relayed copy by copy, each in its own transaction with the
client's MAIL parameters (``BODY=8BITMIME``, ``SMTPUTF8``).  If the first copy is refused,
the client gets that reply and nothing was delivered.  If a later copy is refused
temporarily after earlier ones were accepted, answering 4xx would make the client send the
whole message again and the earlier recipients get it twice: the refused and the remaining
copies go to the durable :class:`gateway.smtp.deferred.DeferredQueue` instead, which retries them,
and the client gets 250 — only once the queue has them on disk; if it cannot write them,
the client gets the 4xx after all (a duplicate rather than a loss).  A later copy refused
permanently (5xx) is answered with that 5xx.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.errors import CmcgateError
from gateway.smtp.message import HELD, Copy, DeferredQueue, MessageRefused, Pipeline, Transaction
from gateway.smtp.relay import (
    NextHop,
    NextHopPool,
    NextHopTransaction,
    RelayError,
    Reply,
    send_copy,
)

log = logging.getLogger("cmcgate.gateway")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListenError(CmcgateError):
    """The SMTP front cannot listen on its address (in use, not local, no permission)."""


async def pass_through(transaction: Transaction) -> Sequence[Copy]:
    """The identity pipeline: one unchanged copy for every recipient."""
    return [Copy(transaction.recipients, transaction.content, ("pass",))]


@dataclass(frozen=True)
class FrontSettings:
    """Who may relay through the gateway, and SMTP AUTH (:mod:`gateway.smtp.auth`)."""

    allowed_networks: tuple[IPNetwork, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    #: Authenticated clients may relay from anywhere.
    authenticated_may_relay: bool = True
    #: AUTH users (a :class:`gateway.smtp.auth.SmtpUsers`); None: AUTH is not offered
    users: Any = None
    #: every client must AUTH before MAIL (also those in allowed_networks)
    require_auth: bool = False
    #: AUTH offered without STARTTLS too
    auth_over_plaintext: bool = False


RELAY_DENIED = "554 5.7.1 Relay access denied"
#: RFC 6531 §3.5: a non-ASCII address in a transaction that did not ask for SMTPUTF8
NEEDS_SMTPUTF8 = "553 5.6.7 Error: non-ASCII address without SMTPUTF8"
#: Whatever went wrong inside, the client sees only this (the log has the details).
INTERNAL_ERROR = "451 4.3.0 Error: internal error, try again later"


@dataclass
class _State:
    next_hop: NextHopTransaction | None = None
    queue_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12].upper())


class GatewayHandler:
    """aiosmtpd handler: MAIL/RCPT mirrored from the next hop, DATA through the pipeline."""

    def __init__(
        self,
        next_hop: NextHop,
        pipeline: Pipeline = pass_through,
        front: FrontSettings | None = None,
        on_result: Callable[[Transaction, Sequence[Copy], Reply], None] | None = None,
        deferred: DeferredQueue | None = None,
    ) -> None:
        self.next_hop = next_hop
        self.pipeline = pipeline
        self.front = front or FrontSettings()
        self.on_result = on_result
        #: where split copies go that the next hop refused temporarily after an earlier one
        self.deferred = deferred
        self._pool: NextHopPool | None = None

    def _next_hop_pool(self) -> NextHopPool:
        """Idle connections to the current next hop (a new pool after a reload changed it)."""
        pool = self._pool
        if pool is None or pool.next_hop is not self.next_hop:
            if pool is not None:
                pool.close()
            pool = self._pool = NextHopPool(self.next_hop)
        return pool

    async def close_connections(self) -> None:
        """QUIT the idle next-hop connections (on shutdown, on the front's loop)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    # -- relay permission -------------------------------------------------------------
    def may_relay(self, session: Any) -> bool:
        if self.front.authenticated_may_relay and getattr(session, "authenticated", False):
            return True
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        if peer is None:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.front.allowed_networks)

    @staticmethod
    def _state(envelope: Any) -> _State:
        state = getattr(envelope, "cmcgate", None)
        if state is None:
            state = _State()
            envelope.cmcgate = state
        return state

    # -- aiosmtpd hooks -----------------------------------------------------------------
    async def handle_exception(self, error: Exception) -> str:
        """Any exception a command raised: logged, and a generic reply (aiosmtpd's own would
        put the exception's text on the wire)."""
        from aiosmtpd.smtp import TLSSetupException

        if isinstance(error, TLSSetupException):  # a client that failed its handshake
            log.warning("STARTTLS failed: %s", error.__cause__ or error)
        else:
            log.error("SMTP session failed", exc_info=error)
        return INTERNAL_ERROR

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if not self.may_relay(session):
            # Not an open relay: refuse at MAIL already, before touching the next hop.
            return _refused(session, RELAY_DENIED, f"MAIL FROM:<{address}>", _NOT_ALLOWED)
        if not address.isascii() and not envelope.smtp_utf8:
            return _refused(session, NEEDS_SMTPUTF8, f"MAIL FROM:<{address}>", "no SMTPUTF8")
        state = self._state(envelope)
        await self._close(state)
        transaction = NextHopTransaction(self.next_hop, self._next_hop_pool())
        try:
            await transaction.open()
            reply = await transaction.mail(address, _forwardable(mail_options))
        except RelayError as exc:
            await transaction.close()
            return _refused(session, exc.reply.line, f"MAIL FROM:<{address}>", exc.detail)
        if not reply.ok:
            await transaction.close()
            return _refused(session, reply.line, f"MAIL FROM:<{address}>", "next hop refused")
        state.next_hop = transaction
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply.line

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        what = f"RCPT TO:<{address}> from=<{envelope.mail_from}>"
        if not self.may_relay(session):
            return _refused(session, RELAY_DENIED, what, _NOT_ALLOWED)
        state = self._state(envelope)
        if state.next_hop is None:
            return _refused(session, "503 5.5.1 Error: need MAIL command", what, "no MAIL")
        if not address.isascii() and not envelope.smtp_utf8:
            return _refused(session, NEEDS_SMTPUTF8, what, "no SMTPUTF8")
        try:
            reply = await state.next_hop.rcpt(address, _forwardable(rcpt_options))
        except RelayError as exc:
            await self._close(state)
            return _refused(session, exc.reply.line, what, exc.detail)
        if not reply.ok:
            return _refused(session, reply.line, what, "next hop refused the recipient")
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply.line

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await self._close(self._state(envelope))
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        state = self._state(envelope)
        try:
            return (await self._deliver(session, envelope, state)).line
        finally:
            await self._close(state)

    async def _deliver(self, session: Any, envelope: Any, state: _State) -> Reply:
        if state.next_hop is None:
            return Reply(451, "4.4.2 next hop transaction lost, try again later")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        transaction = Transaction(
            queue_id=state.queue_id,
            client_address=peer,
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or envelope.content),
        )
        try:
            copies = list(await self.pipeline(transaction))
            _check_copies(copies, transaction.recipients)
            options = _forwardable(list(envelope.mail_options))
            reply = await self._send_copies(state.next_hop, transaction, copies, options)
        except MessageRefused as exc:
            reply, copies = exc.reply, []
        except RelayError as exc:
            reply, copies = exc.reply, []
            log.warning("queue_id=%s %s", transaction.queue_id, exc.detail)
        except Exception:
            # Never lose mail on a bug: the client keeps it and retries.
            log.exception("queue_id=%s pipeline failed", transaction.queue_id)
            reply, copies = Reply(451, "4.3.0 internal error, try again later"), []
        if self.on_result is not None:
            self.on_result(transaction, copies, reply)
        # One line per message; a refusal with the reply (it names recipients and reasons).
        log.log(
            logging.INFO if reply.ok else logging.WARNING,
            "queue_id=%s from=<%s> to=%s actions=%s reply=%s",
            transaction.queue_id,
            transaction.sender,
            ",".join(transaction.recipients),
            "|".join(",".join(c.actions) for c in copies),
            reply.code if reply.ok else reply.line,
        )
        if not reply.ok:
            session.cmcgate_logged = reply.line
        return reply

    async def _send_copies(
        self,
        hop: NextHopTransaction,
        transaction: Transaction,
        copies: list[Copy],
        options: list[str],
    ) -> Reply:
        copies = [c for c in copies if HELD not in c.actions]
        if not copies:
            # Every recipient held: the quarantine write was durable before the pipeline
            # returned, so the gateway has taken responsibility for the message.
            return Reply(250, "2.0.0 OK: held in quarantine")
        if len(copies) == 1 and set(copies[0].recipients) == set(transaction.recipients):
            return await hop.data(copies[0].content)
        # Split: the next hop verified every recipient already; send one transaction each.
        await hop.rset()
        last = Reply(250, "2.0.0 OK")
        for index, copy in enumerate(copies):
            # the parameters the next hop accepted for the client's transaction (BODY=,
            # SMTPUTF8 where it offers it), on every split copy
            reply = await send_copy(
                hop, transaction.sender, hop.mail_options, copy.recipients, copy.content
            )
            if reply.ok:
                last = reply
                continue
            log.warning(
                "queue_id=%s next hop refused the copy to %s: %s",
                transaction.queue_id, ",".join(copy.recipients), reply.line,
            )  # fmt: skip
            if index == 0 or not reply.temporary:
                return reply  # nothing delivered yet, or a refusal retrying cannot change
            return await self._defer(transaction, copies[index:], options, reply)
        return last

    async def _defer(
        self, transaction: Transaction, rest: list[Copy], options: list[str], reply: Reply
    ) -> Reply:
        """Earlier copies were delivered: keep ``rest`` for later and answer 250 if durable."""
        who = ",".join(r for copy in rest for r in copy.recipients)
        if self.deferred is None:
            log.error(
                "queue_id=%s no deferred queue: answering %s, the copies already delivered "
                "will be delivered again when the client retries", transaction.queue_id,
                reply.line,
            )  # fmt: skip
            return reply
        pieces = [(copy.recipients, copy.content) for copy in rest]
        try:
            idents = await asyncio.to_thread(
                self.deferred.add, transaction, pieces, options, reply.line
            )
        except CmcgateError as exc:
            log.error(
                "queue_id=%s cannot defer the copies to %s (%s): answering %s, the copies "
                "already delivered will be delivered again", transaction.queue_id, who, exc,
                reply.line,
            )  # fmt: skip
            return reply
        log.warning(
            "queue_id=%s copies to %s deferred as %s after %s; the gateway retries them",
            transaction.queue_id, who, ",".join(idents), reply.line,
        )  # fmt: skip
        return Reply(250, f"2.0.0 OK: {len(idents)} of the copies deferred, the gateway retries")

    @staticmethod
    async def _close(state: _State) -> None:
        hop, state.next_hop = state.next_hop, None
        if hop is not None:
            await hop.close()


_NOT_ALLOWED = "client not in cmcgate.gateway.allowedNetworks and not authenticated"


def _refused(session: Any, line: str, what: str, why: str) -> str:
    """Log a refusal at MAIL or RCPT once (the front does not log it again); return it."""
    peer = session.peer[0] if isinstance(session.peer, tuple) else session.peer
    level = logging.WARNING if line.startswith("4") or line == RELAY_DENIED else logging.INFO
    log.log(level, "client=%s %s refused: %s (%s)", peer, what, line, why)
    session.cmcgate_logged = line
    return line


def _forwardable(options: list[str]) -> list[str]:
    """ESMTP parameters the next hop should see (SIZE changes after transforming)."""
    return [o for o in options if o.split("=", 1)[0].upper() in {"BODY", "SMTPUTF8"}]


def _check_copies(copies: list[Copy], recipients: tuple[str, ...]) -> None:
    """Every accepted recipient must be in exactly one copy: nobody is dropped silently."""
    seen = [r for copy in copies for r in copy.recipients]
    if sorted(seen) != sorted(recipients):
        raise MessageRefused(Reply(451, "4.3.0 internal error: recipients not covered"))


def start_front(
    handler: GatewayHandler,
    host: str,
    port: int,
    *,
    max_message_size: int,
    tls_context: Any = None,
    require_starttls: bool = False,
    server_hostname: str | None = None,
    reuse_port: bool = False,
    max_sessions: int = 100,
    idle_timeout: float = 300.0,
) -> Any:
    """Start the SMTP front in a background thread; returns the aiosmtpd Controller.

    ``server_hostname`` is the name in the greeting; without it aiosmtpd calls
    ``socket.getfqdn()`` for every connection, a blocking DNS lookup on the event loop.

    DATA is read in blocks into one buffer (:mod:`gateway.smtp.front`): ``max_message_size``
    bounds it (552 beyond, also announced as ESMTP SIZE).  SMTPUTF8 and 8BITMIME are
    announced and passed on.  At most ``max_sessions`` clients are served at once (421 for
    more); a client idle for ``idle_timeout`` seconds is disconnected (421).  SMTP AUTH
    follows ``handler.front`` (users, required, over plaintext) as it is at each connection.
    """
    from gateway.smtp.front import FrontController

    controller = FrontController(
        handler,
        hostname=host,
        port=port,
        data_size_limit=max_message_size,
        enable_SMTPUTF8=True,
        decode_data=False,
        tls_context=tls_context,
        require_starttls=require_starttls,
        ident="cmcgate",
        server_hostname=server_hostname or _local_name(),
        # Several worker processes listen on one port; the kernel spreads connections.
        reuse_port=reuse_port,
        max_sessions=max_sessions,
        timeout=idle_timeout,
    )
    try:
        controller.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        where = f"[{host}]" if ":" in host else host
        raise ListenError(f"cannot listen on {where}:{port}: {reason}") from None
    return controller


def _local_name() -> str:
    """This host's name, looked up once (not per connection)."""
    import socket

    return socket.getfqdn()
