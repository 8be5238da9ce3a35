"""The RA API's listener in ``cmcgate ca serve``: HTTPS with the service's TLS server
certificate, no client certificate (the JWT authenticates), the same idle and request-line
limits as the CMC listener."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from aiohttp import web

from ca.ra.api import RaApi
from ca.ra.services import RaServices
from config.errors import CmcgateError

IDLE_TIMEOUT = 60.0


class RaListenError(CmcgateError):
    """The RA API cannot listen (address in use, bad address)."""


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
    host, port = listen
    site = web.TCPSite(runner, host, port, ssl_context=ra_tls_context(*tls))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RaListenError(f"cannot listen on {host}:{port} (RA API): {exc.strerror}") from None
    return runner, int(runner.addresses[0][1])
