"""The RA REST API over real HTTPS: orders to certificates `openssl` accepts, revocation into
the CRL, permissions and tenant isolation, problem+json errors, an audit record per call."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ca.store.audit import audit_records
from gateway.main import main
from tests.ca.ra_fixtures import (
    ACCOUNT,
    MANUAL,
    OTHER,
    OTHER_SILVER,
    SILVER,
    RaRunning,
    csr_pem,
    start_ra,
)

ALL = ["read", "issue", "revoke", "approve", "publish", "comment", "domains"]


@dataclass
class Users:
    admin: str  # every permission on example.ra
    reader: str  # read only on example.ra
    other: str  # every permission on other.ra


@pytest.fixture(scope="module")
def ra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaRunning]:
    running = start_ra(tmp_path_factory.mktemp("ra-api"))
    try:
        yield running
    finally:
        running.thread.stop()


@pytest.fixture(scope="module")
def users(ra: RaRunning) -> Users:
    return Users(
        admin=ra.jwt("admin", ra.user("admin", {ACCOUNT: ALL})),
        reader=ra.jwt("reader", ra.user("reader", {ACCOUNT: ["read"]})),
        other=ra.jwt("other", ra.user("other", {OTHER: ALL})),
    )


def _order(ra: RaRunning, token: str, email: str, **extra: object) -> requests.Response:
    body = {"client": ACCOUNT, "product": SILVER, "csr": csr_pem(email), **extra}
    return ra.post("/orders", token, json=body)


def _problem(answer: requests.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["status"] == status and problem["title"] and problem["type"]
    return problem


def _openssl(*args: str, data: bytes | None = None) -> str:
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
    return done.stdout.decode()


def test_an_order_with_a_csr_is_issued_and_openssl_verifies_the_certificate(
    ra: RaRunning, users: Users, tmp_path: Path
) -> None:
    answer = _order(ra, users.admin, "alice@example.org", comment="first order")
    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "ISSUED" and order["emails"] == ["alice@example.org"]
    assert order["requestedBy"] == "api:admin" and order["id"].startswith("ord-")
    cert = tmp_path / "alice.pem"
    cert.write_text(order["certificate"])
    (tmp_path / "chain.pem").write_text("".join(order["chain"][:-1]))
    out = _openssl("verify", "-CAfile", str(ra.directory / "root-ca.pem"),
                   "-untrusted", str(tmp_path / "chain.pem"), str(cert))  # fmt: skip
    assert out.strip().endswith("OK")
    got = ra.get(f"/orders/{order['id']}", users.admin).json()
    assert got["status"] == "ISSUED" and got["certificateSerial"] == order["certificateSerial"]
    assert [h["to"] for h in got["statusHistory"]][-1] == "ISSUED"
    comments = ra.get(f"/orders/{order['id']}/comments", users.admin).json()
    assert [c["text"] for c in comments] == ["first order"]


def test_downloads_in_pem_der_and_p7b_are_read_by_openssl(ra: RaRunning, users: Users) -> None:
    serial = _order(ra, users.admin, "dl@example.org").json()["certificateSerial"]
    path = f"/certificates/{serial}/download"
    pem = ra.get(path, users.admin)
    assert pem.headers["Content-Type"].startswith("application/pem-certificate-chain")
    assert pem.text.count("BEGIN CERTIFICATE") == 3
    der = ra.get(path, users.admin, params={"format": "der"})
    assert der.headers["Content-Type"].startswith("application/pkix-cert")
    printed = _openssl("x509", "-inform", "DER", "-noout", "-serial", data=der.content)
    assert int(printed.strip().split("=")[1], 16) == int(serial, 16)
    p7b = ra.get(path, users.admin, params={"format": "p7b"})
    assert p7b.headers["Content-Type"].startswith("application/pkcs7-mime")
    printed = _openssl("pkcs7", "-inform", "DER", "-print_certs", "-noout", data=p7b.content)
    assert printed.count("subject=") == 3
    _problem(ra.get(path, users.admin, params={"format": "zip"}), 400)
    details = ra.get(f"/certificates/{serial}", users.admin).json()
    assert details["status"] == "VALID" and details["emails"] == ["dl@example.org"]
    assert len(details["sha256"]) == 64 and details["revocation"] is None


def test_revocation_puts_the_serial_in_the_crl_and_is_not_done_twice(
    ra: RaRunning, users: Users
) -> None:
    serial = _order(ra, users.admin, "gone@example.org").json()["certificateSerial"]
    _problem(ra.post(f"/certificates/{serial}/revoke", users.reader,
                     json={"reason": "keyCompromise"}), 403)  # fmt: skip
    _problem(ra.post(f"/certificates/{serial}/revoke", users.admin,
                     json={"reason": "certificateHold"}), 400)  # fmt: skip
    _problem(ra.post(f"/certificates/{serial}/revoke", users.admin, json={"reason": "fly"}), 400)
    answer = ra.post(f"/certificates/{serial}/revoke", users.admin,
                     json={"reason": "keyCompromise", "comment": "laptop stolen"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["revocation"]["reason"] == "keyCompromise"
    crl = requests.get(f"http://127.0.0.1:{ra.service.http_port}/crl/issuing.crl", timeout=30)
    text = _openssl("crl", "-inform", "DER", "-noout", "-text", data=crl.content)
    assert f"Serial Number: {serial.upper().zfill(len(serial) + len(serial) % 2)}" in text, text
    assert "Key Compromise" in text
    _problem(ra.post(f"/certificates/{serial}/revoke", users.admin,
                     json={"reason": "superseded"}), 409)  # fmt: skip
    listed = ra.get("/certificates", users.admin, params={"status": "REVOKED"}).json()
    assert serial in [c["serial"] for c in listed]


def test_an_address_outside_the_validated_domains_is_refused_with_the_order_id(
    ra: RaRunning, users: Users
) -> None:
    problem = _problem(_order(ra, users.admin, "mallory@elsewhere.org"), 403)
    assert problem["failInfo"] == "badIdentity" and problem["orderId"].startswith("ord-")
    failed = ra.get(f"/orders/{problem['orderId']}", users.admin).json()
    assert failed["status"] == "FAILED" and "elsewhere.org" in failed["failureReason"]


def test_users_see_only_their_clients_orders_and_need_the_permission(
    ra: RaRunning, users: Users
) -> None:
    order = _order(ra, users.admin, "private@example.org").json()
    _problem(ra.get(f"/orders/{order['id']}", users.other), 404)
    _problem(ra.get(f"/certificates/{order['certificateSerial']}", users.other), 404)
    _problem(ra.post(f"/orders/{order['id']}/comments", users.other, json={"text": "hi"}), 404)
    assert order["id"] not in [o["id"] for o in ra.get("/orders", users.other).json()]
    _problem(ra.get("/orders", users.other, params={"client": ACCOUNT}), 404)
    _problem(_order(ra, users.other, "x@example.org"), 404)  # no grant on example.ra
    _problem(_order(ra, users.reader, "x@example.org"), 403)  # grant without issue
    _problem(ra.post(f"/orders/{order['id']}/comments", users.reader, json={"text": "x"}), 403)
    own = ra.post("/orders", users.other, json={
        "client": OTHER, "product": OTHER_SILVER, "csr": csr_pem("bob@other.org")})  # fmt: skip
    assert own.status_code == 201 and own.json()["status"] == "ISSUED"
    found = ra.get("/orders", users.reader, params={"email": "private@example.org"}).json()
    assert [o["id"] for o in found] == [order["id"]]


def test_a_manual_product_waits_for_an_approver(ra: RaRunning, users: Users) -> None:
    answer = ra.post("/orders", users.admin, json={
        "client": ACCOUNT, "product": MANUAL, "csr": csr_pem("wait@example.org")})  # fmt: skip
    assert answer.status_code == 201 and answer.json()["status"] == "PENDING_AUTHORIZATION"
    order_id = answer.json()["id"]
    pending = ra.get("/orders", users.reader, params={"status": "PENDING_AUTHORIZATION"}).json()
    assert order_id in [o["id"] for o in pending]
    _problem(ra.post(f"/orders/{order_id}/approve", users.reader), 403)
    approved = ra.post(f"/orders/{order_id}/approve", users.admin)
    assert approved.status_code == 200 and approved.json()["status"] == "ISSUED"
    _problem(ra.post(f"/orders/{order_id}/approve", users.admin), 409)


def test_products_clients_jobs_and_comments(ra: RaRunning, users: Users) -> None:
    products = {p["id"]: p for p in ra.get("/products", users.admin).json()}
    assert set(products) == {SILVER, MANUAL}
    assert products[MANUAL]["approval"] == "manual" and products[SILVER]["keyGeneration"] == "csr"
    clients = ra.get("/clients", users.admin).json()
    assert clients[0]["emailDomains"] == ["example.org"]
    assert clients[0]["permissions"] == sorted(ALL)
    assert ra.get("/jobs", users.admin).json() == []
    serial = _order(ra, users.admin, "pub@example.org").json()["certificateSerial"]
    _problem(ra.post(f"/certificates/{serial}/publish", users.admin), 409)  # no ca.ldap
    _problem(ra.post(f"/certificates/{serial}/publish", users.reader), 403)
    _problem(ra.post("/jobs/999999/retry", users.admin), 404)
    added = ra.post(f"/certificates/{serial}/comments", users.admin, json={"text": "checked"})
    assert added.status_code == 201 and added.json()["author"] == "api:admin"
    listed = ra.get(f"/certificates/{serial}/comments", users.reader).json()
    assert [c["text"] for c in listed] == ["checked"]


def test_errors_are_problem_details(ra: RaRunning, users: Users) -> None:
    _problem(ra.get("/no/such/thing", users.admin), 404)
    _problem(ra.request("DELETE", "/orders", users.admin), 405)
    _problem(ra.post("/orders", users.admin, data=b"{not json",
                     headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    _problem(ra.post("/orders", users.admin, json=["a list"]), 400)
    _problem(ra.post("/orders", users.admin, json={"client": ACCOUNT, "product": SILVER,
                                                   "csr": "!!not base64!!"}), 400)  # fmt: skip
    _problem(ra.post("/orders", users.admin, data=b"x" * (300 * 1024)), 413)
    _problem(ra.get("/orders/ord-nope", users.admin), 404)
    _problem(ra.get("/certificates/zz", users.admin), 404)
    _problem(ra.get("/orders", users.admin, params={"status": "BOGUS"}), 400)
    _problem(ra.get("/orders", users.admin, params={"limit": "-1"}), 400)
    _problem(ra.get("/orders", users.admin, params={"from": "yesterday"}), 400)
    # digits that str.isdigit() accepts and int() refuses (found by the fuzz run)
    _problem(ra.get("/orders", users.admin, params={"limit": "\u00b2"}), 400)
    _problem(ra.post("/jobs/\u00b2/retry", users.admin), 404)
    _problem(ra.post("/notifications/\u00b2/resend", users.admin), 404)
    unreadable = {"client": ACCOUNT, "product": SILVER, "csr": "AAAA"}
    garbage = _problem(ra.post("/orders", users.admin, json=unreadable), 400)
    assert garbage["failInfo"] == "badRequest"  # an unreadable CSR still leaves a FAILED order


def test_every_call_is_audited_and_the_chain_stays_intact(
    ra: RaRunning, users: Users, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ra.service.ca.store
    before = len([r for r in audit_records(store) if r.event_type == "api_call"])
    order = _order(ra, users.admin, "audit@example.org").json()
    ra.get(f"/orders/{order['id']}", users.admin)
    ra.get("/orders", None)
    calls = [r for r in audit_records(store) if r.event_type == "api_call"][before:]
    assert [(r.actor, r.subject, r.details["status"]) for r in calls] == [
        ("admin", "POST /pki/api/v2/orders", 201),
        ("admin", f"GET /pki/api/v2/orders/{order['id']}", 200),
        ("anonymous", "GET /pki/api/v2/orders", 401),
    ]
    assert calls[0].details["order"] == order["id"]
    assert calls[0].details["serial"] == order["certificateSerial"]
    assert calls[0].details["account"] == ACCOUNT
    assert main(["ca", "audit", "verify", "--dir", str(ra.directory)]) == 0
    assert "audit log intact" in capsys.readouterr().out


def test_a_bad_member_refuses_the_order_before_anything_is_made(
    ra: RaRunning, users: Users
) -> None:
    """renewalEmails was checked after the certificate was issued: a 400 with an order made."""
    before = len(ra.get("/orders", users.admin, params={"limit": "1000"}).json())
    for bad in ("not-a-list", ["no-at-sign"], [5]):
        _problem(_order(ra, users.admin, "renew-bad@example.org", renewalEmails=bad), 400)
    assert len(ra.get("/orders", users.admin, params={"limit": "1000"}).json()) == before
    found = ra.get("/orders", users.admin, params={"email": "renew-bad@example.org"}).json()
    assert found == []


def test_a_time_out_of_range_is_bad_input_not_an_unavailable_database(
    ra: RaRunning, users: Users
) -> None:
    for text in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        problem = _problem(ra.get("/orders", users.admin, params={"from": text}), 400)
        assert "from" in problem["detail"]


def test_a_pickup_token_in_any_path_stays_out_of_the_audit_log(ra: RaRunning, users: Users) -> None:
    """A token under /p12/ is a credential also when the method or the path is wrong (405,
    404): the audit record and the log line name /p12/{token}, never the token."""
    store = ra.service.ca.store
    token = "PickupTokenNotForTheLog0123456789abcdefABC"
    _problem(ra.post(f"/p12/{token}"), 405)
    _problem(ra.get(f"/p12/{token}/more"), 404)
    _problem(ra.get(f"/p12/{token}/"), 404)
    subjects = [r.subject for r in audit_records(store) if r.event_type == "api_call"]
    assert not [s for s in subjects if token in s]
    assert subjects[-3:] == ["POST /pki/api/v2/p12/{token}", "GET /pki/api/v2/p12/{token}",
                             "GET /pki/api/v2/p12/{token}"]  # fmt: skip


def _raw_tls(ra: RaRunning, request: bytes) -> bytes:
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ra.verify)
    with socket.create_connection(("127.0.0.1", ra.service.ra_port), timeout=30) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(request)
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    return answer


def test_what_aiohttp_cannot_parse_is_answered_as_a_problem_too(
    ra: RaRunning, users: Users
) -> None:
    """A request line or header over 8 KiB, or no HTTP at all, never reaches the app: aiohttp
    answered text/plain, echoing the request."""
    long_line = ra.get("/orders", users.admin, params={"x": "A" * 9000})
    problem = _problem(long_line, 400)
    assert "AAAA" not in long_line.text and "parsed" in problem["detail"]
    _problem(ra.get("/orders", users.admin, headers={"X-Big": "B" * 20000}), 400)
    raw = _raw_tls(ra, b"\x01\x02 nonsense\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and b"application/problem+json" in head, raw
    assert b'"status": 400' in body
    assert ra.get("/orders", users.admin).status_code == 200  # and it serves on


def test_plain_http_on_the_tls_port_is_dropped_and_the_listener_serves_on(
    ra: RaRunning, users: Users
) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", ra.service.ra_port), timeout=30) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"HTTP/1.1 200" not in sock.recv(1024)  # a TLS alert or nothing, then closed
    assert ra.get("/orders", users.admin).status_code == 200


def test_documented_parameter_ranges_are_the_ones_enforced(ra: RaRunning, users: Users) -> None:
    """A value the document allows is accepted and one it excludes is a 400: ``limit=-1`` was
    a documented ``integer`` answered 400 (what Schemathesis' positive data acceptance flags),
    ``serial=0x1f`` an undocumented hex form that was accepted."""
    document = ra.get("/openapi.json").json()
    checked = 0
    for path, ops in document["paths"].items():
        get = ops.get("get")
        if get is None or "{" in path:
            continue
        for param in get["parameters"]:
            schema = param["schema"]
            if "minimum" not in schema:
                continue
            url = path.removeprefix("/pki/api/v2")
            for value, status in (
                (schema["minimum"], 200),
                (schema["maximum"], 200),
                (schema["minimum"] - 1, 400),
                (schema["maximum"] + 1, 400),
            ):
                answer = ra.get(url, users.admin, params={param["name"]: str(value)})
                assert answer.status_code == status, (path, param["name"], value, answer.text)
                checked += 1
    assert checked >= 16  # limit and offset of three searches, expiringWithin
    for bad in ("0x1f", "-1", "1_0", " 1f", "1f:", "zz"):
        _problem(ra.get("/certificates", users.admin, params={"serial": bad}), 400)
        _problem(ra.get("/jobs", users.admin, params={"serial": bad}), 400)
    for good in ("1f", "01:AB:cd"):
        assert ra.get("/certificates", users.admin, params={"serial": good}).status_code == 200


def test_a_lone_surrogate_in_the_body_is_bad_input_and_changes_nothing(
    ra: RaRunning, users: Users
) -> None:
    """JSON can escape a lone surrogate (``\\ud800``), which the database cannot encode: the
    key exchange, comments, revocation comments answered 500, an order with such a comment
    was made before the 500."""
    order = _order(ra, users.admin, "surrogate@example.org").json()
    json_type = {"Content-Type": "application/json"}
    bodies = [
        ("/jwt", None, b'{"userName": "\\ud800", "apiKey": "x"}'),
        (f"/orders/{order['id']}/comments", users.admin, b'{"text": "\\udfff"}'),
        (f"/certificates/{order['certificateSerial']}/revoke", users.admin,
         b'{"reason": "superseded", "comment": "a\\ud800b"}'),
        ("/orders", users.admin, b'{"client": "example.ra", "product": "example-silver", '
         b'"csr": "x", "comment": "\\ud800", "\\udc00": 1}'),
    ]  # fmt: skip
    for path, token, body in bodies:
        problem = _problem(ra.post(path, token, data=body, headers=json_type), 400)
        assert "surrogate" in problem["detail"]
    assert ra.get(f"/orders/{order['id']}/comments", users.admin).json() == []
    assert ra.get(f"/certificates/{order['certificateSerial']}", users.admin).json()[
        "status"] == "VALID"  # fmt: skip
    # a surrogate pair is one character (U+1F600) and welcome
    smile = b'{"text": "\\ud83d\\ude00"}'
    added = ra.post(f"/orders/{order['id']}/comments", users.admin, data=smile, headers=json_type)
    assert added.status_code == 201 and added.json()["text"] == "\U0001f600"


def test_an_email_search_takes_percent_and_underscore_literally(
    ra: RaRunning, users: Users
) -> None:
    """They were LIKE wildcards: ``x_y@`` found ``x1y@``, ``%`` every order with an address."""
    made = _order(ra, users.admin, "x1y@example.org").json()
    for pattern in ("x_y@example.org", "%", "x%@example.org"):
        found = ra.get("/orders", users.admin, params={"email": pattern}).json()
        assert made["id"] not in [o["id"] for o in found], pattern
    found = ra.get("/orders", users.admin, params={"email": "X1Y@example.org"}).json()
    assert [o["id"] for o in found] == [made["id"]]


def test_an_order_id_with_more_after_it_is_no_order(ra: RaRunning, users: Users) -> None:
    """Ids were cut to 40 characters before the look-up: ``<id>junk`` answered the order."""
    order = _order(ra, users.admin, "longer-id@example.org").json()
    assert len(order["id"]) == 40
    _problem(ra.get(f"/orders/{order['id']}junk", users.admin), 404)
    _problem(ra.get(f"/orders/{order['id']}0/comments", users.admin), 404)
    assert ra.get(f"/orders/{order['id']}", users.admin).status_code == 200


def test_every_route_refuses_a_user_without_its_documented_permission(
    ra: RaRunning, users: Users
) -> None:
    """Walks the document: an operation that says "Needs the `P` permission" answers 403 to a
    user holding every permission on the client but P (the resources exist and are theirs)."""
    issued = _order(ra, users.admin, "perm-walk@example.org").json()
    values = {"{id}": issued["id"], "{serial}": issued["certificateSerial"],
              "{client}": ACCOUNT, "{domain}": "example.org"}  # fmt: skip
    bodies = {"/pki/api/v2/orders": {"client": ACCOUNT, "product": SILVER,
                                     "csr": csr_pem("perm-walk2@example.org")},
              "/pki/api/v2/domains": {"client": ACCOUNT, "domain": "perm.example.org"}}  # fmt: skip
    lacking = {p: ra.jwt(f"lacks-{p}", ra.user(f"lacks-{p}", {ACCOUNT: [q for q in ALL if q != p]}))
               for p in ALL}  # fmt: skip
    # looked up before the permission can be judged: an id that exists is needed (no jobs or
    # notifications in this CA); their permission is covered in test_ra_api_services
    skip = {"/pki/api/v2/jobs/{id}/retry", "/pki/api/v2/notifications/{id}/resend"}
    checked = []
    for template, ops in ra.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            needed = op.get("description", "").partition("Needs the `")[2].partition("`")[0]
            if not needed or template in skip:
                continue
            path = template
            for name, value in values.items():
                path = path.replace(name, value)
            listing = method == "get" and "{" not in template
            by_client = any(p["name"] == "client" for p in op["parameters"])
            answer = ra.request(method.upper(), path.removeprefix("/pki/api/v2"),
                                lacking[needed], params={"client": ACCOUNT} if listing else {},
                                json=bodies.get(template, {"text": "x", "reason": 1}))  # fmt: skip
            if listing and not by_client:  # a search without a client filter: nothing seen
                assert (answer.status_code, answer.json()) == (200, []), (template, answer.text)
            else:
                assert answer.status_code == 403, (method, template, needed, answer.text)
            checked.append((method, template))
    assert len(checked) >= 20


def test_no_route_shows_or_touches_another_clients_objects(ra: RaRunning, users: Users) -> None:
    """Walks the document as a user with every permission on other.ra only: each operation on
    example.ra's order, certificate, client or domain is a 404 (existence not revealed), and
    no search without a client filter returns any of example.ra's objects."""
    issued = _order(ra, users.admin, "tenant-walk@example.org").json()
    ra.post(f"/orders/{issued['id']}/comments", users.admin, json={"text": "mine"})
    values = {"{id}": issued["id"], "{serial}": issued["certificateSerial"],
              "{client}": ACCOUNT, "{domain}": "example.org"}  # fmt: skip
    bodies = {"/pki/api/v2/orders": {"client": ACCOUNT, "product": SILVER,
                                     "csr": csr_pem("tenant-walk2@example.org")},
              "/pki/api/v2/domains": {"client": ACCOUNT, "domain": "t.example.org"}}  # fmt: skip
    skip = {"/pki/api/v2/jwt", "/openapi.json", "/pki/api/v2/p12/{token}",
            "/pki/api/v2/products", "/pki/api/v2/clients"}  # fmt: skip
    walked = 0
    for template, ops in ra.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            if template in skip:
                continue
            path = template
            for name, value in values.items():
                path = path.replace(name, value)
            by_client = any(p["name"] == "client" for p in op["parameters"])
            url = path.removeprefix("/pki/api/v2")
            body = bodies.get(template, {"text": "x", "reason": 1})
            if method == "get" and "{" not in template:
                seen = ra.get(url, users.other)
                assert seen.status_code == 200, (template, seen.text)
                text = seen.text
                assert issued["id"] not in text and issued["certificateSerial"] not in text
                if by_client:
                    _problem(ra.get(url, users.other, params={"client": ACCOUNT}), 404)
            else:
                answer = ra.request(method.upper(), url, users.other, json=body)
                assert answer.status_code == 404, (method, template, answer.text)
            walked += 1
    assert walked >= 20
    assert ra.get(f"/orders/{issued['id']}/comments", users.admin).json()[0]["text"] == "mine"
    assert ra.get(f"/certificates/{issued['certificateSerial']}", users.admin).json()[
        "status"] == "VALID"  # fmt: skip


def test_request_bodies_are_documented_as_read(ra: RaRunning, users: Users) -> None:
    """An optional member may be null (as if left out), a required string must not be empty,
    a reason code is 0..10: what Schemathesis' positive/negative data checks hold the
    document to (``{"comment": null}`` was undocumented and accepted)."""
    document = ra.get("/openapi.json").json()
    body = document["paths"]["/pki/api/v2/orders"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert schema["properties"]["client"]["minLength"] == 1
    assert schema["properties"]["comment"]["type"] == ["string", "null"]
    assert schema["properties"]["keyGeneration"]["enum"] == ["csr", "pkcs12", None]
    made = _order(ra, users.admin, "nulls@example.org", comment=None, validity=None,
                  renewalEmails=None, keyGeneration=None, givenName=None)  # fmt: skip
    assert made.status_code == 201, made.text
    serial = made.json()["certificateSerial"]
    revoked = ra.post(f"/certificates/{serial}/revoke", users.admin,
                      json={"reason": 4, "comment": None})  # fmt: skip
    assert revoked.status_code == 200 and revoked.json()["revocation"]["comment"] is None
    _problem(ra.post("/jwt", json={"userName": "", "apiKey": "x"}), 400)


def test_the_documented_revocation_reasons_are_the_ones_taken(ra: RaRunning, users: Users) -> None:
    """The document offered every RFC 5280 reason (cACompromise, code 10...) that the S/MIME
    BR rules refuse with a 400."""
    document = ra.get("/openapi.json").json()
    op = document["paths"]["/pki/api/v2/certificates/{serial}/revoke"]["post"]
    names, codes = op["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "reason"]["oneOf"]  # fmt: skip
    assert codes["enum"] == [0, 1, 3, 4, 5, 9]
    assert "cACompromise" not in names["enum"] and "keyCompromise" in names["enum"]
    serial = _order(ra, users.admin, "reasons@example.org").json()["certificateSerial"]
    # "\u00b9" (superscript one) passed str.isdigit() and broke int(): a 500 (fuzz run)
    for refused in ("cACompromise", 10, 6, "removeFromCRL", "\u00b9", "\u0661"):
        _problem(ra.post(f"/certificates/{serial}/revoke", users.admin,
                         json={"reason": refused}), 400)  # fmt: skip
    domains = document["paths"]["/pki/api/v2/domains"]["get"]["parameters"]
    assert {"PENDING", "VALIDATED", "EXPIRED"} == set(
        next(p for p in domains if p["name"] == "status")["schema"]["enum"])  # fmt: skip


GOLD_MANUAL = """
  gold-manual:
    profile: sponsor
    validities: [1y]
    key_types: [ec-p256]
    approval: manual
    allow_simple_request: false
    publish_ldap: false
"""


def test_the_approver_gives_a_sponsor_orders_validated_name(tmp_path: Path) -> None:
    """The approve route read no body, so the given name it looked for never came and a
    sponsor order whose CSR lacks the person's name could not be approved over REST."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    gold = start_ra(tmp_path, products=GOLD_MANUAL, product_ids=("gold-manual",))
    try:
        token = gold.jwt("rita", gold.user("rita", {ACCOUNT: ALL}))
        body = {"client": ACCOUNT, "product": "gold-manual", "csr": csr_pem("hans@example.org")}
        order = gold.post("/orders", token, json=body).json()
        assert order["status"] == "PENDING_AUTHORIZATION", order
        approved = gold.post(f"/orders/{order['id']}/approve", token,
                             json={"givenName": "Hans", "surname": "Muster"})  # fmt: skip
        assert approved.status_code == 200, approved.text
        cert = x509.load_pem_x509_certificate(approved.json()["certificate"].encode())
        assert cert.subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Hans"
        assert cert.subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Muster"
    finally:
        gold.thread.stop()
