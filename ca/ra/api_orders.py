"""RA API: certificate orders (SwissSign RA manual: orders, statuses, comments).

An order made here goes through :meth:`CertificateAuthority.submit`, the one issuance path the
CMC server also uses: same checks, same statuses, same audit records. The answer carries the
certificate and its chain when the order was issued at once, else its PENDING_* status.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.ra.api_base import (
    PAGING,
    ApiProblem,
    Call,
    NotFound,
    Param,
    Reply,
    Route,
    iso,
)
from ca.ra.api_schemas import array_of, ref
from ca.ra.notify import MAX_RENEWAL_EMAILS, NotifyError, check_email
from ca.store.model import OrderStatus, OrderView, UnknownOrder

CSR_SCHEMA = {"type": "string", "description": "PKCS#10 request: PEM, or base64 of its DER"}
ORDER_BODY = {
    "type": "object",
    "required": ["client", "product"],
    "properties": {
        "client": {"type": "string", "description": "the account (client) ordering"},
        "product": {"type": "string"},
        "csr": CSR_SCHEMA,
        "validity": {"type": "string", "description": "one of the product's validities, e.g. 1y"},
        "comment": {"type": "string"},
        "renewalEmails": {"type": "array", "items": {"type": "string", "format": "email"}},
        "keyGeneration": {"type": "string", "enum": ["csr", "pkcs12"]},
        "email": {"type": "string", "format": "email",
                  "description": "keyGeneration pkcs12: the mailbox the key is made for"},
        "emails": {"type": "array", "items": {"type": "string", "format": "email"},
                   "description": "keyGeneration pkcs12: several mailboxes"},
        "givenName": {"type": "string"},
        "surname": {"type": "string"},
    },
}  # fmt: skip
COMMENT_BODY = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "description": "the comment (at most 10000)"}},
}
CSR_BODY = {"type": "object", "required": ["csr"], "properties": {"csr": CSR_SCHEMA}}
#: a sponsor order's CSR may lack the person's name: the approver gives the validated one
APPROVE_BODY = {
    "type": "object",
    "properties": {"givenName": {"type": "string"}, "surname": {"type": "string"}},
}


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_der(text: str) -> bytes:
    """The DER of a CSR given as PEM or base64 DER (a bad one is refused before any order)."""
    if "-----BEGIN" in text:
        try:
            return x509.load_pem_x509_csr(text.encode()).public_bytes(serialization.Encoding.DER)
        except ValueError as exc:
            raise ApiProblem(400, f"csr: not a PEM certificate request: {exc}") from None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiProblem(400, "csr must be PEM or base64 of the DER request") from None


def order_json(call: Call, order: OrderView, *, with_history: bool = False) -> dict[str, Any]:
    call.audit.setdefault("order", order.id)
    out: dict[str, Any] = {
        "id": order.id,
        "client": order.account,
        "product": order.product,
        "subject": order.subject,
        "emails": list(order.emails),
        "validity": order.validity,
        "status": order.status.value,
        "failureReason": order.failure_reason,
        "requestedBy": order.requested_by,
        "createdAt": iso(order.created_at),
        "updatedAt": iso(order.updated_at),
        "certificateSerial": order.certificate_serial,
        "subjectChanges": [
            {
                "attribute": c.attribute,
                "requested": c.requested,
                "issued": c.issued,
                "reason": c.reason,
            }
            for c in order.subject_changes
        ],  # fmt: skip
    }
    if order.certificate_serial is not None:
        call.audit.setdefault("serial", order.certificate_serial)
        der = call.ca.store.get_certificate(order.certificate_serial).der
        out["certificate"] = pem(x509.load_der_x509_certificate(der))
        out["chain"] = [pem(c) for c in call.ca.chain]
    if with_history:
        out["statusHistory"] = [
            {"from": h.from_status.value if h.from_status else None, "to": h.to_status.value,
             "at": iso(h.at), "note": h.note} for h in call.ca.store.history(order.id)
        ]  # fmt: skip
    return out


def visible_order(call: Call, permission: str = "read") -> OrderView:
    """The order of the path, if the caller's grants cover its account (else 404/403)."""
    order_id = call.params["id"]
    try:
        if len(order_id) > 40:  # ids are 40 characters: a cut-off longer one found the order
            raise UnknownOrder(order_id)
        order = call.ca.store.get_order(order_id)
    except UnknownOrder:
        raise NotFound(f"no order {order_id}") from None
    call.account(order.account, permission, what=f"no order {order_id}")
    call.audit["order"] = order.id
    return order


