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
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config.errors import CmcgateError
from config.model import Config, NextHopTls, RevocationCheck, SignatureFormat
from config.properties import ConfigHolder
from gateway.certs.adapter import StoreCertificates
from gateway.certs.revocation import CrlChecker
from gateway.certs.revocation_policy import RevocationCheckedCertificates, RevocationPolicy
from gateway.certs.setup import GatewayStores, stores_for
from gateway.certs.view import Certificates
from gateway.dkim import DkimKey
from gateway.metrics import Metrics
from gateway.pipeline import PipelineSettings, SmimePipeline
from gateway.quarantine import Quarantine
from gateway.smtp.control import ControlSignals, _report_ready, reload_config
from gateway.smtp.deferred import DeferredQueue, run_retries
from gateway.smtp.relay import NextHop
from gateway.smtp.server import FrontSettings, GatewayHandler, start_front

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
        content_cipher=config.smime.content_cipher,
        rsa_transport=config.smime.rsa_key_transport,
        detached_signature=config.smime.signature_format is SignatureFormat.DETACHED,
    )


def revocation_policy(config: Config) -> RevocationPolicy:
    """``cmcgate.gateway.revocationCheck``; CRLs cached under ``<stateDir>/crl``."""
    gw = config.gateway
    checker = CrlChecker(timeout=gw.revocation_timeout, cache_dir=gw.state_dir / "crl")
    return RevocationPolicy(gw.revocation_check, checker, issuers=trust_anchors(config))


def front_settings(config: Config) -> FrontSettings:
    """Relay permissions and SMTP AUTH (reads ``authUsersFile``)."""
    gw = config.gateway
    auth: dict[str, Any] = {
        "authenticated_may_relay": gw.authenticated_may_relay,
        "require_auth": gw.require_auth,
        "auth_over_plaintext": gw.allow_plaintext_auth,
    }
    if gw.auth_users_file is not None:
        from gateway.smtp.auth import load_users

        auth["users"] = load_users(gw.auth_users_file)
    if not gw.allowed_networks:
        return FrontSettings(**auth)
    return FrontSettings(allowed_networks=gw.allowed_networks, **auth)


