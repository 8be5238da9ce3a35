"""``cmcgate ca keygen``, ``cmcgate ca renew`` and ``cmcgate ca cleanup``.

``keygen`` never prints the PIN, the pick-up link or the key: they reach the subscriber only
by mail (two separate mails), as the RA manual's PKCS#12 products do.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from ca.authority import IssueResult
from ca.cli_orders import CaCliError, open_ca
from ca.ra.keygen import KeygenResult
from ca.ra.notify import Notifier


def cmd_keygen(args: argparse.Namespace) -> int:
    from ca.ra.keygen import KeygenService

    with open_ca(args) as ca:
        service = KeygenService(ca, Notifier(ca))
        result = service.order(
            args.account, args.product, args.email, requested_by=args.requested_by,
            validity=args.validity, given_name=args.given_name, surname=args.surname,
            subject=args.subject, key_type=args.key_type,
        )  # fmt: skip
        until = f"{result.pickup_expires:%Y-%m-%d}"
        print(f"order {result.order_id} {result.status} serial {result.serial} "
              f"({result.key_type}); PIN and pick-up link mailed separately to "
              f"{result.pkcs12.email}, downloadable until {until}")  # fmt: skip
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    from ca.ra.renewal import RenewalService

    csr = None
    if args.csr:
        try:
            csr = Path(args.csr).read_bytes()
        except OSError as exc:
            raise CaCliError(f"{args.csr}: {exc.strerror}") from None
    with open_ca(args) as ca:
        service = RenewalService(ca, Notifier(ca))
        result = service.renew(args.serial, by=args.operator, csr_der=csr)
        if isinstance(result, KeygenResult):
            print(f"order {result.order_id} {result.status} serial {result.serial}: new key, "
                  f"PIN and pick-up link mailed to {result.pkcs12.email}")  # fmt: skip
        elif isinstance(result, IssueResult):
            order = result.order
            serial = f" serial {order.certificate_serial}" if order.certificate_serial else ""
            print(f"order {order.id} {order.status.value}{serial}")
        else:
            print(f"order {result.id} {result.status.value}: waiting for the renewal CSR "
                  f"(`cmcgate ca renew {args.serial} --csr FILE` makes a new order; "
                  "the REST API takes it for this one)")  # fmt: skip
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from ca.ra.cleanup import cleanup_lost_orders

    with open_ca(args) as ca:
        done = cleanup_lost_orders(
            ca, stuck_after=timedelta(minutes=args.stuck_minutes),
            renewal_csr_days=args.renewal_days,
        )  # fmt: skip
        for item in done:
            print(item.line())
        print(f"{len(done)} order(s) cleaned up")
    return 0


def register(sub: Any) -> None:
    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
        p.set_defaults(func=func)
        return p

    p = add("keygen", cmd_keygen, "order a certificate with a CA-made key (PKCS#12 by mail)")
    p.add_argument("--account", required=True)
    p.add_argument("--product", required=True)
    p.add_argument("--email", action="append", required=True, help="repeatable")
    p.add_argument("--validity", help="one of the product's validities, e.g. 1y")
    p.add_argument("--key-type", help="one of the product's key types (default: its first)")
    p.add_argument("--subject", help="requested subject DN (default CN=<email>)")
    p.add_argument("--given-name")
    p.add_argument("--surname")
    p.add_argument("--requested-by", default=os.environ.get("USER", "cli"))

    p = add("renew", cmd_renew, "renew a certificate (new order linked to it)")
    p.add_argument("serial")
    p.add_argument("--csr", help="the renewal CSR (PEM or DER); without it the order waits")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"))

    p = add("cleanup", cmd_cleanup, "clean up lost orders (UNKNOWN) and overdue renewals once")
    p.add_argument(
        "--stuck-minutes", type=float, default=15.0,
        help="an in-progress order untouched this long is lost (default 15)",
    )  # fmt: skip
    p.add_argument(
        "--renewal-days", type=int, default=30, help="days a renewal waits for its CSR (default 30)"
    )


__all__ = ["register"]