def create_order(call: Call) -> Reply:
    client, product = call.req("client", limit=128), call.req("product", limit=128)
    call.account(client, "issue")
    validity = call.text("validity", required=False, limit=16)
    comment = call.text("comment", required=False, limit=10_000)
    key_generation = call.text("keyGeneration", required=False) or "csr"
    if key_generation not in ("csr", "pkcs12"):
        raise ApiProblem(400, "keyGeneration must be csr or pkcs12")
    emails = _renewal_emails(call.body.get("renewalEmails"))  # checked before any order
    if key_generation == "pkcs12":
        order = _server_side_order(call, client, product, validity)
    else:
        result = call.ca.submit(
            csr_der(call.req("csr", limit=64 * 1024)), client, product, validity,
            requested_by=call.actor, given_name=call.text("givenName", required=False, limit=64),
            surname=call.text("surname", required=False, limit=64),
        )  # fmt: skip
        order = result.order
    if comment:
        call.ca.store.add_comment(order.id, call.actor, comment)
    notifier = getattr(call.services, "notifier", None)
    if emails and notifier is not None and order.certificate_serial is not None:
        notifier.set_renewal_emails(order.certificate_serial, emails, by=call.actor)
    return Reply(201, order_json(call, order), headers={"Location": f"orders/{order.id}"})


def order_of(call: Call, result: Any) -> OrderView:
    """The order behind what a service returned (OrderView, IssueResult, KeygenResult)."""
    if isinstance(result, OrderView):
        return result
    if isinstance(getattr(result, "order", None), OrderView):
        return result.order  # type: ignore[no-any-return]
    return call.ca.store.get_order(str(result.order_id))


def _service(call: Call, name: str, what: str) -> Any:
    service = getattr(call.services, name, None)
    if service is None:
        raise ApiProblem(404, f"{what} is not offered by this RA")
    return service


def _server_side_order(call: Call, client: str, product: str, validity: str | None) -> OrderView:
    """keyGeneration pkcs12: the RA makes the key; PIN and pick-up link go by mail."""
    keygen = _service(call, "keygen", "server-side key generation")
    emails = call.body.get("emails") or call.req("email", limit=320)
    if not isinstance(emails, str | list) or not all(isinstance(e, str) for e in emails):
        raise ApiProblem(400, "email must be a mail address (or emails a list of them)")
    result = keygen.order(
        client, product, emails, requested_by=call.actor, validity=validity,
        given_name=call.text("givenName", required=False, limit=64),
        surname=call.text("surname", required=False, limit=64),
    )  # fmt: skip
    return order_of(call, result)


def _renewal_emails(emails: Any) -> tuple[str, ...]:
    """The manual's additional renewal emails (3.4.5) of the certificate to be issued, checked
    as the notifier will store them — before the order, so bad input changes nothing."""
    if emails is None:
        return ()
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise ApiProblem(400, "renewalEmails must be a list of mail addresses")
    try:
        addresses = tuple(check_email(e) for e in emails)
    except NotifyError as exc:
        raise ApiProblem(400, f"renewalEmails: {exc}") from None
    if len(set(addresses)) > MAX_RENEWAL_EMAILS:
        raise ApiProblem(400, f"at most {MAX_RENEWAL_EMAILS} renewalEmails per certificate")
    return addresses