def next_hop(config: Config) -> NextHop:
    """The next hop as configured.  Its certificate is verified (chain and name) against
    ``nextHopCaFile``, or against the system's roots when ``nextHopTls=required`` names no
    file; ``opportunistic`` without a file encrypts without verifying (Postfix ``may``)."""
    gw = config.gateway
    context = None
    if gw.next_hop_ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(gw.next_hop_ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise GatewayStartError(f"{gw.next_hop_ca_file}: next hop CA file: {reason}") from None
    elif gw.next_hop_tls is NextHopTls.REQUIRED:
        context = ssl.create_default_context()
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
    revocation: RevocationPolicy
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
        store_certificates = StoreCertificates(stores.certs, stores.require_keys())
        broker = cls(store_certificates, revocation_policy(config))
        pki = config.pki
        try:
            directories = config.lookup.directories
            if pki is not None and pki.fetch_for_recipients and pki.directory is not None:
                directories = (*directories, pki.directory)  # getFromPKIForNewRecipients
            if directories:
                from gateway.certs.lookup import LookupCertificates, RecipientLookup

                broker.lookup = RecipientLookup(
                    stores.certs, directories, trust_anchors=trust_anchors(config),
                    negative_ttl=timedelta(seconds=config.lookup.negative_cache_ttl),
                    revocation=broker.revocation,
                )  # fmt: skip
                broker.certificates = LookupCertificates(broker.certificates, broker.lookup)
            if pki is not None and pki.enrol_internal_users:
                from apscheduler.schedulers.background import BackgroundScheduler

                from cmc.client_config import client_from_config, trusted_roots
                from cmc.messages.issuer import IssuerChains
                from gateway.broker import renewal
                from gateway.broker.enrolment import Enroller

                publication = None
                if config.publish is not None:
                    from gateway.broker.publication import Publication, writer_for

                    publication = Publication(writer_for(config.publish), config.gateway.state_dir)
                # one for all CMC clients: what one answer taught about the CA's chain
                # is checked before any later request (issuerDN, cmc.messages.issuer)
                chains = IssuerChains(trusted_roots(pki))
                broker.enroller = Enroller(
                    stores.certs, stores.require_keys(),
                    lambda: client_from_config(pki, issuer_chains=chains), pki,
                    config.enrolment, state_dir=config.gateway.state_dir,
                    publication=publication,
                )  # fmt: skip
                if background:
                    broker.enroller.start()
                broker.with_enrolling(config)
                if background:
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
            # outermost: whatever source a recipient's certificate comes from, it is checked
            forget = [store_certificates.forget]
            if broker.lookup is not None:
                forget.append(broker.lookup.forget)
            broker.certificates = RevocationCheckedCertificates(
                broker.certificates, broker.revocation, stores.certs, forget=forget
            )
        except BaseException:
            broker.close()
            raise
        return broker

    def pipeline(self, config: Config, quarantine: Quarantine | None) -> SmimePipeline:
        """The pipeline over this broker's certificates, for ``config`` (start and reload)."""
        self.revocation.reconfigure(config.gateway.revocation_check, trust_anchors(config))
        check = None if self.revocation.mode is RevocationCheck.OFF else self.revocation.is_revoked
        return SmimePipeline(
            pipeline_settings(config), self.certificates, quarantine=quarantine, is_revoked=check
        )

    def with_enrolling(self, config: Config) -> Broker:
        """Senders' identities through the enroller (first send enrols)."""
        from gateway.broker.enrolling import EnrollingCertificates

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
            self.lookup.close()  # closes the revocation policy too
        else:
            self.revocation.close()


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
        """Swap in ``config``; raises CmcgateError (and changes nothing) when a file it names
        cannot be used."""
        try:
            # Everything that reads files first: a failure leaves the running one whole.
            pipeline = self.broker.pipeline(config, self.quarantine)
            front, hop = front_settings(config), next_hop(config)
        except CmcgateError:
            raise
        except Exception as exc:  # a bug must not end a running gateway either
            log.debug("configuration not applied", exc_info=True)
            raise GatewayStartError(f"configuration not applied: {exc!r}") from None
        # Plain attribute stores: the next message sees the new objects, none sees half.
        self.handler.pipeline = self.metrics.timed(pipeline)
        self.handler.front = front
        self.handler.next_hop = hop
        self.config = config
        log.info("configuration applied from %s", config.source)

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
    :mod:`gateway.smtp.workers`): its listening socket shares the port (``SO_REUSEPORT``), only
    worker 0 runs the background jobs, and the supervisor serves the metrics.
    """
    stores = stores_for(config)
    try:
        metrics = Metrics(internal_domains=config.gateway.internal_domains)
        quarantine = Quarantine(quarantine_dir or config.gateway.state_dir / "quarantine")
        broker = Broker.start(config, stores, metrics, background=worker in (None, 0))
        pipeline = broker.pipeline(config, quarantine)
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
            max_sessions=config.gateway.max_sessions,
            idle_timeout=config.gateway.idle_timeout,
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


def check_config(config: Config) -> None:
    """Read every file ``config`` names the way a running gateway would, without using it;
    raises CmcgateError for the first one that cannot be used (the supervisor's check
    before it passes SIGHUP on)."""
    try:
        pipeline_settings(config)
        front_settings(config)
        next_hop(config)
        server_tls(config)
    except CmcgateError:
        raise
    except Exception as exc:
        log.debug("configuration check failed", exc_info=True)
        raise GatewayStartError(f"configuration not usable: {exc!r}") from None


def run(
    holder: ConfigHolder,
    signals: ControlSignals,
    *,
    quarantine_dir: Path | None = None,
    worker: int | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the holder's file (a bad file keeps the old).

    One process serves alone, or as worker N of :mod:`gateway.smtp.workers` (``worker=N``);
    ``cmcgate gateway run`` (:mod:`gateway.cli`) decides which.
    """
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
            if signals.take_reload():
                reload_config(holder, gateway.apply)
    finally:
        gateway.stop()
        log.info("cmcgate gateway stopped%s", who)
    return 0
