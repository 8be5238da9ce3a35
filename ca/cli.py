"""``cmcgate ca ...``: init, issue, approve, list, show, revoke, crl, audit verify.

Every command works on a CA directory (``--dir``, default ``$CMCGATE_CA_DIR`` or ``.``).
A refused order prints its id and reason and exits 1; bad input (a file that cannot be
read, an unknown option value) exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ca.cli_orders import (
    CaCliError,
    ca_dir,
    ca_yaml_of,
    list_orders,
    open_ca,
    open_store,
    parse_status,
    register_recover,
)
from ca.keys import KeyType
from ca.store.model import CertificateStatus
from ca.store.orders import Store


def _dir(args: argparse.Namespace) -> Path:
    return ca_dir(args)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CaCliError(f"{path}: {exc.strerror}") from None


def cmd_init(args: argparse.Namespace) -> int:
    from ca.init import initialise

    backend = "pkcs11" if args.pin_file else "software"
    if backend == "software":
        print("no --pin-file: CA keys go into encrypted software key files (no HSM)")
    options: dict[str, Any] = {"base_url": args.base_url}
    if args.account:
        options["account_id"] = args.account
    if args.domain:
        options["email_domains"] = tuple(args.domain)
    if args.organisation:
        options["organisation_name"] = args.organisation
    initialise(
        _dir(args),
        key_backend=backend,
        pkcs11_module=args.pkcs11_module,
        token_label=args.token_label,
        pin_file=Path(args.pin_file) if args.pin_file else None,
        key_type=KeyType.parse(args.key_type),
        force=args.force,
        progress=lambda line: print(line, flush=True),
        **options,
    )
    return 0


def _load_csr(data: bytes) -> bytes:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data).public_bytes(serialization.Encoding.DER)
        return x509.load_der_x509_csr(data).public_bytes(serialization.Encoding.DER)
    except ValueError:
        # Let the CA record a FAILED order for an unparsable request too.
        return data


def _output(cert: x509.Certificate, chain: tuple[x509.Certificate, ...], fmt: str) -> bytes:
    if fmt == "der":
        return cert.public_bytes(serialization.Encoding.DER)
    if fmt == "p7b":
        return pkcs7.serialize_certificates([cert, *chain], serialization.Encoding.DER)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain))


def _print_refusal(exc: Any) -> int:
    print(f"order {exc.order_id or '-'} FAILED: {exc}", file=sys.stderr)
    return 1


def cmd_issue(args: argparse.Namespace) -> int:
    from ca.authority import OrderRefused

    if args.format != "pem" and not args.out:  # refuse before a certificate is issued
        raise CaCliError(f"--format {args.format} is binary: give --out FILE")
    csr = _load_csr(_read(args.csr))
    with open_ca(args) as ca:
        try:
            result = ca.submit(
                csr, args.account, args.product, args.validity,
                requested_by=args.requested_by, given_name=args.given_name, surname=args.surname,
            )  # fmt: skip
        except OrderRefused as exc:
            return _print_refusal(exc)
        order = result.order
        for c in order.subject_changes:
            print(f"subject {c.attribute}: {c.requested!r} -> {c.issued!r}: {c.reason}")
        if result.certificate is None:
            status = order.status.value
            print(f"order {order.id} {status}: approve with `cmcgate ca approve {order.id}`")
            return 0
        _write_certificate(args, result.certificate, result.chain)
        print(
            f"order {order.id} ISSUED serial {result.certificate.serial_number:x}", file=sys.stderr
        )
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Issue a waiting order; prints the certificate and chain like ``issue``."""
    from ca.authority import OrderRefused
    from ca.store.model import OrderStatus

    if args.format != "pem" and not args.out:
        raise CaCliError(f"--format {args.format} is binary: give --out FILE")
    with open_ca(args) as ca:
        order = ca.store.get_order(args.order)
        if order.status is OrderStatus.ISSUED and order.certificate_serial:
            serial = order.certificate_serial
            print(f"order {order.id} is already ISSUED (serial {serial}): nothing to approve",
                  file=sys.stderr)  # fmt: skip
            der = ca.store.get_certificate(serial).der
            _write_certificate(args, x509.load_der_x509_certificate(der), ca.chain)
            return 0
        if order.status is not OrderStatus.PENDING_AUTHORIZATION:
            why = f": {order.failure_reason}" if order.failure_reason else ""
            print(f"order {order.id} is {order.status.value}{why}: it cannot be approved",
                  file=sys.stderr)  # fmt: skip
            return 1
        try:
            result = ca.approve(
                args.order, args.operator, given_name=args.given_name, surname=args.surname
            )
        except OrderRefused as exc:
            return _print_refusal(exc)
        assert result.certificate is not None
        _write_certificate(args, result.certificate, result.chain)
        print(f"order {args.order} ISSUED serial {result.certificate.serial_number:x}",
              file=sys.stderr)  # fmt: skip
    return 0


