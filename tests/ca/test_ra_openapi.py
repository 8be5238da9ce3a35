"""The RA API's OpenAPI document: written from the route table, served, kept in docs/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ca.ra.api import ROUTES, RaApi
from ca.ra.openapi import build_document, document_text, openapi_path
from gateway.main import main
from tests.ca import schema_check
from tests.ca.ra_fixtures import RaRunning, start_ra

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def ra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaRunning]:
    running = start_ra(tmp_path_factory.mktemp("ra-openapi"))
    try:
        yield running
    finally:
        running.thread.stop()


def _registered() -> set[tuple[str, str]]:
    with ThreadPoolExecutor(1) as pool:
        app = RaApi(lambda: None, pool).app()  # type: ignore[arg-type,return-value]
    return {
        (route.method.lower(), openapi_path(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def test_every_registered_route_is_documented_and_nothing_else() -> None:
    document = build_document(ROUTES)
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert documented == _registered()
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_the_served_document_equals_docs_openapi_json(ra: RaRunning) -> None:
    answer = ra.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.json() == json.loads(DOCS.read_text())
    fix = "run: cmcgate ca openapi --out docs/openapi.json"
    assert DOCS.read_text() == document_text(ROUTES), fix


def test_the_document_names_bearer_auth_and_problem_responses() -> None:
    document = build_document(ROUTES)
    assert document["openapi"].startswith("3.1")
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    jwt_op = document["paths"]["/pki/api/v2/jwt"]["post"]
    assert jwt_op["security"] == [] and "401" in jwt_op["responses"]  # a wrong key
    orders = document["paths"]["/pki/api/v2/orders"]["post"]
    assert orders["security"] == [{"bearerAuth": []}]
    assert "application/problem+json" in orders["responses"]["403"]["content"]
    assert orders["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "client", "product"]  # fmt: skip


def test_cmcgate_ca_openapi_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "openapi"]) == 0
    assert capsys.readouterr().out == document_text(ROUTES)


def test_ra_listen_in_ca_yaml_starts_the_listener(tmp_path: Path) -> None:
    import requests

    from ca.service.http import CaService, ServiceThread
    from tests.ca.ra_fixtures import free_port, make_ca

    directory = tmp_path / "ca"
    make_ca(directory)
    port = free_port()
    with (directory / "ca.yaml").open("a") as handle:
        handle.write(f"\nra:\n  listen: 127.0.0.1:{port}\n")
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", free_port()))
    thread = ServiceThread(service)
    thread.start()
    try:
        assert service.ra_port == port
        bundle = tmp_path / "trust.pem"
        bundle.write_bytes((directory / "infra-ca.pem").read_bytes()
                           + (directory / "root-ca.pem").read_bytes())  # fmt: skip
        answer = requests.get(f"https://127.0.0.1:{port}/openapi.json", verify=str(bundle),
                              timeout=30)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["openapi"].startswith("3.1")
    finally:
        thread.stop()


def test_the_document_is_a_valid_openapi_3_1_description() -> None:
    """Refs resolve, path parameters are declared and required, operationIds are unique,
    every operation names its security (or none), every 4xx/5xx is problem+json, and the
    schemas use only keywords the suite's checker (and any JSON Schema validator) knows."""
    assert schema_check.document_problems(build_document(ROUTES)) == []
    assert schema_check.document_problems(json.loads(DOCS.read_text())) == []


def test_the_document_checker_finds_what_it_is_for() -> None:
    broken = build_document(ROUTES)
    op = broken["paths"]["/pki/api/v2/orders/{id}"]["get"]
    op["parameters"] = []
    op["responses"]["404"]["content"] = {"application/json": {"schema": {"$ref": "#/nope"}}}
    del broken["paths"]["/pki/api/v2/orders"]["get"]["security"]
    problems = "\n".join(schema_check.document_problems(broken))
    assert "path parameters [] != template ['id']" in problems
    assert "$ref #/nope does not resolve" in problems
    assert "404: errors must be application/problem+json" in problems
    assert "GET /pki/api/v2/orders: security is neither given" in problems


def test_every_json_answer_has_a_schema_and_errors_are_documented_per_operation() -> None:
    """Schemathesis' response_schema_conformance needs real schemas (not ``{}``); an
    operation that can answer 401/408/410/413 documents it (the key exchange answers 401
    without a Bearer token, a body route 408/413, the pick-up 410)."""
    document = build_document(ROUTES)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                for media, content in response.get("content", {}).items():
                    if media.endswith("json"):
                        assert content["schema"] not in ({}, None), (method, path, code)
            if "requestBody" in op:
                assert {"400", "408", "413"} <= set(op["responses"]), (method, path)
    assert "401" in document["paths"]["/pki/api/v2/jwt"]["post"]["responses"]
    assert "410" in document["paths"]["/pki/api/v2/p12/{token}"]["get"]["responses"]
