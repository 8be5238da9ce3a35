"""``cmcgate gateway run``: the SMTP front, pipeline and stores built from one properties file.

SIGHUP re-reads the file through :class:`config.properties.ConfigHolder`: a valid file
replaces policy, DKIM keys, trust anchors and relay permissions atomically for the next
message (the listen address and stores stay as started); a bad file is logged and the
running configuration kept.  SIGTERM/SIGINT stop the front after messages in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config.errors import CmcgateError
from config.model import Config, NextHopTls
from config.properties import ConfigHolder
from gateway.deferred import DeferredQueue, run_retries
from gateway.dkim import DkimKey
from gateway.metrics import Metrics
from gateway.pipeline import Certificates, PipelineSettings, SmimePipeline
from gateway.quarantine import Quarantine
from gateway.relay import NextHop
from gateway.server import FrontSettings, GatewayHandler, start_front
from gateway.store_adapter import StoreCertificates
from gateway.store_config import GatewayStores, stores_for

log = logging.getLogger("cmcgate.gateway")


class GatewayStartError(CmcgateError):
    """A file the gateway needs at start cannot be used."""


def dkim_keys(config: Config) -> tuple[DkimKey, ...]:
    keys = []
    for entry in config.dkim:
        try:
            private = serialization.load_pem_private_key(entry.key_file.read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise GatewayStartError(
                f"{entry.key_file}: DKIM key for {entry.domain}: {exc}"
            ) from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise GatewayStartError(f"{entry.key_file}: DKIM keys are RSA (rsa-sha256)")
        keys.append(DkimKey(entry.domain, entry.selector, private))
    return tuple(keys)


def trust_anchors(config: Config) -> tuple[x509.Certificate, ...]:
    """The gateway's trust store: its own roots plus the PKI's imported roots."""
    paths = config.gateway.trusted_roots
    if config.pki is not None:
        paths = (*paths, *config.pki.trusted_roots)
    from cmc.client_config import read_certificates

    return read_certificates(paths, "trusted roots")


def pipeline_settings(config: Config) -> PipelineSettings:
    anchors = trust_anchors(config)
    return PipelineSettings(
        internal_domains=config.gateway.internal_domains,
        policy=config.policy,
        dkim_keys=dkim_keys(config),
        trust_anchors=anchors,
    )


def front_settings(config: Config) -> FrontSettings:
    networks = config.gateway.allowed_networks
    if not networks:
        return FrontSettings(authenticated_may_relay=config.gateway.authenticated_may_relay)
    return FrontSettings(
        allowed_networks=networks, authenticated_may_relay=config.gateway.authenticated_may_relay
    )


def next_hop(config: Config) -> NextHop:
    gw = config.gateway
    context = None
    if gw.next_hop_ca_file is not None:
        context = ssl.create_default_context(cafile=str(gw.next_hop_ca_file))
    starttls = {
        NextHopTls.OPPORTUNISTIC: None,
        NextHopTls.REQUIRED: True,
    }.get(gw.next_hop_tls, False)
    return NextHop(
        gw.next_hop.host, gw.next_hop.port, starttls=starttls, tls_context=context,
        local_hostname=gw.hostname,
    )  # fmt: skip


def server_tls(config: Config) -> ssl.SSLContext | None:
    gw = config.gateway
    if gw.tls_certificate is None or gw.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(gw.tls_certificate), str(gw.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise GatewayStartError(f"{gw.tls_certificate}: STARTTLS certificate: {exc}") from None
    return context


@dataclass
class Broker:
    """Where certificates come from: the store, then (when configured) LDAP directories for
    recipients and CMC enrolment for internal senders, with renewal and pending polls
    scheduled in the background (APScheduler)."""

    certificates: Certificates
    lookup: Any = None
    enroller: Any = None
    scheduler: Any = None

    @classmethod
    def start(
        cls,
        config: Config,
        stores: GatewayStores,
        metrics: Metrics | None = None,
        *,
        background: bool = True,
    ) -> Broker:
        """``background``: run the scheduled jobs and the key-pool refill here (one process
        of several workers does)."""
        certificates: Certificates = StoreCertificates(stores.certs, stores.require_keys())
        broker = cls(certificates)
        pki = config.pki
        try:
            directories = config.lookup.directories
            if directories:
                from gateway.lookup import LookupCertificates, RecipientLookup

                broker.lookup = RecipientLookup(
                    stores.certs, directories, trust_anchors=trust_anchors(config),
                    negative_ttl=timedelta(seconds=config.lookup.negative_cache_ttl),
                )  # fmt: skip
                broker.certificates = LookupCertificates(broker.certificates, broker.lookup)
            if pki is not None and pki.enrol_internal_users:
                from apscheduler.schedulers.background import BackgroundScheduler

                from cmc.client_config import client_from_config
                from gateway import renewal
                from gateway.enrolment import Enroller

                publication = None
                if config.publish is not None:
                    from gateway.publication import Publication, writer_for

                    publication = Publication(writer_for(config.publish), config.gateway.state_dir)
                broker.enroller = Enroller(
                    stores.certs, stores.require_keys(), lambda: client_from_config(pki), pki,
                    config.enrolment, state_dir=config.gateway.state_dir,
                    publication=publication,
                )  # fmt: skip
                if not background:
                    return broker.with_enrolling(config)
                broker.enroller.start()
                broker.with_enrolling(config)
                renewer = renewal.Renewer(
                    stores.certs, broker.enroller, config.enrolment,
                    internal_domains=config.gateway.internal_domains,
                )  # fmt: skip
                broker.scheduler = BackgroundScheduler(timezone="UTC")
                renewal.schedule(
                    broker.scheduler, broker.enroller, renewer,
                    on_report=metrics.count_renewals if metrics is not None else None,
                )  # fmt: skip
                broker.scheduler.start()
        except BaseException:
            broker.close()
            raise
        return broker

    def with_enrolling(self, config: Config) -> Broker:
        """Senders' identities through the enroller (first send enrols)."""
        from gateway.enrolling import EnrollingCertificates

        self.certificates = EnrollingCertificates(
            self.certificates, self.enroller, internal_domains=config.gateway.internal_domains
        )
        return self

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self.enroller is not None:
            self.enroller.close()
        if self.lookup is not None:
            self.lookup.close()


