"""``cmcgate ca notifications list|resend|mute|unmute`` and ``cmcgate ca renewal-emails``.

These open ca.yaml and the database only (no HSM login): an operator resends a mail the SMTP
server did not take (manual 3.5.1), mutes an address (3.8.1) or sets a certificate's
additional renewal emails (3.4.5).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ca.cli_orders import ca_dir, open_context
from ca.ra.notify import Notifier
from ca.store.notifications import NotificationView


def _notifier(args: argparse.Namespace) -> Notifier:
    return Notifier(open_context(ca_dir(args)))


def _row(n: NotificationView) -> dict[str, Any]:
    return {
        "id": n.id, "kind": n.kind, "recipient": n.recipient, "status": n.status.value,
        "attempts": n.attempts, "order": n.order_id, "serial": n.serial,
        "created": n.created_at.isoformat(), "sent": n.sent_at.isoformat() if n.sent_at else None,
        "error": n.last_error, "subject": n.subject,
    }  # fmt: skip


def _print(rows: list[NotificationView], as_json: bool) -> None:
    if as_json:
        print(json.dumps([_row(n) for n in rows], indent=2))
        return
    for n in rows:
        error = f"  ({n.last_error})" if n.last_error else ""
        print(f"{n.id:>5}  {n.status.value:<6}  {n.kind:<18}  {n.recipient}  "
              f"order={n.order_id or '-'}  serial={n.serial or '-'}{error}")  # fmt: skip


def cmd_list(args: argparse.Namespace) -> int:
    notifier = _notifier(args)
    try:
        rows = notifier.list(order_id=args.order, serial=args.serial, recipient=args.recipient,
                             status=args.status)  # fmt: skip
        _print(rows, args.json)
        return 0
    finally:
        notifier.store.close()


def cmd_resend(args: argparse.Namespace) -> int:
    notifier = _notifier(args)
    try:
        row = notifier.resend(args.id, by=args.operator)
        _print([row], args.json)
        return 0 if row.last_error is None else 1
    finally:
        notifier.store.close()


def cmd_mute(args: argparse.Namespace) -> int:
    notifier = _notifier(args)
    try:
        if args.mute:
            notifier.mute(args.email, by=args.operator)
        else:
            notifier.unmute(args.email, by=args.operator)
        state = "muted" if notifier.muted(args.email) else "not muted"
        print(f"{args.email.strip().lower()}: {state}")
        return 0
    finally:
        notifier.store.close()


def cmd_renewal_emails(args: argparse.Namespace) -> int:
    notifier = _notifier(args)
    try:
        if args.emails or args.clear:
            emails = notifier.set_renewal_emails(args.serial, args.emails, by=args.operator)
        else:
            emails = notifier.renewal_emails(args.serial)
        print("\n".join(emails) if emails else "(no additional renewal emails)")
        return 0
    finally:
        notifier.store.close()


def register(sub: Any) -> None:
    operator = os.environ.get("USER", "operator")

    def common(p: argparse.ArgumentParser, func: Any) -> argparse.ArgumentParser:
        p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
        p.add_argument("--operator", default=operator)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        return p

    parser = sub.add_parser("notifications", help="mails sent by the RA: list, resend, mute")
    nsub = parser.add_subparsers(dest="notifications_command", metavar="COMMAND", required=True)
    p = common(nsub.add_parser("list", help="sent, failed and muted notifications"), cmd_list)
    p.add_argument("--order", help="of this order")
    p.add_argument("--serial", help="of this certificate (hex serial)")
    p.add_argument("--recipient", help="to this address")
    p.add_argument("--status", choices=["sent", "failed", "muted"], type=str.lower)
    p = common(nsub.add_parser("resend", help="send a recorded notification again"), cmd_resend)
    p.add_argument("id", type=int)
    for name, mute in (("mute", True), ("unmute", False)):
        text = "no more notifications to" if mute else "notifications again to"
        p = common(nsub.add_parser(name, help=f"{text} EMAIL"), cmd_mute)
        p.add_argument("email")
        p.set_defaults(mute=mute)
    p = common(
        sub.add_parser("renewal-emails", help="a certificate's additional renewal emails"),
        cmd_renewal_emails,
    )
    p.add_argument("serial", help="hex serial")
    p.add_argument("emails", nargs="*", help="replace the list with these (none: show it)")
    p.add_argument("--clear", action="store_true", help="remove every additional address")
