"""What the RA API's handlers are made of: the route table entry, the call, the reply.

A handler is a plain blocking function ``(Call) -> Reply``: it runs in the service's thread
pool (database, HSM, DNS and SMTP calls block), knows nothing of aiohttp, and reports bad input
by raising :class:`ApiProblem` (or any ``CmcgateError`` with a ``status``). The same
:class:`Route` entries register the aiohttp routes and write the OpenAPI document
(:mod:`ca.ra.openapi`), so the two cannot drift.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ca.ra.auth import Forbidden, Principal
from ca.store.search import Page
from config.errors import CmcgateError
from config.values import is_number

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority
    from ca.ra.services import RaServices

PREFIX = "/pki/api/v2"
_CAMEL = re.compile(r"_([a-z0-9])")


class ApiProblem(CmcgateError):
    """An RFC 9457 problem the handler wants answered: ``status``, ``title`` and extra members."""

    def __init__(self, status: int, detail: str, *, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.extra = extra


class NotFound(ApiProblem):
    def __init__(self, detail: str) -> None:
        super().__init__(404, detail)


@dataclass(frozen=True)
class Param:
    """A query parameter (path parameters come from the route's path)."""

    name: str
    description: str
    type: str = "string"  # string | integer
    enum: tuple[str, ...] = ()
    format: str | None = None  # date-time, email...
    #: the range an integer must be in (documented: a value outside is a 400)
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None


#: a serial number as the searches take it: hex digits, optionally in colon-separated groups
SERIAL_PATTERN = "^[0-9A-Fa-f]+(:[0-9A-Fa-f]+)*$"
#: ``limit`` and ``offset`` of every search (the ranges :meth:`Call.page` enforces)
PAGING = (
    Param("limit", "at most this many (1..1000, default 100)", "integer", minimum=1,
          maximum=1000),
    Param("offset", "skip this many", "integer", minimum=0, maximum=10**9),
)  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    #: below :data:`PREFIX` unless ``absolute``
    path: str
    handler: Callable[[Call], Reply]
    summary: str
    tag: str
    #: the permission the handler checks (documentation; the handler enforces it)
    permission: str | None = None
    auth: bool = True
    query: tuple[Param, ...] = ()
    #: JSON Schema of the request body (an object), None: no body
    body: Mapping[str, Any] | None = None
    #: success status and media types of the answer
    success: int = 200
    produces: tuple[str, ...] = ("application/json",)
    #: JSON Schema of a JSON success answer (:mod:`ca.ra.api_schemas`)
    returns: Mapping[str, Any] | None = None
    #: error statuses this route answers beyond those every route may (documentation)
    errors: tuple[int, ...] = ()
    #: a path parameter is a credential (p12 pick-up token): audit and log the template only
    secret_path: bool = False
    absolute: bool = False

    @property
    def full_path(self) -> str:
        return self.path if self.absolute else PREFIX + self.path

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.lstrip("_")


@dataclass
class Call:
    """One request, as a handler sees it."""

    ca: CertificateAuthority
    services: RaServices
    principal: Principal | None
    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any
    #: what the audit record of this call should name (account, order, serial)
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> Principal:
        assert self.principal is not None
        return self.principal

    @property
    def actor(self) -> str:
        return f"api:{self.user.user}"

    # -- access -------------------------------------------------------------------------------
    def account(self, account: str, permission: str = "read", *, what: str = "") -> None:
        """Refuse unless the caller may ``permission`` on ``account``: 404 when they hold no
        grant there (existence is not revealed), 403 when the grant lacks the permission."""
        self.audit.setdefault("account", account)
        if not self.user.sees(account):
            raise NotFound(what or f"no client {account!r}")
        if not self.user.allows(permission, account):
            raise Forbidden(f"{permission} permission on client {account} is needed")

    # -- input --------------------------------------------------------------------------------
    def text(self, name: str, *, required: bool = True, limit: int = 1024) -> str | None:
        """A string member of the JSON body."""
        if not isinstance(self.body, dict):
            raise ApiProblem(400, "the request body must be a JSON object")
        value = self.body.get(name)
        if value is None:
            if required:
                raise ApiProblem(400, f"{name} is required")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise ApiProblem(400, f"{name} must be a non-empty string")
        if len(value) > limit:
            raise ApiProblem(400, f"{name} is longer than {limit} characters")
        return value

    def req(self, name: str, *, limit: int = 1024) -> str:
        value = self.text(name, limit=limit)
        assert value is not None
        return value

    def arg(self, name: str) -> str | None:
        value = self.query.get(name)
        return value if value else None

    def arg_int(self, name: str, default: int, low: int, high: int) -> int:
        text = self.query.get(name)
        if text is None or text == "":
            return default
        if not is_number(text.strip()) or not low <= int(text) <= high:
            raise ApiProblem(400, f"{name} must be a whole number {low}..{high}")
        return int(text)

    def arg_serial(self, name: str) -> str | None:
        """A serial number filter: hex digits, colons between groups (:data:`SERIAL_PATTERN`;
        ``int(x, 16)`` also took ``0x1f``, ``-1``, ``1_0`` and spaces)."""
        text = self.arg(name)
        if text is not None and not re.fullmatch(SERIAL_PATTERN, text):
            raise ApiProblem(400, f"{name} must be hexadecimal (colons between groups allowed)")
        return text

    def page(self) -> Page:
        """``limit`` and ``offset`` (:data:`PAGING`)."""
        return Page(self.arg_int("limit", 100, 1, 1000), self.arg_int("offset", 0, 0, 10**9))

    def arg_time(self, name: str) -> datetime | None:
        text = self.arg(name)
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            # in UTC here: 9999-12-31T23:59-23:59 overflows, and is bad input, not a 503
            # from the database driver that would otherwise convert it
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):
            raise ApiProblem(400, f"{name} must be an ISO 8601 date or date-time") from None

    def arg_enum(self, name: str, kind: type[enum.Enum]) -> Any:
        text = self.arg(name)
        if text is None:
            return None
        try:
            return kind(text.upper())
        except ValueError:
            names = ", ".join(str(m.value) for m in kind)
            raise ApiProblem(400, f"{name} must be one of {names}") from None


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """JSON-ready form of views: camelCase members, ISO 8601 UTC times, base64 bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            _CAMEL.sub(lambda m: m.group(1).upper(), f.name): plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