@dataclass
class RunningGateway:
    """A started gateway; :meth:`apply` swaps in a reloaded configuration."""

    config: Config
    stores: GatewayStores
    handler: GatewayHandler
    controller: Any
    metrics: Metrics
    quarantine: Quarantine | None
    broker: Broker
    #: the task retrying deferred copies (in the process that runs the background jobs)
    retries: Any = None

    def apply(self, config: Config) -> None:
        pipeline = SmimePipeline(
            pipeline_settings(config), self._certificates(), quarantine=self.quarantine
        )
        # Plain attribute stores: the next message sees the new objects, none sees half.
        self.handler.pipeline = self.metrics.timed(pipeline)
        self.handler.front = front_settings(config)
        self.handler.next_hop = next_hop(config)
        self.config = config
        log.info("configuration applied from %s", config.source)

    def _certificates(self) -> Certificates:
        return self.broker.certificates

    def stop(self) -> None:
        if self.retries is not None:
            self.retries.cancel()
        # Say QUIT to the next hop on the idle connections before the front's loop ends.
        closing = asyncio.run_coroutine_threadsafe(
            self.handler.close_connections(), self.controller.loop
        )
        try:
            closing.result(timeout=5)
        except (TimeoutError, OSError, RuntimeError):
            log.warning("idle next-hop connections not closed cleanly")
        self.controller.stop()
        self.broker.close()
        self.stores.close()


