"""``cmcgate ca domain request|check|list|delete``: DNS domain pre-validation from the shell.

These commands open ``ca.yaml`` and the database only (no HSM login): an operator requests
a domain for an account, hands the printed TXT record to the domain's owner, and checks it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from ca.cli_orders import ca_dir, open_context
from ca.ra.domains import DomainService, DomainView


def _run(args: argparse.Namespace, action: Callable[[DomainService], int]) -> int:
    context = open_context(ca_dir(args))
    try:
        return action(DomainService(context))
    finally:
        context.store.close()


def _show(view: DomainView) -> None:
    print(f"{view.domain} ({view.account}): {view.status.value}")
    if view.valid_until is not None:
        print(f"  validated until {view.valid_until.isoformat()}")
    if view.last_error:
        print(f"  last check: {view.last_error}")


def cmd_request(args: argparse.Namespace) -> int:
    def action(service: DomainService) -> int:
        view = service.request(args.account, args.domain, by=args.operator)
        _show(view)
        print(f"publish this TXT record (token valid until {view.token_expires_at.isoformat()}):")
        print(f'{view.record_name}. 300 IN TXT "{view.token}"')
        print(f"then: cmcgate ca domain check {view.account} {view.domain}")
        return 0

    return _run(args, action)


def cmd_check(args: argparse.Namespace) -> int:
    def action(service: DomainService) -> int:
        view = service.check(args.account, args.domain, by=args.operator)
        _show(view)
        return 0 if view.status.value == "VALIDATED" else 1

    return _run(args, action)


def cmd_list(args: argparse.Namespace) -> int:
    def action(service: DomainService) -> int:
        views = service.list(args.account, args.status)
        if args.json:
            rows = [_json(v) for v in views]
            print(json.dumps(rows, indent=2))
            return 0
        for view in views:
            until = view.valid_until.date().isoformat() if view.valid_until else "-"
            print(f"{view.account:<24} {view.domain:<40} {view.status.value:<10} {until}")
        return 0

    return _run(args, action)


def cmd_delete(args: argparse.Namespace) -> int:
    def action(service: DomainService) -> int:
        view = service.delete(args.account, args.domain, by=args.operator)
        print(f"deleted {view.domain} ({view.account})")
        return 0

    return _run(args, action)


def _json(view: DomainView) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in asdict(view).items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    out["status"] = view.status.value
    return out


def register(sub: Any) -> None:
    parser = sub.add_parser("domain", help="DNS domain pre-validation (TXT token)")
    domain_sub = parser.add_subparsers(dest="domain_command", metavar="COMMAND", required=True)
    operator = os.environ.get("USER", "operator")

    def add(name: str, func: Any, help_text: str, *, one: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = domain_sub.add_parser(name, help=help_text)
        p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
        if one:
            p.add_argument("account")
            p.add_argument("domain")
            p.add_argument("--operator", default=operator)
        p.set_defaults(func=func)
        return p

    add("request", cmd_request, "a new token for a domain; prints the TXT record to publish")
    add("check", cmd_check, "look the token up in DNS now (exit 1 unless validated)")
    add("delete", cmd_delete, "forget a domain (its addresses need validating again)")
    p = add("list", cmd_list, "domains and their validation status", one=False)
    p.add_argument("--account")
    p.add_argument("--status", help="pending, validated or expired")
    p.add_argument("--json", action="store_true")
