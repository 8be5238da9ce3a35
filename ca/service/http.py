"""``cmcgate ca serve``: the bundled CA's CMC endpoint (HTTPS, client certificates required)
and its CRL/AIA files (plain HTTP, where the certificates' URLs point).

HTTPS (``--listen``, default 127.0.0.1:8443), TLS server certificate from the
infrastructure CA (:mod:`ca.service.certs`), client certificate required and verified against
the infrastructure CA:

* ``POST /ws/cmc?account=ID&product=ID[&validity=1y]`` — the SwissSign/Totemo URL shape;
* ``POST /cmc[?product=ID]`` — RFC 5273's plain path: the account is the client
  certificate's, the product the account's only one unless named;
* ``GET`` on either path with ``&message=BASE64`` — the same request as base64 of its DER in
  the query, as the gateway's client sends it with ``requestType=GET``; same client
  certificate check, same answer as POST (400 when ``message`` is missing, repeated or not
  base64);
* ``GET /crl/NAME.crl``, ``GET /certs/NAME.cer`` — also served here.

Plain HTTP (``--http-listen``, default ``ca.listen`` of ca.yaml) serves only ``/crl`` and
``/certs``. Before either port opens, orders a stopped CA left in progress are finished or
failed (:mod:`ca.recovery`). Requests run in a small thread pool (the CA, HSM and database
calls block).
SIGTERM/SIGINT stop accepting and let in-flight requests finish; SIGHUP re-reads ca.yaml.
No stack trace ever reaches a client: anything unexpected is logged and answered with a
short text (HTTP) or internalCAError (CMC).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import ssl
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority import CertificateAuthority
from ca.periodic import add_periodic
from ca.ra.challenges import schedule_challenge_expiry
from ca.ra.confirm_page import add_confirmation_routes
from ca.ra.notify import drain_outbox, schedule_expiry_warnings
from ca.ra.services import RaServices
from ca.recovery import recover
from ca.service.certs import ServiceMaterial, ensure_service_material, write_infra_crl
from ca.service.cmc import MAX_BODY, CmcService, Query, decode_get_message
from ca.service.log import cmc_log_text, note_cmc, request_log
from config.errors import CmcgateError
from config.values import is_number

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
SHUTDOWN_TIMEOUT = 30.0
CRL_REFRESH_SECONDS = 3600
#: how long a stopping service waits for order confirmations still being sent (rows stay
#: FAILED "not sent yet", to be resent, when the SMTP server takes longer)
OUTBOX_DRAIN_SECONDS = 10.0
#: the query parameter of a GET request (:attr:`cmc.transport.http.TransportSettings.get_parameter`)
GET_PARAMETER = "message"
#: HTTP request line limit: a GET carries the whole PKI Request, base64 and percent-encoded
MAX_REQUEST_LINE = 64 * 1024
#: Seconds a client has to send a whole request body (slowloris: headers sent, body trickled).
BODY_TIMEOUT = 20.0
#: Seconds a connection may stay without a complete request: bounds slow headers and idle
#: keep-alive connections (aiohttp's own default is an hour).
IDLE_TIMEOUT = 60.0


class ServeError(CmcgateError):
    """The service cannot start (no CA, bad listen address, port in use)."""


def parse_listen(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    if not is_number(port) or not 0 <= int(port) <= 65535:
        raise ServeError(f"listen address {text!r} must be HOST:PORT")
    return host, int(port)


def server_context(material: ServiceMaterial) -> ssl.SSLContext:
    """TLS 1.2+, our server certificate, client certificates from the infrastructure CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(material.tls_cert_file), str(material.tls_key_file))
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(
        cadata=material.infra_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
    return context


def _peer_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der) if der else None