def start(
    config: Config, *, quarantine_dir: Path | None = None, worker: int | None = None
) -> RunningGateway:
    """Open the stores and start the SMTP front (in a background thread).

    ``worker``: this process is worker N of ``cmcgate.gateway.workers`` (started by
    :mod:`gateway.workers`): its listening socket shares the port (``SO_REUSEPORT``), only
    worker 0 runs the background jobs, and the supervisor serves the metrics.
    """
    stores = stores_for(config)
    try:
        metrics = Metrics(internal_domains=config.gateway.internal_domains)
        quarantine = Quarantine(quarantine_dir or config.gateway.state_dir / "quarantine")
        broker = Broker.start(config, stores, metrics, background=worker in (None, 0))
        pipeline = SmimePipeline(
            pipeline_settings(config), broker.certificates, quarantine=quarantine
        )
        deferred = DeferredQueue(config.gateway.state_dir / "deferred")
        handler = GatewayHandler(
            next_hop(config), metrics.timed(pipeline), front_settings(config), metrics.on_result,
            deferred=deferred,
        )  # fmt: skip
        controller = start_front(
            handler,
            config.gateway.listen.host,
            config.gateway.listen.port,
            max_message_size=config.gateway.max_message_size,
            tls_context=server_tls(config),
            require_starttls=config.gateway.require_starttls,
            server_hostname=config.gateway.hostname,
            reuse_port=worker is not None,
        )
    except BaseException:
        if "broker" in locals():
            broker.close()
        stores.close()
        raise
    if config.metrics_listen is not None and worker is None:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_listen.port, config.metrics_listen.host, metrics.registry)
    running = RunningGateway(config, stores, handler, controller, metrics, quarantine, broker)
    if worker in (None, 0):
        running.retries = asyncio.run_coroutine_threadsafe(
            run_retries(deferred, lambda: handler.next_hop, quarantine), controller.loop
        )
    return running


class ControlSignals:
    """SIGTERM/SIGINT set :attr:`stop`, SIGHUP asks for a reload.

    Installed before anything listens: a SIGHUP sent as soon as the port answers must not
    meet SIGHUP's default action, which ends the process.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._reload = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        if not self._reload.is_set():
            return False
        self._reload.clear()
        return True


#: the variable naming the pipe a worker writes to once it listens (set by gateway.workers)
READY_FD_VARIABLE = "CMCGATE_READY_FD"


def reload_config(holder: ConfigHolder) -> bool:
    """Re-read the properties file; False (the problems logged) when it is refused."""
    problems = holder.reload()
    for problem in problems:
        log.error("reload refused: %s", problem)
    return not problems


def _report_ready() -> None:
    """Tell the supervisor (gateway.workers) that this worker listens."""
    fd = os.environ.pop(READY_FD_VARIABLE, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready")
        os.close(int(fd))
    except (OSError, ValueError):
        log.warning("could not report readiness to the supervisor")


def run(
    config_path: Path,
    *,
    quarantine_dir: Path | None = None,
    worker: int | None = None,
    log_level: str = "info",
) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads ``config_path`` (a bad file keeps the old).

    With ``cmcgate.gateway.workers`` > 1 this process supervises that many workers
    (:mod:`gateway.workers`), each of which runs this function with ``worker=N``.
    """
    signals = ControlSignals()
    holder = ConfigHolder(config_path)
    if worker is None and holder.current.gateway.workers > 1:
        from gateway.workers import supervise

        return supervise(holder, signals, quarantine_dir=quarantine_dir, log_level=log_level)
    gateway = start(holder.current, quarantine_dir=quarantine_dir, worker=worker)
    gw = holder.current.gateway
    who = "" if worker is None else f" (worker {worker})"
    log.info(
        "cmcgate gateway started: listening on %s:%s, next hop %s:%s%s",
        gw.listen.host, gw.listen.port, gw.next_hop.host, gw.next_hop.port, who,
    )  # fmt: skip
    if worker is not None:
        _report_ready()
    parent = os.getppid()
    try:
        while not signals.stop.wait(0.2):
            if worker is not None and os.getppid() != parent:
                log.error("the supervisor is gone: stopping")
                break
            if signals.take_reload() and reload_config(holder):
                try:
                    gateway.apply(holder.current)
                except CmcgateError as exc:
                    log.error("reload refused: %s", exc)
    finally:
        gateway.stop()
        log.info("cmcgate gateway stopped%s", who)
    return 0