def _write_certificate(
    args: argparse.Namespace, cert: x509.Certificate, chain: tuple[x509.Certificate, ...]
) -> None:
    data = _output(cert, () if args.format == "der" else chain, args.format)
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.write(data.decode())


def cmd_list(args: argparse.Namespace) -> int:
    """Certificates; orders with ``--stuck`` or ``--status <order status>`` (e.g. pending).

    Read-only: opens the database alone (no PIN, no key passphrase needed)."""
    within = timedelta(days=args.expiring_within) if args.expiring_within is not None else None
    certificate_status = args.status if isinstance(args.status, CertificateStatus) else None
    with open_store(_dir(args)) as store:
        if args.stuck or (args.status is not None and certificate_status is None):
            return list_orders(store, args)
        certs = store.find_certificates(
            email=args.email, expiring_within=within, status=certificate_status
        )
    rows: list[dict[str, Any]] = [
        {
            "serial": c.serial, "status": c.status.value, "not_after": c.not_after.isoformat(),
            "emails": list(c.emails), "subject": c.subject, "order": c.order_id,
        }
        for c in certs
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            emails = ",".join(row["emails"])
            status, until = row["status"], row["not_after"][:10]
            print(f"{row['serial']}  {status:8}  {until}  {emails}  {row['order']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ca.store.model import StoreError

    with open_store(_dir(args)) as store:
        if args.what.startswith("ord-"):
            order = store.get_order(args.what)
            print(f"order {order.id}\n  status   {order.status.value}\n  account  {order.account}")
            print(f"  product  {order.product}\n  requested {order.subject}")
            print(f"  emails   {', '.join(order.emails)}\n  validity {order.validity}")
            if order.failure_reason:
                print(f"  reason   {order.failure_reason}")
            for change in order.subject_changes:
                print(f"  changed  {change.attribute}: {change.requested!r} -> {change.issued!r}")
            for step in store.history(order.id):
                print(
                    f"  {step.at.isoformat()}  {step.to_status.value}  {step.note or ''}".rstrip()
                )
            if order.certificate_serial:
                issued = store.get_certificate(order.certificate_serial)
                print(f"  serial   {issued.serial}  ({issued.status.value})")
                print(f"  issued   {issued.subject}")
            return 0
        try:
            cert = store.get_certificate(args.what)
        except StoreError as exc:
            raise CaCliError(str(exc)) from None
        print(
            f"certificate {cert.serial}\n  status   {cert.status.value}\n  subject  {cert.subject}"
        )
        print(
            f"  emails   {', '.join(cert.emails)}\n  valid    {cert.not_before} .. {cert.not_after}"
        )
        print(f"  order    {cert.order_id}")
        sys.stdout.write(
            x509.load_der_x509_certificate(cert.der)
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with open_ca(args) as ca:
        view = ca.revoke(args.serial, args.reason, by=args.operator, comment=args.comment)
    print(f"revoked {view.serial} ({view.reason.rfc_name}); CRL regenerated")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    from ca import crl as crl_module

    with open_ca(args) as ca:
        crl = ca.root_crl() if args.root else ca.crl()
        published = ca.settings.ca.directory / "crl" / ("root.crl" if args.root else "issuing.crl")
        # one CRL (one CRL number) for both the served file and --out
        crl_module.write_atomically(published, crl.public_bytes(serialization.Encoding.DER))
    if args.out:
        encoding = serialization.Encoding.PEM if args.pem else serialization.Encoding.DER
        Path(args.out).write_bytes(crl.public_bytes(encoding))
    entries = len(list(crl))
    where = f"{published}" + (f" and {args.out}" if args.out else "")
    print(f"CRL with {entries} entries, next update {crl.next_update_utc}, written to {where}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from ca.store.audit import verify_audit

    # the store holds the audit key read from ca.yaml's audit.hmac_key_file, if any
    with open_store(_dir(args), audit_key=True) as store:
        report = verify_audit(store)
    if report.ok:
        mac = ""
        if report.mac_checked:
            mac = ", MACs checked" + (
                f" from record {report.mac_from} (HMAC turned on there)"
                if report.mac_from and report.mac_from > 1
                else ""
            )
        print(f"audit log intact: {report.records} records{mac}")
        return 0
    print(f"audit log BROKEN: {len(report.problems)} problem(s)", file=sys.stderr)
    for problem in report.problems:
        print(problem)
    return 1


def cmd_audit_enable_hmac(args: argparse.Namespace) -> int:
    """MAC every audit record from now on; a checkpoint record covers the earlier ones."""
    from ca.settings.loader import load_ca_settings
    from ca.store.audit import load_hmac_key
    from ca.store.audit_hmac import (
        enable_hmac,
        hmac_problem,
        name_key_file_in_ca_yaml,
        new_key_file,
    )

    ca_yaml = ca_yaml_of(_dir(args))
    settings = load_ca_settings(ca_yaml).ca
    configured = settings.audit_hmac_key_file
    wanted = Path(args.key_file).resolve() if args.key_file else None
    if configured is not None and wanted is not None and wanted != configured.resolve():
        raise CaCliError(f"{ca_yaml} names the audit key {configured} already")
    key_file = configured or wanted or settings.directory / "audit.key"
    store = Store.open(settings.database)
    try:
        if key_file.exists():
            key = load_hmac_key(key_file)
            why = hmac_problem(store, key)
            if why is not None:
                raise CaCliError(f"HMAC not turned on: {why}")
        else:
            why = hmac_problem(store, b"\0" * 32)  # no record can carry a MAC of a new key
            if why is not None:
                raise CaCliError(f"HMAC not turned on: {why}")
            key = new_key_file(key_file)
            print(f"new audit HMAC key in {key_file} (mode 600): back it up, keep it secret")
        if configured is None:
            original = ca_yaml.read_bytes()
            name_key_file_in_ca_yaml(ca_yaml, key_file)
            reloaded = load_ca_settings(ca_yaml).ca.audit_hmac_key_file
            if reloaded is None or reloaded.resolve() != key_file.resolve():
                ca_yaml.write_bytes(original)
                raise CaCliError(f"could not name {key_file} in {ca_yaml}: add it by hand")
            print(f"{ca_yaml}: audit.hmac_key_file set")
        record = enable_hmac(store, key, actor=args.operator)
    finally:
        store.close()
    if record is None:
        print("audit HMAC is on already: every record that must carry a MAC has one")
        return 0
    print(f"audit HMAC on from record {record.seq} (checkpoint; earlier records are pinned by it)")
    print("reload `cmcgate ca serve` (SIGHUP) so that it MACs what it appends")
    return 0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("ca", help="the bundled CA")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create root + S/MIME issuing CA, ca.yaml and the database")
    p.add_argument("--pkcs11-module", help="PKCS#11 module (default: SoftHSM2)")
    p.add_argument("--token-label", default="cmcgate")
    p.add_argument("--pin-file", help="token user PIN file; without it keys are software files")
    p.add_argument(
        "--key-type",
        default="rsa3072",
        choices=["rsa3072", "rsa4096", "ec-p384", "rsa2048", "ec-p256"],
    )
    p.add_argument(
        "--base-url", default="http://127.0.0.1:8480", help="http:// base of CRL/AIA URLs"
    )
    p.add_argument("--account", help="first account id (default totemoag.ra)")
    p.add_argument("--domain", action="append", help="validated email domain (repeatable)")
    p.add_argument("--organisation", help="the account's organisation name")
    p.add_argument("--force", action="store_true", help="replace an existing CA")

    p = add("issue", cmd_issue, "issue a certificate for a PKCS#10 request")
    p.add_argument("--csr", required=True)
    p.add_argument("--account", required=True)
    p.add_argument("--product", required=True)
    p.add_argument("--validity", help="one of the product's validities, e.g. 1y")
    p.add_argument("--given-name")
    p.add_argument("--surname")
    p.add_argument("--format", choices=["pem", "der", "p7b"], default="pem")
    p.add_argument("--out")
    p.add_argument("--requested-by", default=os.environ.get("USER", "cli"))

    p = add("approve", cmd_approve, "authorize an order waiting for approval; prints the cert")
    p.add_argument("order")
    p.add_argument("--format", choices=["pem", "der", "p7b"], default="pem")
    p.add_argument("--out")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"))
    p.add_argument("--given-name", help="validated given name (sponsor orders)")
    p.add_argument("--surname", help="validated surname (sponsor orders)")

    p = add("list", cmd_list, "list certificates (or orders: --status pending, --stuck)")
    p.add_argument("--expiring-within", type=int, metavar="DAYS")
    p.add_argument("--email")
    p.add_argument(
        "--status", type=parse_status,
        help="valid|revoked|expired (certificates), or an order status: pending, failed, ...",
    )  # fmt: skip
    p.add_argument("--stuck", action="store_true", help="orders a stopped CA left in progress")
    p.add_argument("--json", action="store_true")
    register_recover(sub, add)

    p = add("show", cmd_show, "show a certificate (serial) or an order (ord-...)")
    p.add_argument("what", metavar="SERIAL|ORDER")

    p = add("revoke", cmd_revoke, "revoke a certificate")
    p.add_argument("serial")
    p.add_argument("--reason", default="unspecified", help="RFC 5280 reason, e.g. keyCompromise")
    p.add_argument("--comment")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"))

    p = add("crl", cmd_crl, "re-sign and publish the CRL (crl/issuing.crl or crl/root.crl)")
    p.add_argument("--out", help="also write it here")
    p.add_argument("--pem", action="store_true", help="--out in PEM (the served file is DER)")
    p.add_argument("--root", action="store_true", help="the root CA's CRL instead")

    from ca.publish.publisher import register_publish_command
    from ca.ra.cli import register_ra_commands
    from ca.service.commands import register_service_commands

    register_service_commands(sub)
    register_publish_command(sub)
    register_ra_commands(sub)

    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND")
    p = audit_sub.add_parser("verify", help="check the hash chain; names any broken record")
    p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
    p.set_defaults(func=cmd_audit_verify)
    p = audit_sub.add_parser(
        "enable-hmac", help="MAC the audit log from now on (a checkpoint covers older records)"
    )
    p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
    p.add_argument("--key-file", help="the key file (default: ca.yaml's, else <dir>/audit.key)")
    p.add_argument("--operator", default=os.environ.get("USER", "operator"))
    p.set_defaults(func=cmd_audit_enable_hmac)
