"""``cmcgate gateway certs ...``: list, import, show and remove the gateway's certificates
(``revoke``, ``fetch`` and ``pending`` at the external CA: :mod:`gateway.certs.ca_cli`).

Every command opens the stores either from the gateway properties file (``--config FILE``) or
from explicit options: ``--store DSN`` and, where users' keys are involved, ``--keys-dir DIR``
with ``--keys-password-file FILE`` (the software key backend). ``list`` and ``show`` open the
certificate store alone: they need no key passphrase and no HSM PIN.

``import`` takes a PEM file that may hold a chain: the end-entity certificate for ``--email``
is stored as the user's certificate, the CA certificates with it are kept in the store's chain
table and sent along when the gateway signs with that certificate.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from ca.keys import read_secret
from gateway.certs.keystore import load_private_key_pem
from gateway.certs.models import (
    CertificateRecord,
    Source,
    normalise_email,
    split_chain,
)
from gateway.certs.setup import (
    GatewayStores,
    StoreConfigError,
    StoreSettings,
    open_from_config,
    open_stores,
)


def register_certs(gateway_subparsers: Any) -> None:
    """Add ``certs`` and its subcommands to the ``gateway`` group's subparsers."""
    certs: argparse.ArgumentParser = gateway_subparsers.add_parser(
        "certs", help="the gateway's certificates and users' private keys"
    )
    sub = certs.add_subparsers(dest="certs_command", metavar="COMMAND")

    p = sub.add_parser("list", help="list stored certificates")
    _store_options(p)
    p.add_argument("--email", help="only certificates for this address")
    p.add_argument(
        "--expiring-within", type=_days, metavar="DAYS", help="only those expiring within DAYS"
    )
    p.add_argument("--source", choices=[s.value for s in Source], help="only from this source")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("import", help="import a certificate (and its private key)")
    _store_options(p)
    p.add_argument("--email", required=True, help="the address the certificate is for")
    p.add_argument("--cert", required=True, type=Path, help="PEM certificate, may hold a chain")
    p.add_argument("--key", type=Path, help="PEM private key of the certificate")
    p.add_argument("--key-password-file", type=Path, help="file holding the key's password")
    p.add_argument(
        "--source",
        choices=[s.value for s in Source],
        default=Source.IMPORTED.value,
        help="record the certificate as coming from here (default: imported)",
    )
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("show", help="show one certificate")
    _store_options(p)
    p.add_argument("reference", metavar="SERIAL|FINGERPRINT")
    p.add_argument("--pem", action="store_true", help="also print the certificate as PEM")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("remove", help="remove one certificate")
    _store_options(p)
    p.add_argument("reference", metavar="SERIAL|FINGERPRINT")
    p.add_argument(
        "--delete-key", action="store_true", help="also destroy its private key in the backend"
    )
    p.set_defaults(func=cmd_remove)

    from gateway.certs.ca_cli import register_ca_commands

    register_ca_commands(sub)


def _store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the certificates and keys are")
    group.add_argument("--config", type=Path, metavar="FILE", help="gateway properties file")
    group.add_argument("--store", metavar="DSN", help="certificate store, e.g. sqlite:///gw.db")
    group.add_argument("--keys-dir", type=Path, metavar="DIR", help="software key backend dir")
    group.add_argument(
        "--keys-password-file", type=Path, metavar="FILE", help="passphrase of --keys-dir"
    )


def _days(text: str) -> timedelta:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError("the number of days must not be negative")
    return timedelta(days=days)


def open_from_args(args: argparse.Namespace, *, keys: bool = True) -> GatewayStores:
    """The stores named by ``--config`` or by ``--store``/``--keys-dir``.

    ``keys=False`` (``list``, ``show``): the certificate store alone; the key passphrase or
    HSM PIN is not read, so an operator without access to it can still look.
    """
    if args.config is not None:
        if args.store or args.keys_dir or args.keys_password_file:
            raise StoreConfigError("give either --config or --store/--keys-dir, not both")
        return open_from_config(args.config, keys=keys)
    if not args.store:
        raise StoreConfigError("say where the certificates are: --config FILE or --store DSN")
    if (args.keys_dir is None) != (args.keys_password_file is None):
        raise StoreConfigError("--keys-dir and --keys-password-file go together")
    if args.keys_dir is None or not keys:
        return open_stores(StoreSettings(dsn=args.store))
    backend = {"directory": str(args.keys_dir), "passphrase_file": str(args.keys_password_file)}
    return open_stores(StoreSettings(dsn=args.store, key_backend="software", key_settings=backend))


# -- commands -------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with open_from_args(args, keys=False) as stores:
        records = stores.certs.find(
            email=args.email, expiring_within=args.expiring_within, source=args.source
        )
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2), file=out)
    else:
        print(format_table(records, datetime.now(UTC)), file=out)
    return 0


