"""RA API: what a user may order (products), for whom (clients), and publication jobs.

Clients are ca.yaml's accounts; a user sees those they hold a grant for, with their
permissions and the email domains the operator validated in ca.yaml. Jobs are the LDAP
publication queue (:mod:`ca.store.jobs`); the manual's "retry" puts a FAILED/RETRY job back
to PENDING, due now.
"""

from __future__ import annotations

from typing import Any

from ca.ra.api_base import (
    PAGING,
    SERIAL_PATTERN,
    Call,
    NotFound,
    Param,
    Reply,
    Route,
    plain,
)
from ca.ra.api_schemas import array_of, ref
from ca.settings.types import ProductSettings
from ca.store.model import JobStatus, UnknownJob
from config.values import is_number


def product_json(product: ProductSettings, clients: list[str]) -> dict[str, Any]:
    return {
        "id": product.id,
        "profile": product.profile.value,
        "validities": [v.text for v in product.validities],
        "keyTypes": [k.value for k in product.key_types],
        "approval": product.approval.value,
        "keyGeneration": product.key_generation.value,
        "mailboxValidation": product.mailbox_validation,
        "publishLdap": product.publish_ldap,
        "clients": clients,
    }


def list_products(call: Call) -> Reply:
    offered: dict[str, list[str]] = {}
    for account_id in sorted(call.user.grants):
        account = call.ca.settings.account(account_id)
        for product_id in account.products if account else ():
            offered.setdefault(product_id, []).append(account_id)
    out = []
    for product_id, clients in sorted(offered.items()):
        product = call.ca.settings.product(product_id)
        if product is not None:
            out.append(product_json(product, clients))
    return Reply(json=out)


def list_clients(call: Call) -> Reply:
    out = []
    for account_id, permissions in sorted(call.user.grants.items()):
        account = call.ca.settings.account(account_id)
        if account is None:  # a grant on an account since removed from ca.yaml
            continue
        out.append({
            "id": account.id,
            "organisation": account.organisation.name,
            "country": account.organisation.country,
            "emailDomains": list(account.email_domains),
            "products": list(account.products),
            "permissions": sorted(permissions),
        })  # fmt: skip
    return Reply(json=out)


def list_jobs(call: Call) -> Reply:
    serial = call.arg_serial("serial")
    jobs = call.ca.store.search_jobs(
        call.user.accounts("read"), status=call.arg_enum("status", JobStatus), serial=serial,
        page=call.page(),
    )  # fmt: skip
    return Reply(json=[plain(j) for j in jobs])


def retry_job(call: Call) -> Reply:
    text = call.params["id"]
    missing = f"no publication job {text}"
    if not is_number(text) or len(text) > 18:
        raise NotFound(missing)
    try:
        job = call.ca.store.get_job(int(text))
    except UnknownJob:
        raise NotFound(missing) from None
    if job.order_id is None:
        raise NotFound(missing)
    call.audit.update(serial=job.serial, order=job.order_id, job=job.id)
    call.account(call.ca.store.get_order(job.order_id).account, "publish", what=missing)
    return Reply(json=plain(call.ca.store.requeue_job(job.id)))


ROUTES = (
    Route("GET", "/products", list_products, "Products the user's clients may order", "clients",
          returns=array_of("Product")),
    Route("GET", "/clients", list_clients, "The user's clients and permissions", "clients",
          returns=array_of("Client")),
    Route("GET", "/jobs", list_jobs, "Publication jobs", "jobs", "read", query=(
        Param("status", "job status", enum=tuple(s.value for s in JobStatus)),
        Param("serial", "certificate serial (hex)", pattern=SERIAL_PATTERN),
        *PAGING), returns=array_of("Job")),
    Route("POST", "/jobs/{id}/retry", retry_job, "Retry a failed publication job", "jobs",
          "publish", returns=ref("Job")),
)  # fmt: skip
