"""JSON Schemas of the RA API's answers (OpenAPI 3.1 ``components.schemas``).

Written next to the handlers that build these objects (``order_json``, ``certificate_json``,
``plain`` of the store's views) so a client — or a conformance checker such as Schemathesis —
can validate every answer: a member that may be absent is not ``required``, one that may be
``null`` says so (``type: [..., "null"]``, OpenAPI 3.1 has no ``nullable``). Objects stay open
(no ``additionalProperties: false``): a later version may add members, as SwissSign's does.
"""

from __future__ import annotations

from typing import Any

from ca.store.domains import DomainStatus
from ca.store.model import CertificateStatus, JobKind, JobStatus, OrderStatus
from ca.store.notifications import NotificationStatus

STRING: dict[str, Any] = {"type": "string"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
MAYBE_STRING: dict[str, Any] = {"type": ["string", "null"]}
MAYBE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def _enum(values: Any, *, null: bool = False) -> dict[str, Any]:
    names = list(dict.fromkeys(str(v.value) for v in values))
    if null:
        return {"type": ["string", "null"], "enum": [*names, None]}
    return {"type": "string", "enum": names}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_ORDER_MEMBERS = ["id", "client", "product", "subject", "emails", "validity", "status",
                  "failureReason", "requestedBy", "createdAt", "updatedAt",
                  "certificateSerial", "subjectChanges"]  # fmt: skip
_CERT_MEMBERS = ["serial", "orderId", "subject", "issuer", "emails", "notBefore", "notAfter",
                 "status", "sha256", "revocation"]  # fmt: skip

SCHEMAS: dict[str, dict[str, Any]] = {
    "Order": _object(
        _ORDER_MEMBERS,
        id=STRING, client=STRING, product=STRING, subject=STRING, emails=STRINGS,
        validity=STRING, status=_enum(OrderStatus), failureReason=MAYBE_STRING,
        requestedBy=STRING, createdAt=TIME, updatedAt=TIME, certificateSerial=MAYBE_STRING,
        subjectChanges={"type": "array", "items": _object(
            ["attribute", "requested", "issued", "reason"], attribute=STRING,
            requested=MAYBE_STRING, issued=MAYBE_STRING, reason=MAYBE_STRING)},
        certificate={"type": "string", "description": "PEM, once issued"},
        chain={"type": "array", "items": STRING, "description": "PEM, issuer first"},
        statusHistory={"type": "array", "description": "GET /orders/{id} only",
                       "items": _object(["from", "to", "at", "note"], to=_enum(OrderStatus),
                                        at=TIME, note=MAYBE_STRING,
                                        **{"from": _enum(OrderStatus, null=True)})},
    ),
    "Certificate": _object(
        _CERT_MEMBERS,
        serial=STRING, orderId=STRING, subject=STRING, issuer=STRING, emails=STRINGS,
        notBefore=TIME, notAfter=TIME, status=_enum(CertificateStatus), sha256=STRING,
        revocation={"oneOf": [{"type": "null"}, _object(
            ["reason", "code", "revokedAt", "comment", "revokedBy"], reason=STRING,
            code={"type": "integer"}, revokedAt=TIME, comment=MAYBE_STRING,
            revokedBy=STRING)]},
    ),
    "Comment": _object(["id", "orderId", "author", "at", "text"], id={"type": "integer"},
                       orderId=STRING, author=STRING, at=TIME, text=STRING),
    "Job": _object(
        ["id", "kind", "serial", "email", "orderId", "status", "attempts", "nextAttemptAt",
         "lastError", "createdAt", "updatedAt"],
        id={"type": "integer"}, kind=_enum(JobKind), serial=STRING, email=STRING,
        orderId=MAYBE_STRING, status=_enum(JobStatus), attempts={"type": "integer"},
        nextAttemptAt=TIME, lastError=MAYBE_STRING, createdAt=TIME, updatedAt=TIME,
    ),
    "Product": _object(
        ["id", "profile", "validities", "keyTypes", "approval", "keyGeneration",
         "mailboxValidation", "publishLdap", "clients"],
        id=STRING, profile=STRING, validities=STRINGS, keyTypes=STRINGS, approval=STRING,
        keyGeneration=STRING, mailboxValidation={"type": "boolean"},
        publishLdap={"type": "boolean"}, clients=STRINGS,
    ),
    "Client": _object(
        ["id", "organisation", "country", "emailDomains", "products", "permissions"],
        id=STRING, organisation=STRING, country=STRING, emailDomains=STRINGS,
        products=STRINGS, permissions=STRINGS,
    ),
    "Domain": _object(
        ["client", "domain", "status", "token", "recordName", "requestedAt", "tokenExpiresAt",
         "validatedAt", "validUntil", "lastCheckedAt", "lastError", "txtRecord"],
        client=STRING, domain=STRING, status=_enum(DomainStatus), token=STRING,
        recordName=STRING, requestedAt=TIME, tokenExpiresAt=TIME, validatedAt=MAYBE_TIME,
        validUntil=MAYBE_TIME, lastCheckedAt=MAYBE_TIME, lastError=MAYBE_STRING,
        txtRecord=_object(["name", "type", "value"], name=STRING,
                          type={"type": "string", "enum": ["TXT"]}, value=STRING),
    ),
    "Notification": _object(
        ["id", "kind", "recipient", "subject", "orderId", "serial", "status", "attempts",
         "createdAt", "sentAt", "lastError", "reference"],
        id={"type": "integer"}, kind=STRING, recipient=STRING, subject=STRING,
        orderId=MAYBE_STRING, serial=MAYBE_STRING, status=_enum(NotificationStatus),
        attempts={"type": "integer"}, createdAt=TIME, sentAt=MAYBE_TIME,
        lastError=MAYBE_STRING, reference=MAYBE_STRING,
    ),
    "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
}  # fmt: skip