def cmd_import(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    email = normalise_email(args.email)
    leaf, chain = split_chain(read_certificates(args.cert), email)
    key = None
    if args.key is not None:
        password = None
        if args.key_password_file is not None:
            password = read_secret(file=args.key_password_file)
        key = load_private_key_pem(_read(args.key), password)
    elif args.key_password_file is not None:
        raise StoreConfigError("--key-password-file without --key")
    with open_from_args(args) as stores:
        label = created = None
        if key is not None:
            keys = stores.require_keys()
            known = keys.find_label(email, key.public_key())
            label = keys.import_for_certificate(leaf, email, key)
            created = None if known else label
        elif stores.keys is not None:  # a key the gateway generated or was given earlier
            label = stores.keys.find_label(email, leaf.public_key())
        try:
            record = stores.certs.add(leaf, args.source, key_label=label)
        except BaseException:
            if created is not None and stores.keys is not None:
                stores.keys.delete(created)
            raise
        kept = stores.certs.add_chain(chain)
    print(f"imported certificate {record.serial} for {', '.join(record.emails)}", file=out)
    print(f"  fingerprint  {record.fingerprint}", file=out)
    print(f"  source       {record.source.value}", file=out)
    print(f"  usable for   {_usage(record)}", file=out)
    print(f"  private key  {record.key_label or 'none'}", file=out)
    if chain:
        print(f"  chain        {len(chain)} CA certificate(s), {kept} new", file=out)
    return 0


def cmd_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with open_from_args(args, keys=False) as stores:
        record = stores.certs.get(args.reference)
    if args.json:
        data = record.to_json()
        if args.pem:
            data["pem"] = record.pem()
        print(json.dumps(data, indent=2), file=out)
        return 0
    print(format_record(record, datetime.now(UTC)), file=out)
    if args.pem:
        print(record.pem(), end="", file=out)
    return 0


def cmd_remove(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with open_from_args(args) as stores:
        keys = stores.require_keys() if args.delete_key else None
        record = stores.certs.remove(args.reference)
        print(f"removed certificate {record.serial} of {', '.join(record.emails)}", file=out)
        if record.key_label is None:
            return 0
        if keys is None:
            print(f"  its private key {record.key_label} is kept (--delete-key)", file=out)
            return 0
        still_used = [
            r
            for email in record.emails
            for r in stores.certs.find(email=email)
            if r.key_label == record.key_label
        ]
        if still_used:
            print(
                f"  its private key {record.key_label} is kept: certificate"
                f" {still_used[0].serial} uses it too",
                file=out,
            )
        else:
            keys.delete(record.key_label)
            print(f"  deleted private key {record.key_label}", file=out)
    return 0


# -- pure helpers ---------------------------------------------------------------------------
def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as ex:
        raise StoreConfigError(f"cannot read {path}: {ex.strerror}") from ex


def read_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or the one in a DER file)."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as ex:
        raise StoreConfigError(f"{path} holds no readable certificate: {ex}") from ex


def _usage(record: CertificateRecord) -> str:
    uses = [u for u, ok in (("signing", record.can_sign), ("encryption", record.can_encrypt)) if ok]
    return " and ".join(uses) or "nothing (no emailProtection usage)"


def _state(record: CertificateRecord, at: datetime) -> str:
    if record.revocation.value == "revoked":
        return "revoked"
    if at < record.not_before:
        return "not yet valid"
    if at > record.not_after:
        return "expired"
    return "valid"


def format_table(records: list[CertificateRecord], at: datetime) -> str:
    """One line per certificate, with a header; ``no certificates`` when empty."""
    if not records:
        return "no certificates"
    rows = [("SERIAL", "NOT AFTER", "STATE", "SOURCE", "USE", "KEY", "EMAILS")]
    for r in records:
        use = ("S" if r.can_sign else "-") + ("E" if r.can_encrypt else "-")
        rows.append(
            (
                r.serial,
                r.not_after.strftime("%Y-%m-%d"),
                _state(r, at),
                r.source.value,
                use,
                "yes" if r.has_private_key else "no",
                ",".join(r.emails),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def format_record(record: CertificateRecord, at: datetime) -> str:
    checked = record.revocation_checked_at
    revocation = record.revocation.value + (
        f" (checked {checked:%Y-%m-%d %H:%M}Z)" if checked else ""
    )
    lines = [
        ("serial", record.serial),
        ("fingerprint", f"SHA-256 {record.fingerprint}"),
        ("subject", record.subject),
        ("issuer", record.issuer),
        ("emails", ", ".join(record.emails)),
        ("source", record.source.value),
        ("valid", f"{record.not_before:%Y-%m-%d %H:%M}Z to {record.not_after:%Y-%m-%d %H:%M}Z"),
        ("state", _state(record, at)),
        ("key", f"{record.key_algorithm}, usable for {_usage(record)}"),
        ("revocation", revocation),
        ("private key", record.key_label or "none"),
    ]
    return "\n".join(f"{name + ':':<13}{value}" for name, value in lines)


__all__ = [
    "cmd_import",
    "cmd_list",
    "cmd_remove",
    "cmd_show",
    "format_record",
    "format_table",
    "open_from_args",
    "read_certificates",
    "register_certs",
]
