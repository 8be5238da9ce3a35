"""The request log of ``cmcgate ca serve``: one line per request, for CMC with the account,
the CMC status, the failInfo, the statusString and the serials issued::

    127.0.0.1 POST /ws/cmc -> 200 account=example.ra cmc=success serial=5e0c...
    127.0.0.1 POST /ws/cmc -> 200 account=example.ra cmc=failed failInfo=badIdentity detail='...'
    127.0.0.1 GET /crl/issuing.crl -> 200
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

from ca.service.cmc import CmcReply

log = logging.getLogger("ca.service.http")
#: What the CMC handler has to say about the request it is answering (same task as the
#: middleware, so the middleware sees what the handler set).
_CMC_NOTE: ContextVar[str | None] = ContextVar("cmc_note", default=None)


def note_cmc(text: str) -> None:
    """Add ``text`` to the log line of the request being handled."""
    _CMC_NOTE.set(text)


@web.middleware
async def request_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One log line per request: who, what, the HTTP status, and for CMC the account, CMC
    status, failInfo, statusString and issued serials (:func:`note_cmc`)."""
    status: int | str = "aborted"  # the client went away, or the server is stopping
    token = _CMC_NOTE.set(None)
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        peer = request.remote or "-"
        cmc = _CMC_NOTE.get()
        _CMC_NOTE.reset(token)
        if cmc is None:
            log.info("%s %s %s -> %s", peer, request.method, request.path, status)
        else:
            log.info("%s %s %s -> %s %s", peer, request.method, request.path, status, cmc)


def cmc_log_text(reply: CmcReply) -> str:
    fields = [f"account={reply.account or '-'}", f"cmc={reply.cmc_status or '-'}"]
    if reply.fail_info:
        fields.append(f"failInfo={reply.fail_info}")
    if reply.serials:
        fields.append(f"serial={','.join(reply.serials)}")
    if reply.detail and (reply.fail_info or reply.cmc_status != "success"):
        fields.append(f"detail={reply.detail!r}")
    return " ".join(fields)


__all__ = ["cmc_log_text", "note_cmc", "request_log"]
