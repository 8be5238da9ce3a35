"""RA API: certificates — look-up, download, revocation, renewal, comments, LDAP publication.

A certificate belongs to the account of its order; certificates without an order (imports)
are not shown through the API. Revocation goes through :meth:`CertificateAuthority.revoke`
(the S/MIME BR reason rules of :mod:`ca.store.model`, unpublish jobs, a fresh CRL).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ca.ra.api_base import (
    PAGING,
    SERIAL_PATTERN,
    ApiProblem,
    Call,
    NotFound,
    Param,
    Reply,
    Route,
    iso,
    plain,
)
from ca.ra.api_orders import (
    COMMENT_BODY,
    CSR_SCHEMA,
    comment_json,
    csr_der,
    order_json,
    order_of,
)
from ca.ra.api_schemas import array_of, ref
from ca.store.model import (
    CertificateStatus,
    CertificateView,
    RevocationReason,
    RevocationRefused,
    UnknownCertificate,
    check_subscriber_reason,
)

REASONS = tuple(m.rfc_name for m in RevocationReason)


def _subscriber_reasons() -> list[RevocationReason]:
    """The reasons a subscriber's RA may give (S/MIME BR 4.9.1.1): what the document offers."""
    allowed = []
    for reason in RevocationReason:
        try:
            check_subscriber_reason(reason)
        except RevocationRefused:
            continue
        allowed.append(reason)
    return allowed


ALLOWED = _subscriber_reasons()
REVOKE_BODY = {
    "type": "object",
    "required": ["reason"],
    "properties": {
        "reason": {"description": "RFC 5280 reason name or code",
                   "oneOf": [{"type": "string", "enum": [r.rfc_name for r in ALLOWED]},
                             {"type": "integer", "enum": [int(r) for r in ALLOWED]}]},
        "comment": {"type": "string"},
    },
}  # fmt: skip
RENEW_BODY = {"type": "object", "properties": {"csr": CSR_SCHEMA}}
FORMATS = {
    "pem": "application/pem-certificate-chain",
    "der": "application/pkix-cert",
    "p7b": "application/pkcs7-mime",
}


def visible_certificate(call: Call, permission: str = "read") -> CertificateView:
    serial = call.params["serial"]
    missing = f"no certificate with serial {serial}"
    try:
        if len(serial) > 80:  # not cut off to 80: a longer one must not find a certificate
            raise UnknownCertificate(serial)
        cert = call.ca.store.get_certificate(serial, now=call.ca.clock())
    except UnknownCertificate:
        raise NotFound(missing) from None
    if cert.order_id is None:
        raise NotFound(missing)
    call.audit["serial"] = cert.serial
    call.audit["order"] = cert.order_id
    account = call.ca.store.get_order(cert.order_id).account
    call.account(account, permission, what=missing)
    return cert


def certificate_json(call: Call, cert: CertificateView) -> dict[str, Any]:
    revoked = cert.status is CertificateStatus.REVOKED
    revocation = call.ca.store.get_revocation(cert.serial) if revoked else None
    return {
        "serial": cert.serial,
        "orderId": cert.order_id,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "emails": list(cert.emails),
        "notBefore": iso(cert.not_before),
        "notAfter": iso(cert.not_after),
        "status": cert.status.value,
        "sha256": hashlib.sha256(cert.der).hexdigest(),
        "revocation": None if revocation is None else {
            "reason": revocation.reason_name, "code": int(revocation.reason),
            "revokedAt": iso(revocation.revoked_at), "comment": revocation.comment,
            "revokedBy": revocation.revoked_by,
        },
    }  # fmt: skip


def list_certificates(call: Call) -> Reply:
    accounts = call.user.accounts("read")
    client = call.arg("client")
    if client is not None:
        call.account(client, "read")
        accounts = [client]
    days = call.query.get("expiringWithin")
    window = None
    if days:
        window = timedelta(days=call.arg_int("expiringWithin", 0, 0, 3650))
    serial = call.arg_serial("serial")
    found = call.ca.store.search_certificates(
        accounts, email=call.arg("email"), status=call.arg_enum("status", CertificateStatus),
        serial=serial, expiring_within=window, now=call.ca.clock(),
        page=call.page(),
    )  # fmt: skip
    return Reply(json=[certificate_json(call, c) for c in found])


def get_certificate(call: Call) -> Reply:
    return Reply(json=certificate_json(call, visible_certificate(call)))


