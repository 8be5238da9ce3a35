"""``cmcgate ca list --status|--stuck`` (orders rather than certificates) and
``cmcgate ca recover``; the read-only way into a CA directory the listing commands use.

Read-only commands open only ``ca.yaml`` and the database: no HSM login, no key passphrase,
so an operator can look at a CA whose PIN file they cannot read.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca.store.model import CertificateStatus, OrderStatus, OrderView
from ca.store.orders import Store
from config.errors import CmcgateError

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority
    from ca.ra.context import StoreContext


class CaCliError(CmcgateError):
    """A CA command could not run (unreadable input, no such CA)."""


#: ``--status`` words that name certificate statuses; every other word is an order status.
CERTIFICATE_STATUSES = {s.value.lower(): s for s in CertificateStatus}
_ORDER_ALIASES = {"pending": OrderStatus.PENDING_AUTHORIZATION}


def ca_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or os.environ.get("CMCGATE_CA_DIR") or ".")


def ca_yaml_of(directory: Path) -> Path:
    ca_yaml = directory / "ca.yaml"
    if not ca_yaml.exists():
        raise CaCliError(f"{ca_yaml}: no CA here (run `cmcgate ca init --dir {directory}`)")
    return ca_yaml


def open_ca(args: argparse.Namespace) -> CertificateAuthority:
    """The whole CA, keys included (commands that sign)."""
    from ca.authority import CertificateAuthority

    return CertificateAuthority.open(ca_yaml_of(ca_dir(args)))


def open_context(directory: Path) -> StoreContext:
    """ca.yaml and the database (tables made, with the audit HMAC key), no key backend: what
    the RA's operator commands give the RA services instead of the whole CA."""
    from ca.ra.context import StoreContext
    from ca.settings.loader import load_ca_settings

    settings = load_ca_settings(ca_yaml_of(directory))
    store = Store.open(settings.ca.database, audit_hmac_key=settings.ca.audit_hmac_key_file)
    store.create_all()
    return StoreContext(store, settings)


def open_store(directory: Path, *, audit_key: bool = False) -> Store:
    """The CA's database alone (no key backend); ``audit_key``: with the audit HMAC key."""
    from ca.settings.loader import load_ca_settings

    settings = load_ca_settings(ca_yaml_of(directory)).ca
    key = settings.audit_hmac_key_file if audit_key else None
    return Store.open(settings.database, audit_hmac_key=key)


def parse_status(text: str) -> CertificateStatus | OrderStatus:
    """``valid``/``revoked``/``expired`` (certificates), ``pending`` or an order status."""
    norm = text.strip().lower().replace("-", "_")
    if norm in CERTIFICATE_STATUSES:
        return CERTIFICATE_STATUSES[norm]
    if norm in _ORDER_ALIASES:
        return _ORDER_ALIASES[norm]
    try:
        return OrderStatus(norm.upper())
    except ValueError:
        words = [*CERTIFICATE_STATUSES, *_ORDER_ALIASES, *(s.value.lower() for s in OrderStatus)]
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}: use one of {', '.join(dict.fromkeys(words))}"
        ) from None


def list_orders(store: Store, args: argparse.Namespace) -> int:
    """``--stuck`` (in-progress orders) or ``--status <order status>``."""
    from ca.recovery import stuck_orders

    if args.stuck:
        orders = stuck_orders(store)
    else:
        orders = store.find_orders(status=args.status)
    if args.email:
        wanted = args.email.strip().lower()
        orders = [o for o in orders if wanted in (e.lower() for e in o.emails)]
    rows = [_order_row(o) for o in orders]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no orders")
    for row in rows:
        reason = f"  {row['reason']}" if row["reason"] else ""
        print(
            f"{row['order']}  {row['status']:21}  {row['updated'][:19]}  {row['account']}  "
            f"{row['product']}  {','.join(row['emails'])}{reason}"
        )
    return 0


def _order_row(order: OrderView) -> dict[str, Any]:
    return {
        "order": order.id, "status": order.status.value, "updated": order.updated_at.isoformat(),
        "account": order.account, "product": order.product, "emails": list(order.emails),
        "serial": order.certificate_serial, "reason": order.failure_reason,
    }  # fmt: skip


def cmd_recover(args: argparse.Namespace) -> int:
    from ca.authority import CertificateAuthority
    from ca.recovery import recover

    with CertificateAuthority.open(ca_yaml_of(ca_dir(args))) as ca:
        done = recover(ca, older_than=timedelta(seconds=args.older_than))
    for item in done:
        print(item.line())
    print(f"{len(done)} order(s) recovered")
    return 1 if any(item.action == "error" for item in done) else 0


def register_recover(sub: Any, add: Any) -> None:
    p = add("recover", cmd_recover, "finish or fail orders a stopped CA left in progress")
    p.add_argument(
        "--older-than", type=float, default=60.0, metavar="SECONDS",
        help="only orders untouched this long (default 60: leave a running CA's orders alone)",
    )  # fmt: skip


__all__ = ["CaCliError", "cmd_recover", "list_orders", "open_store", "parse_status"]
