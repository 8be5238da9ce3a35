"""The RA REST API (``/pki/api/v2/...``, after the SwissSign RA API v2) as an aiohttp app.

Every route comes from one table (:data:`ROUTES`); handlers are blocking functions run in the
service's thread pool. Authentication is a Bearer JWT (:mod:`ca.ra.auth`) on everything but
``POST /pki/api/v2/jwt``, ``GET /openapi.json`` and the PKCS#12 pick-up (its token is the
credential). Every error, aiohttp's own 404/405/413 included, is an RFC 9457
``application/problem+json``; nothing unexpected reaches a client (500 with a generic detail,
the trace is logged). Every call leaves one ``api_call`` record in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from ca.authority import OrderRefused
from ca.keys import KeyBackendError
from ca.ra import api_admin, api_certs, api_orders, api_ra
from ca.ra.api_base import ApiProblem, Call, Reply, Route
from ca.ra.api_schemas import ref
from ca.ra.auth import AuthError
from ca.ra.openapi import build_document
from ca.ra.services import RaServices
from ca.store.audit import append_audit
from ca.store.model import (
    IllegalTransition,
    RevocationRefused,
    StoreConflict,
    StoreError,
    UnknownCertificate,
    UnknownJob,
    UnknownOrder,
)
from config.errors import CmcgateError

log = logging.getLogger("ca.ra.api")
PROBLEM_TYPE = "application/problem+json"
#: a request body (JSON, a CSR inside) is at most this big
MAX_BODY = 256 * 1024
#: OrderRefused categories -> (HTTP status, CMC failInfo name)
#: the CMC failInfo name of each OrderRefused category, given with the problem
FAIL_INFO = {
    "bad_identity": "badIdentity",
    "bad_request": "badRequest",
    "pop_failed": "popFailed",
    "bad_alg": "badAlg",
    "unavailable": "tryLater",
    "internal": "internalCAError",
}


def exchange_jwt(call: Call) -> Reply:
    """The manual's JWT: here the RA signs it in exchange for the key (text/plain answer)."""
    user = call.req("userName", limit=128)
    token = call.services.auth.exchange(user, call.req("apiKey", limit=256))
    call.audit["user"] = user
    return Reply(body=token.encode("ascii"), content_type="text/plain")


def openapi_document(call: Call) -> Reply:
    return Reply(json=build_document(ROUTES))


JWT_BODY = {
    "type": "object",
    "required": ["userName", "apiKey"],
    "properties": {"userName": {"type": "string"}, "apiKey": {"type": "string"}},
}
BASE_ROUTES = (
    Route("POST", "/jwt", exchange_jwt, "Exchange an API key for a JWT (8 h)", "auth",
          auth=False, body=JWT_BODY, produces=("text/plain",), errors=(401,)),
    Route("GET", "/openapi.json", openapi_document, "This document", "auth", auth=False,
          absolute=True, returns=ref("OpenApiDocument")),
)  # fmt: skip
#: every route of the API; the wiring of the RA's other parts appends theirs here
ROUTES: tuple[Route, ...] = (
    *BASE_ROUTES,
    *api_orders.ROUTES,
    *api_certs.ROUTES,
    *api_admin.ROUTES,
    *api_ra.ROUTES,
)


def problem_of(exc: BaseException) -> tuple[int, str, dict[str, Any]]:
    """(status, detail, extra members) for an exception a handler raised."""
    if isinstance(exc, ApiProblem):
        return exc.status, str(exc), dict(exc.extra)
    if isinstance(exc, OrderRefused):
        status = exc.http_status
        extra = {
            "orderId": exc.order_id,
            "failInfo": FAIL_INFO.get(exc.category, "internalCAError"),
        }
        if status >= 500:
            log.error("order %s refused: %s", exc.order_id, exc)
            return status, "the CA could not complete the order; try later", extra
        return status, str(exc), extra
    if isinstance(exc, UnknownOrder | UnknownCertificate | UnknownJob):
        return 404, str(exc), {}
    if isinstance(exc, IllegalTransition | StoreConflict):
        return 409, str(exc), {}
    if isinstance(exc, RevocationRefused):
        return 400, str(exc), {}
    code = getattr(exc, "status", None)
    if isinstance(exc, CmcgateError) and isinstance(code, int) and 400 <= code < 600:
        if code < 500:
            return code, str(exc), {}
        # the operator's business (DNS server, SMTP relay, file paths): logged, not answered
        log.error("%s: %s", type(exc).__name__, exc)
        order_id = getattr(exc, "order_id", None)
        detail = "temporarily unavailable; try later" if code == 503 else "internal error"
        return code, f"{detail} (logged on the server)", {"orderId": order_id} if order_id else {}
    if isinstance(exc, StoreError) and not isinstance(exc.__cause__, SQLAlchemyError):
        return 400, str(exc), {}
    if isinstance(exc, StoreError | KeyBackendError):
        log.error("back end unavailable: %s", exc)
        return 503, "the CA's database or key store is unavailable; try later", {}
    log.error("unexpected error", exc_info=exc)
    return 500, "internal error (logged on the server)", {}