def download_certificate(call: Call) -> Reply:
    cert = visible_certificate(call)
    fmt = (call.arg("format") or "pem").lower()
    if fmt not in FORMATS:
        raise ApiProblem(400, "format must be pem, der or p7b")
    parsed = x509.load_der_x509_certificate(cert.der)
    if fmt == "der":
        data = cert.der
    elif fmt == "p7b":  # degenerate PKCS#7 (certs-only) with the chain
        data = pkcs7.serialize_certificates([parsed, *call.ca.chain], serialization.Encoding.DER)
    else:
        data = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (parsed, *call.ca.chain)
        )
    name = f"{cert.serial}.{'cer' if fmt == 'der' else fmt}"
    return Reply(body=data, content_type=FORMATS[fmt],
                 headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


def revoke_certificate(call: Call) -> Reply:
    cert = visible_certificate(call, "revoke")
    raw = call.body.get("reason") if isinstance(call.body, dict) else None
    if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ApiProblem(400, f"reason is required: one of {', '.join(REASONS)} (or its code)")
    reason = RevocationReason.parse(raw)  # RevocationRefused (400) for an unknown one
    check_subscriber_reason(reason)
    comment = call.text("comment", required=False, limit=4000)
    if cert.status is CertificateStatus.REVOKED:
        raise ApiProblem(409, f"certificate {cert.serial} is revoked already")
    call.audit["reason"] = reason.rfc_name
    call.ca.revoke(cert.serial, reason.rfc_name, by=call.actor, comment=comment)
    return Reply(json=certificate_json(call, call.ca.store.get_certificate(cert.serial)))


def renew_certificate(call: Call) -> Reply:
    cert = visible_certificate(call, "issue")
    renewal = getattr(call.services, "renewal", None)
    if renewal is None:
        raise NotFound("renewal is not offered by this RA")
    csr = call.text("csr", required=False, limit=64 * 1024)
    result = renewal.renew(cert.serial, by=call.actor, csr_der=csr_der(csr) if csr else None)
    return Reply(201, order_json(call, order_of(call, result)))


def list_certificate_comments(call: Call) -> Reply:
    cert = visible_certificate(call)
    assert cert.order_id is not None
    return Reply(json=[comment_json(c) for c in call.ca.store.comments(cert.order_id)])


def add_certificate_comment(call: Call) -> Reply:
    cert = visible_certificate(call, "comment")
    assert cert.order_id is not None
    text = call.req("text", limit=10_000)
    return Reply(201, comment_json(call.ca.store.add_comment(cert.order_id, call.actor, text)))


def _enqueue(call: Call, kind: str) -> Reply:
    cert = visible_certificate(call, "publish")
    if call.ca.settings.ca.ldap is None:
        raise ApiProblem(409, "no LDAP directory is configured (ca.ldap in ca.yaml)")
    if kind == "publish" and cert.status is not CertificateStatus.VALID:
        raise ApiProblem(409, f"certificate {cert.serial} is {cert.status.value}: not published")
    jobs = [
        call.ca.store.enqueue_job(kind, cert.serial, email, order_id=cert.order_id)
        for email in cert.emails
    ]
    return Reply(202, [plain(j) for j in jobs])


def publish_certificate(call: Call) -> Reply:
    return _enqueue(call, "publish")


def unpublish_certificate(call: Call) -> Reply:
    return _enqueue(call, "unpublish")


_S = "/certificates/{serial}"
ROUTES = (
    Route("GET", "/certificates", list_certificates, "Search certificates", "certificates",
          "read", query=(
              Param("email", "an address in the certificate", format="email"),
              Param("status", "certificate status", enum=("VALID", "REVOKED", "EXPIRED")),
              Param("client", "account"),
              Param("serial", "serial number (hex)", pattern=SERIAL_PATTERN),
              Param("expiringWithin", "expiring within this many days", "integer",
                    minimum=0, maximum=3650),
              *PAGING), returns=array_of("Certificate")),
    Route("GET", _S, get_certificate, "A certificate's details", "certificates", "read",
          returns=ref("Certificate")),
    Route("GET", _S + "/download", download_certificate, "The certificate with its chain",
          "certificates", "read", query=(Param("format", "pem (default), der or p7b",
                                               enum=tuple(FORMATS)),),
          produces=tuple(FORMATS.values())),
    Route("POST", _S + "/revoke", revoke_certificate, "Revoke a certificate", "certificates",
          "revoke", body=REVOKE_BODY, returns=ref("Certificate")),
    Route("POST", _S + "/renew", renew_certificate, "Renew a certificate (new order)",
          "certificates", "issue", body=RENEW_BODY, success=201, returns=ref("Order")),
    Route("GET", _S + "/comments", list_certificate_comments, "Comments of its order",
          "comments", "read", returns=array_of("Comment")),
    Route("POST", _S + "/comments", add_certificate_comment, "Comment on its order",
          "comments", "comment", body=COMMENT_BODY, success=201, returns=ref("Comment")),
    Route("POST", _S + "/publish", publish_certificate, "Queue LDAP publication", "jobs",
          "publish", success=202, returns=array_of("Job")),
    Route("POST", _S + "/unpublish", unpublish_certificate, "Queue LDAP removal", "jobs",
          "publish", success=202, returns=array_of("Job")),
)  # fmt: skip
