"""The RA API's listener in ``cmcgate ca serve``: HTTPS with the service's TLS server
certificate, no client certificate (the JWT authenticates), the CMC listener's idle limit and
aiohttp's 8 KiB request-line and header limits (no RA request needs more).

A request aiohttp cannot even parse (request line or header too long, not HTTP) never reaches
the app's middleware; aiohttp would answer it in text/plain. The listener's request handler
answers it as an RFC 9457 problem like every other error of the API.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ca.ra.api import RaApi, problem_response
from ca.ra.services import RaServices
from config.errors import CmcgateError

IDLE_TIMEOUT = 60.0


class RaListenError(CmcgateError):
    """The RA API cannot listen (address in use, bad address)."""


class _ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; refuses if sent already
        if status >= 500:
            detail = "internal error (logged on the server)"
        else:  # the parser's message echoes the request: not repeated to the client
            detail = "the request could not be parsed (malformed, or a line over 8 KiB)"
        response = problem_response(status, detail, "")
        response.force_close()
        return response


class _ProblemServer(web.Server):
    """aiohttp's server, making :class:`_ProblemRequestHandler` connections."""

    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


def ra_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.verify_mode = ssl.CERT_NONE
    return context


async def start_ra_listener(
    current: Callable[[], RaServices],
    pool: Executor,
    listen: tuple[str, int],
    tls: tuple[Path, Path],
    *,
    body_timeout: float,
) -> tuple[web.AppRunner, int]:
    """Start the REST API on ``listen``; the runner (to clean up) and the bound port."""
    app = RaApi(current, pool, body_timeout=body_timeout).app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=30.0,
                           keepalive_timeout=IDLE_TIMEOUT)  # fmt: skip
    await runner.setup()
    assert runner.server is not None and type(runner.server) is web.Server
    runner.server.__class__ = _ProblemServer  # the protocol factory TCPSite hands the loop
    host, port = listen
    site = web.TCPSite(runner, host, port, ssl_context=ra_tls_context(*tls))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RaListenError(f"cannot listen on {host}:{port} (RA API): {exc.strerror}") from None
    return runner, int(runner.addresses[0][1])