def problem_response(
    status: int, detail: str, instance: str, extra: dict[str, Any] | None = None
) -> web.Response:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail, "instance": instance[:1024]}  # fmt: skip
    body.update({k: v for k, v in (extra or {}).items() if v is not None})
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_TYPE, charset=None
    )


@dataclass
class _CallState:
    """Who called and what the audit record names; set by the middleware, filled by the
    handler (same task, so a context variable carries it)."""

    actor: str = "anonymous"
    audit: dict[str, Any] = field(default_factory=dict)


_STATE: ContextVar[_CallState] = ContextVar("ra_call")


class RaApi:
    """The REST app of one ``ca serve``; ``current()`` gives the services of the current CA."""

    def __init__(
        self,
        current: Callable[[], RaServices],
        pool: Executor,
        *,
        body_timeout: float = 20.0,
    ) -> None:
        self.current = current
        self.pool = pool
        self.body_timeout = body_timeout
        #: the static part of a path whose parameter is a credential -> its template
        self._secret_paths = {r.full_path.split("{")[0]: r.full_path for r in ROUTES
                              if r.secret_path}  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        for route in ROUTES:
            app.router.add_route(route.method, route.full_path, self._handler(route))
        return app

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def _subject(self, request: web.Request) -> str:
        """``METHOD path`` for the audit record and the log line; below a path whose parameter
        is a credential (the p12 pick-up token) the template only — also when the method or
        the rest of the path matches no route (405, 404): the token is still in it."""
        path = request.path
        collapsed = re.sub("/+", "/", path)
        for prefix, template in self._secret_paths.items():
            if collapsed.startswith(prefix):
                path = template
        return f"{request.method} {path}"[:250]

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Problems instead of tracebacks or HTML, one audit record and one log line per call."""
        state = _CallState()
        token = _STATE.set(state)
        details = state.audit
        subject = self._subject(request)
        headers: dict[str, str] = {}
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            extra = {"allow": exc.headers.get("Allow")} if exc.status == 405 else {}
            detail = exc.reason if exc.status != 404 else f"no such resource: {request.path}"
            response = problem_response(exc.status, detail, request.path, extra)
            if exc.status == 405:
                headers["Allow"] = exc.headers.get("Allow", "")
        except Exception as exc:  # noqa: BLE001 - rendered as a problem, traced in the log
            status, detail, extra = problem_of(exc)
            response = problem_response(status, detail, request.path, extra)
            if isinstance(exc, AuthError):
                headers["WWW-Authenticate"] = exc.challenge
        finally:
            _STATE.reset(token)
        response.headers.update(headers)
        details["status"] = response.status
        actor = state.actor
        try:
            store = self.current().ca.store
            await self._run(lambda: append_audit(store, "api_call", actor, subject, details))
        except Exception as exc:  # noqa: BLE001 - the call is answered; the failure is logged
            log.error("audit record of %s failed: %s", subject, exc)
        log.info("%s %s -> %s user=%s", request.remote or "-", subject, response.status, actor)
        return response

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            services = self.current()
            principal = None
            if route.auth:
                header = request.headers.get("Authorization")
                principal = await self._run(services.auth.authenticate, header)
                _STATE.get().actor = principal.user
            body = await self._body(request) if route.body is not None else None
            call = Call(
                ca=services.ca, services=services, principal=principal,
                params=dict(request.match_info), query=_first_values(request), body=body,
                audit=_STATE.get().audit,
            )  # fmt: skip
            reply: Reply = await self._run(route.handler, call)
            if not route.auth and "user" in call.audit:
                _STATE.get().actor = str(call.audit.pop("user"))
            return _render(reply)

        handle.__name__ = route.operation_id
        return handle

    async def _body(self, request: web.Request) -> Any:
        try:
            raw = await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            raise ApiProblem(408, "request body too slow") from None
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise ApiProblem(400, "the request body is not JSON") from None
        try:  # JSON may escape a lone surrogate (\ud800), which no database or mail can take
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError):
            raise ApiProblem(400, "the request body holds a lone surrogate (\\uD800-\\uDFFF)"
                             " that is no Unicode character") from None  # fmt: skip
        return body


def _first_values(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.query.items():
        out.setdefault(key, value)
    return out


def _render(reply: Reply) -> web.Response:
    if reply.body is not None:
        response = web.Response(status=reply.status, body=reply.body)
        response.content_type = reply.content_type
    else:
        response = web.Response(
            status=reply.status, text=json.dumps(reply.json), content_type="application/json"
        )
    response.headers.update(reply.headers)
    return response


__all__ = ["ROUTES", "RaApi", "problem_of", "problem_response"]
