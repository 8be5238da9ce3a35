"""Property-based run of the RA API from its own /openapi.json: every operation, with a valid
JWT, a junk one and none, with path and query parameters and JSON bodies drawn from the
document's schemas (plus junk). No answer may be a 5xx, and every answer must be one the
document promises for the operation (what Schemathesis checks): its status is documented, its
content type is one documented for that status (problem+json for errors), and a JSON body
validates against the documented schema (:mod:`tests.ca.schema_check`).

A bounded run (a few hundred requests) is part of the default ``pytest``; ``make fuzz``
(``-m fuzz``) runs a longer one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.devservices import SmtpSink
from tests.ca import schema_check
from tests.ca.ra_fixtures import ACCOUNT, MANUAL, OTHER, SILVER, RaRunning, csr_pem, start_ra
from tests.fixtures.dns import DnsServer

ALL = ["read", "issue", "revoke", "approve", "publish", "comment", "domains"]
#: text as JSON can carry it: lone surrogates (\ud800) included, which hypothesis leaves out
TEXT = st.text(max_size=30) | st.text(st.characters(categories=["Cs"]) | st.characters(),
                                      max_size=5)  # fmt: skip
JUNK: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6,
)  # fmt: skip


class Context:
    def __init__(self, ra: RaRunning) -> None:
        self.ra = ra
        self.token = ra.jwt("fuzzer", ra.user("fuzzer", {ACCOUNT: ALL, OTHER: ["read"]}))
        issued = ra.post(
            "/orders",
            self.token,
            json={"client": ACCOUNT, "product": SILVER, "csr": csr_pem("fuzz@example.org")},
        ).json()
        pending = ra.post(
            "/orders",
            self.token,
            json={"client": ACCOUNT, "product": MANUAL, "csr": csr_pem("wait@example.org")},
        ).json()
        # fmt: skip
        self.known = {
            "id": [issued["id"], pending["id"], "1", "0", "ord-nope"],
            "serial": [issued["certificateSerial"], "00", "ff" * 20],
            "client": [ACCOUNT, OTHER, "nobody.ra"],
            "domain": ["example.org", "kunde.test", "xn--bcher-kva.test"],
            "token": ["A" * 43, "x"],
        }
        self.document = ra.get("/openapi.json").json()
        self.operations = [
            (method.upper(), path, op)
            for path, ops in self.document["paths"].items()
            for method, op in ops.items()
        ]
        self.csr = csr_pem("fuzz2@example.org")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """A CA whose DNS checks ask the local devdns server and whose mails go to a sink, so
    that domain checks and notifications run for real without leaving the machine."""
    tmp = tmp_path_factory.mktemp("ra-fuzz")
    dns, sink = DnsServer(tmp).start(), SmtpSink().start()
    ra = start_ra(tmp, ra_yaml=(
        f"ra:\n  dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout_seconds: 2}}\n"
        f"  mail: {{host: 127.0.0.1, port: {sink.port}}}\n"))  # fmt: skip
    try:
        yield Context(ra)
    finally:
        ra.thread.stop()
        sink.stop()
        dns.stop()


def from_schema(schema: dict[str, Any], ctx: Context) -> st.SearchStrategy[Any]:
    if "oneOf" in schema:
        return st.one_of([from_schema(s, ctx) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=12)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, ctx) for k, v in props.items() if k in required},
            optional={k: from_schema(v, ctx) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), ctx), max_size=3)
    if kind == "integer":
        return st.integers(-5, 10**20)
    if kind == "string":
        if schema.get("format") == "email":
            return st.emails() | st.text(max_size=20)
        return st.sampled_from([ACCOUNT, OTHER, SILVER, MANUAL, ctx.csr, "1y", "csr", "pkcs12",
                                "kunde.test", "fuzz@example.org"]) \
            | st.text(max_size=40) | TEXT  # fmt: skip
    return JUNK


def _segment(value: str) -> str:
    """A path parameter as one path segment: ``.`` and ``..`` percent-encoded too (a client
    would otherwise resolve them away and ask another path, as Schemathesis avoids)."""
    text = quote(value, safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


Request = tuple[str, str, dict[str, Any], dict[str, Any]]


@st.composite
def requests_for(draw: st.DrawFn, ctx: Context) -> Request:
    method, template, op = draw(st.sampled_from(ctx.operations))
    path = template
    query: dict[str, Any] = {}
    for param in op.get("parameters", []):
        name = param["name"]
        if param["in"] == "path":
            value = draw(
                st.sampled_from(ctx.known.get(name, ["x"])) | st.text(min_size=1, max_size=30)
            )
            path = path.replace("{" + name + "}", _segment(value))
        elif draw(st.booleans()):
            value = draw(from_schema(param["schema"], ctx).map(str) | st.text(max_size=20))
            # a URL carries UTF-8 bytes: a lone surrogate cannot even be sent
            query[name] = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    kwargs: dict[str, Any] = {"params": query}
    body = op.get("requestBody")
    if body is not None:
        schema = body["content"]["application/json"]["schema"]
        choice = draw(st.integers(0, 9))
        if choice < 7:
            kwargs["data"] = json.dumps(draw(from_schema(schema, ctx))).encode()
        elif choice < 9:
            kwargs["data"] = json.dumps(draw(JUNK)).encode()
        else:
            kwargs["data"] = draw(st.binary(max_size=64))
        kwargs["headers"] = {"Content-Type": "application/json"}
    token = draw(st.sampled_from([ctx.token, None, "junk.token.here"]))
    if token is not None:
        kwargs.setdefault("headers", {})["Authorization"] = f"Bearer {token}"
    return method, path, kwargs, op


def conformance(document: dict[str, Any], op: dict[str, Any], answer: Any) -> list[str]:
    """How ``answer`` breaks what the document promises for ``op`` (empty: it keeps it)."""
    status = answer.status_code
    documented = op["responses"]
    response = documented.get(str(status)) or documented.get(f"{str(status)[0]}XX") \
        or documented.get("default")  # fmt: skip
    if response is None:
        return [f"status {status} is not documented ({sorted(documented)}): {answer.text[:300]}"]
    content = response.get("content", {})
    media = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not content:
        return [] if not answer.content else [f"{status}: a body where none is documented"]
    if media not in content:
        return [f"{status}: content type {media!r} is not one of {sorted(content)}"]
    if media.endswith("json"):
        try:
            body = answer.json()
        except ValueError:
            return [f"{status}: the {media} body is not JSON"]
        return schema_check.errors(body, content[media].get("schema", {}), document)
    return []


def _check(ctx: Context, method: str, path: str, kwargs: dict[str, Any], op: Any) -> None:
    kwargs.setdefault("verify", ctx.ra.verify)
    answer = ctx.ra.session.request(method, ctx.ra.root + path, timeout=60, **kwargs)
    assert answer.status_code < 500, (method, path, kwargs, answer.text)
    if answer.status_code >= 400:
        assert answer.headers["Content-Type"].startswith("application/problem+json"), answer.text
        assert answer.json()["status"] == answer.status_code
    assert conformance(ctx.document, op, answer) == [], (method, path, kwargs)


def test_the_operations_are_all_drawn(ctx: Context) -> None:
    assert len(ctx.operations) >= 20


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_operation_answers_5xx_and_every_4xx_is_a_problem(
    ctx: Context, data: st.DataObject
) -> None:
    _check(ctx, *data.draw(requests_for(ctx)))


@pytest.mark.fuzz
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_the_ra_api_five_thousand_requests(ctx: Context, data: st.DataObject) -> None:
    _check(ctx, *data.draw(requests_for(ctx)))
