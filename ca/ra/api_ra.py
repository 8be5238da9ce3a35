"""RA API: DNS domain pre-validation, notifications and the PKCS#12 pick-up.

Thin handlers over the RA's services (:mod:`ca.ra.domains`, :mod:`ca.ra.notify`,
:mod:`ca.ra.keygen`); a part not built into this RA answers 404 "not offered". Notifications
are listed without their text: a PIN mail or an email challenge carries a secret.
"""

from __future__ import annotations

from typing import Any

from ca.ra.api_base import Call, NotFound, Param, Reply, Route, plain
from ca.ra.api_schemas import array_of, ref
from ca.store.domains import DomainStatus
from ca.store.model import StoreError, UnknownCertificate, UnknownOrder
from config.values import is_number

DOMAIN_BODY = {
    "type": "object",
    "required": ["client", "domain"],
    "properties": {"client": {"type": "string"}, "domain": {"type": "string"}},
}


def _service(call: Call, name: str, what: str) -> Any:
    service = getattr(call.services, name, None)
    if service is None:
        raise NotFound(f"{what} is not offered by this RA")
    return service


def domain_json(view: Any) -> dict[str, Any]:
    out: dict[str, Any] = plain(view)
    out["client"] = out.pop("account", None)
    out["txtRecord"] = {"name": view.record_name, "type": "TXT", "value": view.token}
    return out


def list_domains(call: Call) -> Reply:
    domains = _service(call, "domains", "domain pre-validation")
    client = call.arg("client")
    if client is not None:
        call.account(client, "read")
    accounts = [client] if client is not None else call.user.accounts("read")
    status = call.arg("status")
    found = [d for a in accounts for d in domains.list(account=a, status=status)]
    return Reply(json=[domain_json(d) for d in found])


def request_domain(call: Call) -> Reply:
    domains = _service(call, "domains", "domain pre-validation")
    client = call.req("client", limit=128)
    call.account(client, "domains")
    view = domains.request(client, call.req("domain", limit=253), by=call.actor)
    call.audit["domain"] = view.domain
    return Reply(201, domain_json(view))


def _path_domain(call: Call, permission: str) -> tuple[Any, str, str]:
    domains = _service(call, "domains", "domain pre-validation")
    client, domain = call.params["client"], call.params["domain"]
    call.account(client, permission, what=f"no domain {domain} for client {client}")
    call.audit["domain"] = domain[:253]
    return domains, client, domain


def get_domain(call: Call) -> Reply:
    domains, client, domain = _path_domain(call, "read")
    return Reply(json=domain_json(domains.get(client, domain)))


def check_domain(call: Call) -> Reply:
    domains, client, domain = _path_domain(call, "domains")
    return Reply(json=domain_json(domains.check(client, domain, by=call.actor)))


def delete_domain(call: Call) -> Reply:
    domains, client, domain = _path_domain(call, "domains")
    return Reply(json=domain_json(domains.delete(client, domain, by=call.actor)))


def notification_json(view: Any) -> dict[str, Any]:
    out: dict[str, Any] = plain(view)
    out.pop("body", None)  # may carry a PIN or a challenge code
    return out


def _order_account(call: Call, order_id: str, cache: dict[str, str | None]) -> str | None:
    if order_id not in cache:
        try:
            cache[order_id] = call.ca.store.get_order(order_id).account
        except UnknownOrder:
            cache[order_id] = None
    return cache[order_id]


def list_notifications(call: Call) -> Reply:
    notifier = _service(call, "notifier", "notifications")
    order_id, serial = call.arg("order"), call.arg("serial")
    if order_id is not None:
        _visible_order(call, order_id, "read")
    if serial is not None:
        try:
            if len(serial) > 80:
                raise UnknownCertificate(serial)
            cert = call.ca.store.get_certificate(serial)
        except UnknownCertificate:
            raise NotFound(f"no certificate with serial {serial}") from None
        if cert.order_id is None:
            raise NotFound(f"no certificate with serial {serial}")
        _visible_order(call, cert.order_id, "read")
        serial = cert.serial
    readable = set(call.user.accounts("read"))
    cache: dict[str, str | None] = {}
    found = [
        n for n in notifier.list(order_id=order_id, serial=serial)
        if n.order_id is not None and _order_account(call, n.order_id, cache) in readable
    ]  # fmt: skip
    return Reply(json=[notification_json(n) for n in found])


def _visible_order(call: Call, order_id: str, permission: str) -> None:
    missing = f"no order {order_id}"
    try:
        if len(order_id) > 40:  # ids are 40 characters: a cut-off longer one found the order
            raise UnknownOrder(order_id)
        account = call.ca.store.get_order(order_id).account
    except UnknownOrder:
        raise NotFound(missing) from None
    call.audit["order"] = order_id
    call.account(account, permission, what=missing)


def resend_notification(call: Call) -> Reply:
    notifier = _service(call, "notifier", "notifications")
    text = call.params["id"]
    missing = f"no notification {text}"
    if not is_number(text) or len(text) > 18:
        raise NotFound(missing)
    try:
        view = call.ca.store.get_notification(int(text))  # type: ignore[attr-defined]
    except StoreError:
        raise NotFound(missing) from None
    if view.order_id is None:
        raise NotFound(missing)
    _visible_order(call, view.order_id, "issue")
    return Reply(json=notification_json(notifier.resend(int(text), by=call.actor)))


def pickup_p12(call: Call) -> Reply:
    """The PKCS#12 behind a mailed link: the token is the credential (no JWT), once."""
    keygen = _service(call, "keygen", "PKCS#12 pick-up")
    data = keygen.pickup(call.params["token"])
    return Reply(body=data, content_type="application/x-pkcs12", headers={
        "Content-Disposition": 'attachment; filename="certificate.p12"',
        "Cache-Control": "no-store"})  # fmt: skip


_D = "/domains/{client}/{domain}"
ROUTES = (
    Route("GET", "/domains", list_domains, "Pre-validated domains", "domains", "read", query=(
        Param("client", "account"),
        Param("status", "domain status", enum=tuple(s.value for s in DomainStatus))),
        returns=array_of("Domain")),
    Route("POST", "/domains", request_domain, "Request a domain: TXT token to publish",
          "domains", "domains", body=DOMAIN_BODY, success=201, returns=ref("Domain")),
    Route("GET", _D, get_domain, "A domain and its validation", "domains", "read",
          returns=ref("Domain")),
    Route("POST", _D + "/check", check_domain, "Check the TXT record now", "domains",
          "domains", returns=ref("Domain")),
    Route("DELETE", _D, delete_domain, "Forget a domain", "domains", "domains",
          returns=ref("Domain")),
    Route("GET", "/notifications", list_notifications, "Mails sent for orders/certificates",
          "notifications", "read", query=(
              Param("order", "order id"), Param("serial", "certificate serial (hex)")),
          returns=array_of("Notification")),
    Route("POST", "/notifications/{id}/resend", resend_notification, "Send a mail again",
          "notifications", "issue", returns=ref("Notification")),
    Route("GET", "/p12/{token}", pickup_p12, "Pick up a server-generated PKCS#12 (once)",
          "pkcs12", auth=False, produces=("application/x-pkcs12",), secret_path=True,
          errors=(410,)),
)  # fmt: skip
