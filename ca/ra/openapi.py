"""The OpenAPI 3.1 document of the RA API, written from the same route table that registers
the routes (:data:`ca.ra.api.ROUTES`), so the document and the server cannot drift.

Served unauthenticated at ``/openapi.json``, kept in docs/openapi.json, printed by
``cmcgate ca openapi``. Every error is an RFC 9457 ``application/problem+json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ca.ra.api_base import Route
from ca.ra.api_schemas import SCHEMAS

VERSION = "2.0.0"
_PATH_PARAM = re.compile(r"{([A-Za-z0-9_]+)(?::[^}]*)?}")

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "orderId": {"type": "string"},
        "failInfo": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}
#: what any route may answer (401 only with ``auth``; a route lists more in ``errors``)
_ERRORS = {
    400: "bad input (details in the problem)",
    401: "no, an expired or an invalid token",
    403: "the permission is missing, or the CA refused the identity",
    404: "unknown, or not visible to this user",
    409: "the object is not in a state that allows this",
    503: "a back end (database, HSM, DNS, SMTP) is unavailable: try later",
}
#: what only some routes answer: those with a body (408, 413) or naming it in ``errors``
_MORE_ERRORS = {
    408: "the request body did not arrive in time",
    410: "gone: picked up already, purged or expired",
    413: "the request body is larger than 256 KiB",
}


def openapi_path(path: str) -> str:
    """aiohttp's ``{name}`` / ``{name:regex}`` as OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def path_parameters(path: str) -> list[str]:
    return _PATH_PARAM.findall(path)


def _operation(route: Route) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in path_parameters(route.path)
    ]
    for param in route.query:
        schema: dict[str, Any] = {"type": param.type}
        if param.enum:
            schema["enum"] = list(param.enum)
        if param.format:
            schema["format"] = param.format
        for keyword in ("minimum", "maximum", "pattern"):
            if getattr(param, keyword) is not None:
                schema[keyword] = getattr(param, keyword)
        params.append({"name": param.name, "in": "query", "required": False,
                       "description": param.description, "schema": schema})  # fmt: skip
    success: dict[str, Any] = {
        "description": "OK" if route.success == 200 else "done",
        "content": {media: {"schema": _success_schema(route, media)} for media in route.produces},
    }
    responses: dict[str, Any] = {str(route.success): success}
    problem = {
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    }
    codes = {c for c in _ERRORS if c != 401 or route.auth} | set(route.errors)
    if route.body is not None:
        codes |= {408, 413}
    for code in sorted(codes):
        text = _ERRORS.get(code) or _MORE_ERRORS[code]
        responses[str(code)] = {"description": text, **problem}
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": params,
        "responses": responses,
    }
    if route.permission:
        op["description"] = f"Needs the `{route.permission}` permission on the client."
    op["security"] = [{"bearerAuth": []}] if route.auth else []
    if route.body is not None:
        op["requestBody"] = {
            "required": bool(route.body.get("required")),
            "content": {"application/json": {"schema": body_schema(route.body)}},
        }
    return op


def body_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A request body's schema as the handlers read it (:meth:`ca.ra.api_base.Call.text`): a
    required string member must not be empty, an optional member may be ``null`` (the same
    as leaving it out)."""
    required = set(schema.get("required", ()))
    properties = {}
    for name, member in schema.get("properties", {}).items():
        member = dict(member)
        kind = member.get("type")
        if name in required and kind == "string":
            member.setdefault("minLength", 1)
        elif name not in required and isinstance(kind, str):
            member["type"] = [kind, "null"]
            if "enum" in member:
                member["enum"] = [*member["enum"], None]
        properties[name] = member
    return {**schema, "properties": properties}


def _success_schema(route: Route, media: str) -> dict[str, Any]:
    if media == "application/json":
        return dict(route.returns or {"type": "object"})
    if media.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "contentMediaType": media}


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(openapi_path(route.full_path), {})[route.method.lower()] = _operation(
            route
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cmcgate RA API",
            "version": VERSION,
            "description": "Orders, certificates, domains and notifications of the cmcgate CA "
            "(after the SwissSign RA API v2). Exchange an API key for a JWT at "
            "POST /pki/api/v2/jwt and send it as `Authorization: Bearer <JWT>`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Problem": PROBLEM, **SCHEMAS},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def document_text(routes: Iterable[Route]) -> str:
    """The document as docs/openapi.json holds it (sorted keys, 2-space indent, final NL)."""
    return json.dumps(build_document(routes), indent=2, sort_keys=True) + "\n"