def get_order(call: Call) -> Reply:
    return Reply(json=order_json(call, visible_order(call), with_history=True))


def list_orders(call: Call) -> Reply:
    accounts = call.user.accounts("read")
    client = call.arg("client")
    if client is not None:
        call.account(client, "read")
        accounts = [client]
    orders = call.ca.store.search_orders(
        accounts,
        email=call.arg("email"),
        status=call.arg_enum("status", OrderStatus),
        product=call.arg("product"),
        created_from=call.arg_time("from"),
        created_to=call.arg_time("to"),
        page=call.page(),
    )
    return Reply(json=[order_json(call, o) for o in orders])


def approve_order(call: Call) -> Reply:
    order = visible_order(call, "approve")
    if order.status is not OrderStatus.PENDING_AUTHORIZATION:
        raise ApiProblem(409, f"order {order.id} is {order.status.value}, not waiting for approval")
    result = call.ca.approve(
        order.id, call.actor, given_name=call.text("givenName", required=False, limit=64),
        surname=call.text("surname", required=False, limit=64),
    )  # fmt: skip
    return Reply(json=order_json(call, result.order))


def provide_csr(call: Call) -> Reply:
    order = visible_order(call, "issue")
    if order.status is not OrderStatus.PENDING_CSR_RENEWAL:
        raise ApiProblem(409, f"order {order.id} is {order.status.value}, not waiting for a CSR")
    der = csr_der(call.req("csr", limit=64 * 1024))
    renewal = getattr(call.services, "renewal", None)
    if renewal is not None:
        result = renewal.provide_csr(order.id, der, by=call.actor)
    else:
        result = call.ca.resume(order.id, actor=call.actor, csr_der=der)
    return Reply(json=order_json(call, order_of(call, result)))


def comment_json(comment: Any) -> dict[str, Any]:
    return {"id": comment.id, "orderId": comment.order_id, "author": comment.author,
            "at": iso(comment.at), "text": comment.text}  # fmt: skip


def list_order_comments(call: Call) -> Reply:
    order = visible_order(call)
    return Reply(json=[comment_json(c) for c in call.ca.store.comments(order.id)])


def add_order_comment(call: Call) -> Reply:
    order = visible_order(call, "comment")
    text = call.req("text", limit=10_000)
    return Reply(201, comment_json(call.ca.store.add_comment(order.id, call.actor, text)))


_STATUSES = tuple(dict.fromkeys(s.value for s in OrderStatus))
ROUTES = (
    Route("POST", "/orders", create_order, "Order a certificate (CSR or server-side key)",
          "orders", "issue", body=ORDER_BODY, success=201, returns=ref("Order")),
    Route("GET", "/orders", list_orders, "Search orders", "orders", "read", query=(
        Param("email", "an address of the order", format="email"),
        Param("status", "order status", enum=_STATUSES),
        Param("client", "account"), Param("product", "product id"),
        Param("from", "created at or after (ISO 8601)", format="date-time"),
        Param("to", "created before (ISO 8601)", format="date-time"),
        *PAGING), returns=array_of("Order")),
    Route("GET", "/orders/{id}", get_order, "An order with its status history", "orders", "read",
          returns=ref("Order")),
    Route("POST", "/orders/{id}/approve", approve_order, "Authorize an order waiting for it",
          "orders", "approve", body=APPROVE_BODY, returns=ref("Order")),
    Route("POST", "/orders/{id}/csr", provide_csr, "Give the CSR a renewal order waits for",
          "orders", "issue", body=CSR_BODY, returns=ref("Order")),
    Route("GET", "/orders/{id}/comments", list_order_comments, "Comments of an order",
          "comments", "read", returns=array_of("Comment")),
    Route("POST", "/orders/{id}/comments", add_order_comment, "Comment on an order", "comments",
          "comment", body=COMMENT_BODY, success=201, returns=ref("Comment")),
)  # fmt: skip
