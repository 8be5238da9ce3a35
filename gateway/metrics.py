"""Prometheus metrics of the gateway, in their own registry (tests read them directly).

``cmcgate_messages_total{direction,action,result}``
    one count per copy the gateway relayed (a message split into copies counts once per
    copy), or one per refused message with ``action="none"``.  ``direction`` is ``outbound``
    or ``inbound`` (the first action of a copy, see :mod:`gateway.pipeline`; for a refused
    message: outbound when the sender is in an internal domain).  ``action`` is the rest of
    the copy's actions joined with ``+`` (``sign+encrypt+dkim``, ``decrypt+verify-valid``,
    ``hold``, ``pass``); ``result`` is ``accepted``, ``tempfail`` or ``rejected`` from the
    reply the client got.
``cmcgate_message_seconds{direction}``
    time from the pipeline starting on a message to the client's reply — observed only for
    pipelines wrapped with :meth:`Metrics.timed`.

Wiring: ``metrics = Metrics(internal_domains)``,
``GatewayHandler(hop, metrics.timed(pipeline), on_result=metrics.on_result)``; export with
``prometheus_client.start_http_server(port, registry=metrics.registry)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.smtp.message import Copy, Pipeline, Transaction
from gateway.smtp.relay import Reply

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def result_of(reply: Reply) -> str:
    if reply.ok:
        return "accepted"
    return "tempfail" if reply.temporary else "rejected"


class Metrics:
    """The gateway's counters and latency histogram, with the hooks GatewayHandler takes."""

    def __init__(
        self, internal_domains: Iterable[str] = (), registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.internal_domains = tuple(d.lower() for d in internal_domains)
        self.messages = Counter(
            "cmcgate_messages",
            "Copies relayed (or messages refused), by direction, actions taken and result",
            ("direction", "action", "result"),
            registry=self.registry,
        )
        self.seconds = Histogram(
            "cmcgate_message_seconds",
            "Time from the start of the pipeline to the reply to the client",
            ("direction",),
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.renewals = Counter(
            "cmcgate_certificate_renewals",
            "Certificates of internal users renewed over CMC, by result",
            ("result",),
            registry=self.registry,
        )
        self._started: dict[str, float] = {}

    def count_renewals(self, report: Any) -> Any:
        """Count a :class:`gateway.broker.renewal.RenewalReport` (renewed / pending / failed)."""
        self.renewals.labels("renewed").inc(len(report.renewed))
        self.renewals.labels("pending").inc(len(report.pending))
        self.renewals.labels("failed").inc(len(report.failed))
        return report

    def direction_of(self, transaction: Transaction) -> str:
        domain = transaction.sender.rpartition("@")[2].lower()
        internal = any(domain == d or domain.endswith("." + d) for d in self.internal_domains)
        return "outbound" if internal else "inbound"

    def timed(self, pipeline: Pipeline) -> Pipeline:
        """``pipeline``, remembering when each message started (for the histogram)."""

        async def run(transaction: Transaction) -> Sequence[Copy]:
            if len(self._started) > 10_000:  # replies that never came (cancelled sessions)
                self._started.clear()
            self._started[transaction.queue_id] = time.perf_counter()
            return await pipeline(transaction)

        return run

    def on_result(self, transaction: Transaction, copies: Sequence[Copy], reply: Reply) -> None:
        """GatewayHandler's ``on_result`` hook."""
        result = result_of(reply)
        fallback = self.direction_of(transaction)
        if not copies:
            self.messages.labels(fallback, "none", result).inc()
        for copy in copies:
            direction, action = _labels(copy.actions, fallback)
            self.messages.labels(direction, action, result).inc()
        started = self._started.pop(transaction.queue_id, None)
        if started is not None:
            direction = _labels(copies[0].actions, fallback)[0] if copies else fallback
            self.seconds.labels(direction).observe(time.perf_counter() - started)

    def count(self, direction: str, action: str, result: str) -> float:
        """The current value of one counter (for tests and the demo)."""
        value = self.registry.get_sample_value(
            "cmcgate_messages_total",
            {"direction": direction, "action": action, "result": result},
        )
        return value or 0.0

    def observations(self, direction: str) -> float:
        value = self.registry.get_sample_value(
            "cmcgate_message_seconds_count", {"direction": direction}
        )
        return value or 0.0


def _labels(actions: Sequence[str], fallback: str) -> tuple[str, str]:
    if actions and actions[0] in ("outbound", "inbound"):
        return actions[0], "+".join(actions[1:]) or "pass"
    return fallback, "+".join(actions) or "pass"
