"""``cmcgate ca serve`` and ``cmcgate ca access-cert`` (wired into ``cmcgate ca`` by ca.cli)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ca.authority import CertificateAuthority
from ca.service.http import BODY_TIMEOUT, CaService, ServeError, parse_listen


def _ca_dir(args: Any) -> Path:
    import os

    return Path(args.dir or os.environ.get("CMCGATE_CA_DIR") or ".").resolve()


def cmd_serve(args: Any) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = CaService(
        _ca_dir(args),
        https=parse_listen(args.listen, 8443),
        http=parse_listen(args.http_listen, 8480) if args.http_listen else None,
        hosts=list(args.hostname or ()),
        body_timeout=args.body_timeout,
        ra=parse_listen(args.ra_listen, 8444) if args.ra_listen else None,
    )
    asyncio.run(service.serve_forever())
    return 0


def cmd_access_cert(args: Any) -> int:
    import os

    from ca.keys import KeyType
    from ca.service.certs import issue_access_certificate

    try:
        password = Path(args.password_file).read_text().splitlines()[0].encode()
    except (OSError, IndexError) as exc:
        raise ServeError(f"{args.password_file}: cannot read the password: {exc}") from None
    ca_yaml = _ca_dir(args) / "ca.yaml"
    if not ca_yaml.exists():
        raise ServeError(f"{ca_yaml}: no CA here (run `cmcgate ca init`)")
    with CertificateAuthority.open(ca_yaml) as ca:
        issued = issue_access_certificate(
            ca, args.account, password, key_type=KeyType.parse(args.key_type),
            operator=os.environ.get("USER", "cli"),
        )  # fmt: skip
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(issued.p12)
    print(f"access certificate for {args.account} written to {args.out}")
    print(f"  serial {issued.certificate.serial_number:x}  sha256 {issued.sha256}")
    print(f"  registered in {ca_yaml.parent / 'access'}")
    print(f"  the gateway's trust anchor: {ca_yaml.parent / 'root-ca.pem'}")
    return 0


def register_service_commands(sub: Any) -> None:
    """Add ``serve`` and ``access-cert`` to the ``cmcgate ca`` subcommands."""
    p = sub.add_parser("serve", help="run the CMC service (HTTPS) and CRL/AIA files (HTTP)")
    p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
    p.add_argument("--listen", default="127.0.0.1:8443", help="HTTPS HOST:PORT for CMC")
    p.add_argument("--http-listen", help="HTTP HOST:PORT for /crl and /certs (default ca.listen)")
    p.add_argument("--hostname", action="append", help="extra DNS name/IP for the TLS certificate")
    p.add_argument("--ra-listen", help="HTTPS HOST:PORT for the RA REST API (default ra.listen)")
    p.add_argument(
        "--body-timeout", type=float, default=BODY_TIMEOUT, metavar="SECONDS",
        help=f"time a client has to send a request body (default {BODY_TIMEOUT:g})",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("access-cert", help="issue an account's access certificate (PKCS#12)")
    p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
    p.add_argument("--account", required=True)
    p.add_argument("--out", required=True, help="PKCS#12 file to write")
    p.add_argument("--password-file", required=True, help="file whose first line is the password")
    p.add_argument(
        "--key-type", default="ec-p256", choices=["ec-p256", "ec-p384", "rsa2048", "rsa3072"]
    )
    p.set_defaults(func=cmd_access_cert)
