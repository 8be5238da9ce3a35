"""ca.periodic: how every periodic job of ``ca serve`` is added and guarded."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from ca.periodic import add_periodic


def test_a_failing_run_is_logged_and_the_next_run_is_left_to_the_scheduler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    def work() -> None:
        runs.append(1)
        raise OSError("directory server down")

    scheduler = BackgroundScheduler(timezone="UTC")
    add_periodic(scheduler, "probe", "probe run", work, minutes=7)
    job = scheduler.get_job("probe")
    assert job.trigger.interval == timedelta(minutes=7)
    assert job.coalesce and job.max_instances == 1
    with caplog.at_level(logging.ERROR, logger="ca.periodic"):
        job.func()
        job.func()
    assert len(runs) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "probe run failed: directory server down"
    ] * 2
