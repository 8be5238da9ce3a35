"""The periodic jobs of ``cmcgate ca serve`` (CRL-independent: publication, clean-up, RA
checks), each one APScheduler interval job added the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def add_periodic(
    scheduler: Any, job_id: str, what: str, work: Callable[[], object], **interval: Any
) -> None:
    """Run ``work`` every ``interval`` (APScheduler's ``seconds=``/``minutes=``/``hours=``,
    optionally ``next_run_time=``): one run at a time, missed runs coalesced, and a failure
    logged as ``<what> failed: <error>`` and left to the next run."""

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - the scheduler tries again next interval
            log.error("%s failed: %s", what, exc)

    scheduler.add_job(run, "interval", id=job_id, coalesce=True, max_instances=1, **interval)
