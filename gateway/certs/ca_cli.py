"""``cmcgate gateway certs revoke|fetch|pending``: the gateway's certificates at the external CA.

All three talk CMC to the configured PKI (``--config FILE``: the gateway's properties file, the
same connection and access certificate the gateway enrols with) and keep the gateway's store
in step:

``revoke EMAIL [--reason R] [--serial S]``
    RFC 5272 revokeRequest for EMAIL's certificates the gateway enrolled (source ``pki``, not
    revoked, not expired), or for the one ``--serial`` names; each one the CA confirms is
    marked revoked in the store, so the gateway stops using it (a running gateway within its
    one-minute cache).  For a leaver.  The private keys are kept: old mail stays readable.
``fetch EMAIL --serial S [--issuer DN]``
    RFC 5272 getCert: the certificate the CA issued as serial S (hex, as ``certs list`` and
    the CA show it) for EMAIL, validated like an enrolment answer, stored with its chain;
    linked to its private key when the gateway holds it (it then signs with it again).  The
    issuer asked is ``--issuer``, else that of EMAIL's newest stored certificate, else
    ``issuerDN``.
``pending [--no-query]``
    The gateway's enrolments waiting for approval at the CA (its state directory), each asked
    about with a queryPending (RFC 5272 §6.10) unless ``--no-query``: what was issued
    meanwhile is stored, as the gateway's scheduled poll would.  CMC has no request that
    lists a CA's orders, so orders the gateway did not send are not shown.

Exit status: 0 done, 2 refused or failed (one line on stderr, as every ``cmcgate`` command).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from cmc.client import CmcClient
from config.errors import CmcgateError
from config.model import Config, PkiConnection
from gateway.certs.models import (
    CertificateRecord,
    RevocationStatus,
    Source,
    normalise_email,
    split_chain,
)
from gateway.certs.setup import GatewayStores, StoreConfigError, stores_for

#: RFC 5280 reasons a subscriber's certificate is revoked for (SwissSign's RA offers these).
REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)


class CaCommandError(CmcgateError):
    """A certificate command that cannot be carried out as asked."""


def register_ca_commands(sub: Any) -> None:
    """Add ``revoke``, ``fetch`` and ``pending`` to the ``certs`` subparsers."""
    p = sub.add_parser("revoke", help="revoke a user's certificates at the CA (CMC)")
    _config_option(p)
    p.add_argument("email", help="the user, e.g. a leaver")
    p.add_argument("--reason", choices=REASONS, default="unspecified", help="RFC 5280 reason")
    p.add_argument("--serial", type=_serial, help="only this certificate (hex serial)")
    p.add_argument("--comment", help="a note for the CA's records")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("fetch", help="fetch a certificate from the CA (CMC getCert) and store it")
    _config_option(p)
    p.add_argument("email", help="the address the certificate is for")
    p.add_argument("--serial", type=_serial, required=True, help="its serial number (hex)")
    p.add_argument("--issuer", type=_dn, help="its issuer's DN (RFC 4514)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("pending", help="enrolments waiting for approval at the CA")
    _config_option(p)
    p.add_argument(
        "--no-query", action="store_true", help="list only, do not ask the CA (queryPending)"
    )
    p.set_defaults(func=cmd_pending)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="gateway properties file"
    )


def _serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal serial number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a serial number is positive")
    return value


def _dn(text: str) -> x509.Name:
    from config.dn import parse_dn

    try:
        return parse_dn(text)
    except CmcgateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextmanager
def _connected(path: Path) -> Iterator[tuple[Config, PkiConnection, GatewayStores, CmcClient]]:
    from cmc.client_config import client_from_config
    from config.properties import load

    config = load(path)
    if config.pki is None:
        raise StoreConfigError(f"{path}: no PKI connection (security.pkiConnection.enabled)")
    with stores_for(config) as stores, client_from_config(config.pki) as client:
        yield config, config.pki, stores, client


# -- revoke ------------------------------------------------------------------------------------
def to_revoke(
    records: list[CertificateRecord], serial: int | None, at: datetime
) -> list[CertificateRecord]:
    """The certificates ``revoke`` asks the CA to revoke (see the module doc)."""
    if serial is not None:
        return [r for r in records if int(r.serial, 16) == serial]
    return [
        r
        for r in records
        if r.source is Source.PKI
        and r.revocation is not RevocationStatus.REVOKED
        and r.not_after > at
    ]


def cmd_revoke(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    email = normalise_email(args.email)
    with _connected(args.config) as (_config, _pki, stores, client):
        chosen = to_revoke(stores.certs.find(email=email), args.serial, datetime.now(UTC))
        if not chosen:
            what = f"serial {args.serial:x}" if args.serial else "valid certificate from the CA"
            raise CaCommandError(f"{email} has no {what} in the gateway's store")
        for record in chosen:
            cert = record.certificate
            result = client.revoke(cert.issuer, cert.serial_number, args.reason,
                                   comment=args.comment)  # fmt: skip
            stores.certs.mark_revoked(record.fingerprint)
            said = f": {result.status_string}" if result.status_string else ""
            print(f"revoked certificate {record.serial} of {email} ({args.reason}){said}",
                  file=out)  # fmt: skip
    return 0


# -- fetch -------------------------------------------------------------------------------------
def _issuer_for(
    args: argparse.Namespace, pki: PkiConnection, records: list[CertificateRecord]
) -> x509.Name:
    if args.issuer is not None:
        return args.issuer  # type: ignore[no-any-return]
    if records:
        newest = max(records, key=lambda r: (r.not_before, r.added_at))
        return newest.certificate.issuer
    return pki.issuer_dn


def cmd_fetch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    email = normalise_email(args.email)
    with _connected(args.config) as (_config, pki, stores, client):
        issuer = _issuer_for(args, pki, stores.certs.find(email=email))
        cert, chain = client.fetch(issuer, args.serial)
        leaf, _ = split_chain([cert], email)  # it must be an end-entity certificate for EMAIL
        label = None
        if stores.keys is not None:
            label = stores.keys.find_label(email, leaf.public_key())
        record = stores.certs.add(leaf, Source.PKI, key_label=label)
        stores.certs.add_chain(list(chain))
    print(f"fetched certificate {record.serial} for {', '.join(record.emails)}", file=out)
    print(f"  issuer       {record.issuer}", file=out)
    print(f"  private key  {record.key_label or 'not held by the gateway'}", file=out)
    return 0


# -- pending -----------------------------------------------------------------------------------
def cmd_pending(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from gateway.broker.state import StateFiles

    out = out or sys.stdout
    with _connected(args.config) as (config, pki, stores, _client):
        state_dir = config.gateway.state_dir
        files = StateFiles(state_dir / "enrolments")
        waiting = {e: s for e in files.emails() if (s := files.load(e)) and s.pending}
        if not waiting:
            print("no enrolments pending", file=out)
            return 0
        issued: dict[str, str] = {}
        failed: dict[str, str] = {}
        if not args.no_query:
            issued, failed = _poll(config, pki, stores, state_dir)
        rows = [("EMAIL", "TRANSACTION", "SENT", "STATUS")]
        for email, state in waiting.items():
            now = files.load(email) if not args.no_query else state
            pending = (now or state).pending or {}
            if email in issued:
                status = f"issued: certificate {issued[email]} stored"
            elif email in failed:
                status = f"failed: {failed[email]}"
            else:
                status = "pending" + (f": {pending['status_string']}"
                                      if pending.get("status_string") else "")  # fmt: skip
            rows.append((email, str(pending.get("transaction_id", "-")),
                         f"{state.started:%Y-%m-%d %H:%M}Z", status))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[3],
              file=out)  # fmt: skip
    return 0


def _poll(
    config: Config, pki: PkiConnection, stores: GatewayStores, state_dir: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """The gateway's own poll (:meth:`Enroller.poll_pending`): issued ones are stored."""
    from gateway.broker.enrolment import Enroller

    publication = None
    if config.publish is not None:
        from gateway.broker.publication import Publication, writer_for

        publication = Publication(writer_for(config.publish), state_dir)
    from cmc.client_config import client_from_config

    enroller = Enroller(stores.certs, stores.require_keys(), lambda: client_from_config(pki), pki,
                        config.enrolment, state_dir=state_dir, workers=1,
                        publication=publication)  # fmt: skip
    try:
        report = enroller.poll_pending()
    finally:
        enroller.close()
    issued = {}
    for email in report.issued:
        record = stores.certs.best_for_signing(email)
        issued[email] = record.serial if record is not None else "?"
    return issued, dict(report.failed)


__all__ = ["REASONS", "cmd_fetch", "cmd_pending", "cmd_revoke", "register_ca_commands"]