@web.middleware
async def _no_traces(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return web.Response(status=500, text="internal error (logged on the server)\n")


@dataclass
class CaService:
    """One running service: the CA, its CMC handler, the listeners."""

    directory: Path
    https: tuple[str, int] = ("127.0.0.1", 8443)
    http: tuple[str, int] | None = None
    hosts: list[str] = field(default_factory=list)
    workers: int = 4
    body_timeout: float = BODY_TIMEOUT
    #: the RA REST API's HTTPS address (None: ``ra.listen`` of ca.yaml, unset: no listener)
    ra: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        self._ca: CertificateAuthority | None = None
        self._retired: list[CertificateAuthority] = []
        self._service: CmcService | None = None
        self._runners: list[web.AppRunner] = []
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cmc")
        self._lock = threading.Lock()
        self.https_port = 0
        self.http_port = 0
        self.ra_port = 0
        self._ra_services: RaServices | None = None
        self._scheduler: Any = None
        #: files answered from /crl and /certs, by path (200s only)
        self.served: Counter[str] = Counter()

    # -- the CA and its reload ------------------------------------------------------------
    def _open(self) -> CmcService:
        ca_yaml = self.directory / "ca.yaml"
        if not ca_yaml.exists():
            raise ServeError(f"{ca_yaml}: no CA here (run `cmcgate ca init`)")
        ca = CertificateAuthority.open(ca_yaml)
        try:
            material = ensure_service_material(ca, [self.https[0], *self.hosts])
        except BaseException:
            ca.close()
            raise
        self.material = material
        with self._lock:
            if self._ca is not None:
                self._retired.append(self._ca)  # in-flight requests may still use it
            self._ca = ca
            self._ra_services = RaServices.build(ca)
            self._service = CmcService(ca, material.signer, material.infra_cert)
        return self._service

    def reload(self) -> None:
        """Re-read ca.yaml (accounts, products, ...); a broken file keeps the old settings."""
        try:
            self._open()
            log.info("ca.yaml reloaded")
        except Exception as exc:  # noqa: BLE001 - keep serving with what we have
            log.error("reload failed, keeping the previous settings: %s", exc)

    @property
    def ca(self) -> CertificateAuthority:
        assert self._ca is not None
        return self._ca

    # -- HTTP handlers ------------------------------------------------------------------------
    async def _cmc(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY:  # refused before a byte is read
            note_cmc(f"body of {request.content_length} bytes refused")
            too_large = web.Response(
                status=413, text=f"a PKI Request is at most {MAX_BODY} bytes\n"
            )
            too_large.force_close()
            return too_large
        try:
            body = await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            note_cmc(f"body not received within {self.body_timeout:g} s")
            answer = web.Response(status=408, text="request body too slow\n")
            answer.force_close()
            return answer
        return await self._answer(
            request,
            body,
            request.headers.get("Content-Type"),
            transfer_encoding=request.headers.get("Content-Transfer-Encoding"),
        )

    async def _cmc_get(self, request: web.Request) -> web.Response:
        """RFC 5273 §3 GET: the request as base64 in ``?message=`` (what
        :class:`cmc.transport.http.CmcTransport` sends with ``requestType=GET``)."""
        values = request.query.getall(GET_PARAMETER, [])
        if len(values) != 1:
            return web.Response(
                status=400,
                text=f"send one PKI Request as base64 in ?{GET_PARAMETER}= (or POST it)\n",
            )
        try:
            der = decode_get_message(values[0])
        except ValueError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        return await self._answer(request, der, None, typed_by_content=True)

    async def _answer(
        self,
        request: web.Request,
        body: bytes,
        content_type: str | None,
        *,
        transfer_encoding: str | None = None,
        typed_by_content: bool = False,
    ) -> web.Response:
        service = self._service
        assert service is not None
        query = Query(
            account=request.query.get("account") or None,
            product=request.query.get("product") or None,
            validity=request.query.get("validity") or None,
        )
        if request.path.startswith("/ws/") and query.account is None:
            return web.Response(status=400, text="name the account: ?account=ID&product=ID\n")
        reply = await asyncio.get_running_loop().run_in_executor(
            self._pool,
            lambda: service.handle(
                body,
                content_type,
                query,
                _peer_certificate(request),
                transfer_encoding=transfer_encoding,
                typed_by_content=typed_by_content,
            ),
        )
        note_cmc(cmc_log_text(reply))
        return web.Response(
            status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
        )

    async def _file(self, request: web.Request) -> web.Response:
        folder, suffix, media = {
            "crl": ("crl", ".crl", "application/pkix-crl"),
            "certs": ("certs", ".cer", "application/pkix-cert"),
        }[request.match_info["folder"]]
        name = request.match_info["name"]
        if not name.endswith(suffix) or not _FILE_NAME.match(name):
            raise web.HTTPNotFound(text="not found\n")
        path = self.directory / folder / name
        try:
            data = await asyncio.get_running_loop().run_in_executor(self._pool, path.read_bytes)
        except OSError:
            raise web.HTTPNotFound(text="not found\n") from None
        self.served[request.path] += 1
        return web.Response(body=data, headers={"Content-Type": media})

    def _app(self, *, cmc: bool) -> web.Application:
        app = web.Application(
            middlewares=[request_log, _no_traces], client_max_size=MAX_BODY + 4096
        )
        app.router.add_get(r"/{folder:crl|certs}/{name}", self._file)
        if not cmc:  # the mailbox holder's email-challenge page (ca.ra.confirm_page)
            add_confirmation_routes(app, lambda: getattr(self, "ra_services", None))
        if cmc:
            for path in ("/ws/cmc", "/cmc"):
                app.router.add_post(path, self._cmc)
                app.router.add_get(path, self._cmc_get, allow_head=False)
        return app

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._open)
        # orders a killed predecessor left half-way are settled before the port opens
        await loop.run_in_executor(self._pool, lambda: recover(self.ca))
        if self.http is None:
            settings = self.ca.settings.ca
            self.http = (settings.listen_host, settings.listen_port)
        for cmc, (host, port) in ((True, self.https), (False, self.http)):
            runner = web.AppRunner(
                self._app(cmc=cmc), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                max_line_size=MAX_REQUEST_LINE,  # a GET request carries the CMC message
                keepalive_timeout=IDLE_TIMEOUT,
            )  # fmt: skip
            await runner.setup()
            context = server_context(self.material) if cmc else None
            site = web.TCPSite(runner, host, port, ssl_context=context)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            self._runners.append(runner)
            bound = runner.addresses[0][1]
            if cmc:
                self.https_port = bound
            else:
                self.http_port = bound
        await self._start_ra()
        self._start_scheduler()
        log.info("CMC over https on %s:%d, CRL/AIA over http on %s:%d",
                 self.https[0], self.https_port, self.http[0], self.http_port)  # fmt: skip

    async def _start_ra(self) -> None:
        """The RA REST API on ``ra`` (``--ra-listen``) or ``ra.listen`` of ca.yaml, if set."""
        listen = self.ra or self.ca.settings.ra.listen
        if listen is None:
            return
        from ca.ra.mount import start_ra_listener

        runner, self.ra_port = await start_ra_listener(
            self._current_ra, self._pool, listen,
            (self.material.tls_cert_file, self.material.tls_key_file),
            body_timeout=self.body_timeout,
        )  # fmt: skip
        self._runners.append(runner)
        log.info("RA API over https on %s:%d", listen[0], self.ra_port)

    @property
    def ra_services(self) -> RaServices | None:
        """The RA services of the current CA (rebuilt on reload); None before the start."""
        return self._ra_services

    @ra_services.setter
    def ra_services(self, services: RaServices | None) -> None:
        self._ra_services = services

    def _current_ra(self) -> RaServices:
        assert self._ra_services is not None
        return self._ra_services

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone="UTC")
        add_periodic(scheduler, "crl", "CRL refresh", self._refresh_crls,
                     seconds=CRL_REFRESH_SECONDS)  # fmt: skip
        from ca.publish.publisher import schedule_publisher

        schedule_publisher(scheduler, lambda: self.ca)  # LDAP publication, when ca.ldap is set
        from ca.ra.cleanup import schedule_cleanup
        from ca.ra.keygen import schedule_p12_purge

        schedule_p12_purge(scheduler, lambda: self.ca)  # unpicked PKCS#12 files, daily
        schedule_cleanup(scheduler, lambda: self.ca)  # lost orders (UNKNOWN), overdue renewals
        from ca.ra.domains import schedule_domain_checks

        schedule_domain_checks(scheduler, lambda: self.ca)  # DNS domain re-checks (ra.domains)
        schedule_expiry_warnings(scheduler, lambda: self.ca)  # ca.ra.notify, daily
        schedule_challenge_expiry(scheduler, lambda: self.ca)  # ca.ra.challenges
        extra = getattr(self, "extra_jobs", None)
        if extra is not None:
            extra(scheduler, self)
        scheduler.start()
        self._scheduler = scheduler

    def _refresh_crls(self) -> None:
        ca = self.ca
        ca.write_crl()
        write_infra_crl(ca, self.material.infra_cert, now=datetime.now(UTC))

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests, close the CA."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self._pool.shutdown(wait=True)
        drain_outbox(OUTBOX_DRAIN_SECONDS)  # order confirmations still being sent
        for ca in [*self._retired, *([self._ca] if self._ca else [])]:
            ca.close()
        self._retired.clear()
        self._ca = None

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads ca.yaml."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        await self.start()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.run_in_executor(self._pool, self.reload)
        )
        print(
            f"cmcgate CA: CMC on https://{self.https[0]}:{self.https_port}/ws/cmc, "
            f"CRL/AIA on http://{self.http[0] if self.http else '?'}:{self.http_port}",
            flush=True,
        )
        try:
            await stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()


class ServiceThread:
    """A :class:`CaService` on its own event loop in a thread (tests, benchmarks, demo)."""

    def __init__(self, service: CaService) -> None:
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> CaService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(timeout=60)
        return self.service

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


__all__ = ["CaService", "ServeError", "ServiceThread", "parse_listen"]
