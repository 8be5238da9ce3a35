"""``cmcgate config ...`` commands.

``config check FILE [--json]``
    Load FILE; on success print the effective configuration (secrets redacted) on stdout and
    warnings on stderr, exit 0.  On failure print every issue as ``FILE:LINE: KEY: problem``
    on stderr (no ``cmcgate:`` prefix) and exit 2.
``config subject FILE EMAIL [--display-name NAME]``
    Show the subject and SAN that certSubjectDN gives for one user.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from config.checks import check_files
from config.dn import format_dn
from config.errors import ConfigError, ConfigIssue, DnError
from config.properties import load
from config.render import effective, text_lines


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="check and show configuration files"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check", help="validate a properties file and print the effective configuration"
    )
    check.add_argument("file", help="the properties file")
    check.add_argument("--json", action="store_true", help="print the configuration as JSON")
    check.set_defaults(func=check_command)
    subject = commands.add_parser(
        "subject", help="show the subject certSubjectDN gives for one address"
    )
    subject.add_argument("file", help="the properties file")
    subject.add_argument("email", help="the user's e-mail address")
    subject.add_argument("--display-name", default=None, help="the user's display name")
    subject.set_defaults(func=subject_command)


def _print_issues(issues: list[ConfigIssue] | tuple[ConfigIssue, ...]) -> None:
    ordered = sorted(issues, key=lambda issue: (issue.path, issue.line or 0))
    for issue in ordered:
        print(issue, file=sys.stderr)


def check_command(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        _print_issues([*exc.errors, *exc.warnings])
        return exc.exit_code
    _print_issues([*config.warnings, *check_files(config)])
    if args.json:
        print(json.dumps(effective(config), indent=2, sort_keys=False))
    else:
        print(f"{args.file}: OK")
        for line in text_lines(config):
            print(f"  {line}")
    return 0


def subject_command(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        _print_issues(list(exc.errors))
        return exc.exit_code
    if config.pki is None:
        print(f"{args.file}: security.pkiConnection.enabled is not true", file=sys.stderr)
        return 2
    try:
        name, emails = config.pki.subject_for(args.email, args.display_name)
    except DnError as exc:
        print(f"cmcgate: {exc}", file=sys.stderr)
        return 2
    print(f"kind: {config.pki.product_kind.value} (from {config.pki.product_kind_source})")
    print(f"subject: {format_dn(name)}")
    print(f"san: {', '.join(f'rfc822Name:{email}' for email in emails)}")
    return 0
