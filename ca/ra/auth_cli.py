"""``cmcgate ca api-user ...``, ``cmcgate ca api-key ...`` and ``cmcgate ca openapi``.

cmcgate ca api-user add billing --grant example.ra:read,issue,revoke
cmcgate ca api-user disable billing    # its JWTs and keys are refused at once (enable: back)
cmcgate ca api-key create billing      # prints the key once: store it now
cmcgate ca api-key roll billing        # new key; the old one works 7 more days
cmcgate ca api-key delete billing key-0123abcd
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ca.cli_orders import open_ca
from ca.store.apikeys import ApiUserView
from config.errors import CmcgateError


class AuthCliError(CmcgateError):
    """A malformed --grant."""


def _operator() -> str:
    return os.environ.get("USER", "cli")


def _grants(values: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in values or ():
        account, sep, perms = value.partition(":")
        if not sep or not account.strip() or not perms.strip():
            raise AuthCliError(f"--grant {value!r}: use ACCOUNT:PERM[,PERM...]")
        out.setdefault(account.strip(), []).extend(p for p in perms.split(",") if p.strip())
    return out


def _auth(args: argparse.Namespace) -> Any:
    from ca.ra.auth import RaAuth

    ca = open_ca(args)
    return ca, RaAuth(ca)


def _show(user: ApiUserView) -> None:
    state = " (disabled)" if user.disabled else ""
    print(f"{user.name}  {user.type}{state}  created {user.created_at:%Y-%m-%d %H:%M}Z")
    for account, perms in user.grants:
        print(f"  grant {account}: {','.join(perms)}")
    for key in user.keys:
        status = "deleted" if key.deleted_at else "superseded" if key.superseded_at else "active"
        print(f"  key {key.id}  {status}  created {key.created_at:%Y-%m-%d %H:%M}Z")


def cmd_user_add(args: argparse.Namespace) -> int:
    ca, auth = _auth(args)
    with ca:
        _show(auth.create_user(args.name, _grants(args.grant), by=_operator()))
    return 0


def cmd_user_grant(args: argparse.Namespace) -> int:
    ca, auth = _auth(args)
    with ca:
        for account, perms in _grants(args.grant).items():
            auth.grant(args.name, account, perms, by=_operator())
        for account in args.remove or ():
            auth.revoke_grant(args.name, account, by=_operator())
        _show(ca.store.get_api_user(args.name))
    return 0


def cmd_user_state(args: argparse.Namespace) -> int:
    ca, auth = _auth(args)
    with ca:
        change = auth.disable_user if args.user_command == "disable" else auth.enable_user
        _show(change(args.name, by=_operator()))
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    ca, auth = _auth(args)
    with ca:
        for user in auth.list_users():
            _show(user)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    ca, auth = _auth(args)
    with ca:
        if args.key_command == "delete":
            view = auth.delete_key(args.name, args.key_id, by=_operator())
            print(f"key {view.id} of {args.name} deleted: refused from now on")
            return 0
        key, view = auth.issue_key(args.name, roll=args.key_command == "roll", by=_operator())
        days = ca.settings.ra.api_key_rollover_days
    print(key)
    note = f"; the previous key stays valid {days} days" if args.key_command == "roll" else ""
    print(f"key {view.id} for {args.name}: shown once, store it now{note}", file=sys.stderr)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from ca.ra.api import ROUTES
    from ca.ra.openapi import document_text

    text = document_text(ROUTES)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    def dir_arg(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
        return p

    users = sub.add_parser("api-user", help="RA API users and their permissions per account")
    users_sub = users.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    p = dir_arg(users_sub.add_parser("add", help="add a SERVICE user"))
    p.add_argument("name")
    p.add_argument("--grant", action="append", metavar="ACCOUNT:PERMS",
                   help="e.g. example.ra:read,issue,revoke (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_user_add)
    p = dir_arg(users_sub.add_parser("grant", help="set or remove a user's permissions"))
    p.add_argument("name")
    p.add_argument("--grant", action="append", metavar="ACCOUNT:PERMS")
    p.add_argument("--remove", action="append", metavar="ACCOUNT")
    p.set_defaults(func=cmd_user_grant)
    for name, text in (("disable", "refuse the user's JWTs and keys at once"),
                       ("enable", "accept the user's valid keys again")):  # fmt: skip
        p = dir_arg(users_sub.add_parser(name, help=text))
        p.add_argument("name")
        p.set_defaults(func=cmd_user_state)
    p = dir_arg(users_sub.add_parser("list", help="users, grants and keys (never the keys)"))
    p.set_defaults(func=cmd_user_list)

    keys = sub.add_parser("api-key", help="API keys of RA API users")
    keys_sub = keys.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    for name, text in (
        ("create", "a new key (printed once)"),
        ("roll", "a new key; the previous stays valid for the rollover days"),
    ):
        p = dir_arg(keys_sub.add_parser(name, help=text))
        p.add_argument("name")
        p.set_defaults(func=cmd_key)  # fmt: skip
    p = dir_arg(keys_sub.add_parser("delete", help="refuse a key (and its JWTs) at once"))
    p.add_argument("name")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("openapi", help="print the RA API's OpenAPI document")
    p.add_argument("--out", help="write it to this file instead")
    p.set_defaults(func=cmd_openapi)
