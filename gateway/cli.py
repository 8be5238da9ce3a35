"""``cmcgate gateway ...``: run the gateway, manage its certificates, its quarantine and its
SMTP AUTH users."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def configure_logging(level: str, *, worker: int | None = None) -> None:
    """Logging as ``gateway run`` sets it up (the benches use it too)."""
    who = "" if worker is None else f"[worker {worker}] "
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )
    if level != "debug":
        # aiosmtpd logs ~13 lines per message at INFO; cmcgate logs one summary line itself.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        # APScheduler logs two lines per run of every job (the same ones each minute).
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from config.properties import ConfigHolder
    from gateway.smtp.control import ControlSignals
    from gateway.smtp.service import run

    configure_logging(args.log_level, worker=args.worker)
    # Signal handlers first: a SIGHUP during start-up is kept, not fatal.
    signals = ControlSignals()
    holder = ConfigHolder(Path(args.config))
    quarantine_dir = Path(args.quarantine_dir) if args.quarantine_dir else None
    if args.worker is None and holder.current.gateway.workers > 1:
        from gateway.smtp.workers import supervise

        return supervise(holder, signals, quarantine_dir=quarantine_dir, log_level=args.log_level)
    return run(holder, signals, quarantine_dir=quarantine_dir, worker=args.worker)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway", help="the S/MIME SMTP gateway (run, certs, quarantine, passwd)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the SMTP gateway (SIGHUP reloads the configuration)")
    run.add_argument("--config", required=True, help="the gateway's properties file")
    run.add_argument("--quarantine-dir", help="where policy 'hold' keeps messages")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    # Set by the supervisor for the processes it starts (cmcgate.gateway.workers > 1).
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    from gateway.certs.cli import register_certs
    from gateway.quarantine import register_quarantine
    from gateway.smtp.auth import register_passwd

    register_certs(sub)
    register_quarantine(sub)
    register_passwd(sub)
