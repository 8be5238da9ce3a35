"""Clean-up of lost orders (RA manual, status UNKNOWN): an order a running CA stopped working
on is marked UNKNOWN, then FAILED, or REVOKED with its valid certificate revoked and on the
CRL; renewals that never got their CSR fail after 30 days."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ca.authority import CertificateAuthority, IssueResult
from ca.keys import KeyBackend
from ca.ra.cleanup import cleanup_lost_orders
from ca.ra.renewal import RenewalService
from ca.store.model import CertificateStatus, OrderStatus, OrderView
from gateway.main import main as cli_main
from tests.ca.ra_p12_support import (
    ACCOUNT,
    SILVER,
    RecordingNotifier,
    csr_der,
    openssl,
    strand,
)

S = OrderStatus


def test_a_lost_order_with_a_valid_certificate_is_revoked_and_its_serial_is_on_the_crl(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    signed = strand(ca, "alice@example.org", S.ISSUE, signed=True)
    unsigned = strand(ca, "bob@example.org", S.PRE_ISSUE, signed=False)
    fresh = strand(ca, "carol@example.org", S.GENERATE_TBS, signed=False)
    later = ca.clock() + timedelta(minutes=20)
    # carol's order was touched "just now" relative to the run below
    ca.store.advance(fresh, S.PRE_VALIDATION, now=later)

    done = {item.order_id: item for item in cleanup_lost_orders(ca, now=later)}
    assert set(done) == {signed, unsigned}

    order = ca.store.get_order(signed)
    assert order.status is S.REVOKED and done[signed].action == "revoked"
    serial = order.certificate_serial
    assert serial is not None and done[signed].serial == serial
    assert ca.store.get_certificate(serial).status is CertificateStatus.REVOKED
    assert [c.to_status for c in ca.store.history(signed)][-2:] == [S.UNKNOWN, S.REVOKED]
    crl = openssl("crl", "-inform", "DER", "-text", "-noout",
                  "-in", str(ca_dir / "crl" / "issuing.crl"))  # fmt: skip
    assert crl.returncode == 0, crl.stderr
    text = crl.stdout.decode()
    listed = [
        int(line.split(":", 1)[1], 16) for line in text.splitlines() if "Serial Number:" in line
    ]
    assert int(serial, 16) in listed
    assert "Cessation Of Operation" in text

    failed = ca.store.get_order(unsigned)
    assert failed.status is S.FAILED and (failed.failure_reason or "").startswith("lost at ")
    assert [c.to_status for c in ca.store.history(unsigned)][-2:] == [S.UNKNOWN, S.FAILED]
    assert ca.store.get_order(fresh).status is S.PRE_VALIDATION  # not lost (yet)
    assert cleanup_lost_orders(ca, now=later) == []


class SlowHsm:
    """The CA's real key backend, whose key loading waits as an HSM queueing its sessions
    (or a network HSM failing over) may, until the test lets it go on."""

    def __init__(self, real: KeyBackend) -> None:
        self.real = real
        self.waiting, self.go_on = threading.Event(), threading.Event()

    def load(self, label: str) -> Any:
        self.waiting.set()
        assert self.go_on.wait(60)
        return self.real.load(label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_an_issuance_alive_but_slow_in_the_hsm_is_not_taken_for_lost(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    hsm = SlowHsm(ca.keys)
    monkeypatch.setattr(ca, "keys", hsm)
    results: list[IssueResult | BaseException] = []

    def issue() -> None:
        try:
            results.append(ca.submit(csr_der("slow@example.org"), ACCOUNT, SILVER,
                                     requested_by="test"))  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            results.append(exc)

    worker = threading.Thread(target=issue)
    worker.start()
    try:
        assert hsm.waiting.wait(60)
        [order] = ca.store.find_orders(status=S.PRE_ISSUE)
        # a clean-up run an hour later: the order has not moved, but its thread is alive
        assert cleanup_lost_orders(ca, now=ca.clock() + timedelta(hours=1)) == []
        assert ca.store.get_order(order.id).status is S.PRE_ISSUE
    finally:
        hsm.go_on.set()
        worker.join(60)
    [result] = results
    assert isinstance(result, IssueResult) and result.certificate is not None, result
    assert ca.store.get_order(order.id).status is S.ISSUED


def test_a_renewal_waiting_30_days_for_its_csr_fails(ca: CertificateAuthority) -> None:
    issued = ca.submit(csr_der("dave@example.org"), ACCOUNT, SILVER, requested_by="test")
    assert issued.certificate is not None
    waiting = RenewalService(ca, RecordingNotifier()).renew(
        format(issued.certificate.serial_number, "x"), by="ra"
    )
    assert isinstance(waiting, OrderView)
    assert cleanup_lost_orders(ca, now=ca.clock() + timedelta(days=29)) == []
    (item,) = cleanup_lost_orders(ca, now=ca.clock() + timedelta(days=31))
    order = ca.store.get_order(waiting.id)
    assert order.status is S.FAILED and "no renewal CSR received" in (order.failure_reason or "")
    assert item.order_id == waiting.id
    # the certificate it would have renewed is untouched
    assert ca.store.get_certificate(issued.certificate.serial_number).status.value == "VALID"


def test_unknown_orders_are_listed_and_settled_by_cmcgate_ca_cleanup(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CertificateAuthority.open(ca_dir / "ca.yaml") as ca:
        order_id = strand(ca, "erin@example.org", S.ISSUE, signed=True)
        ca.store.transition(order_id, S.UNKNOWN, "lost (test)")
    capsys.readouterr()
    assert cli_main(["ca", "list", "--status", "unknown", "--json", "--dir", str(ca_dir)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["order"] for row in listed] == [order_id]
    assert listed[0]["status"] == "UNKNOWN"

    assert cli_main(["ca", "cleanup", "--dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{order_id} UNKNOWN -> REVOKED (revoked serial" in out, out
    assert "1 order(s) cleaned up" in out
    with CertificateAuthority.open(ca_dir / "ca.yaml") as ca:
        assert ca.store.get_order(order_id).status is S.REVOKED


def test_ca_serve_schedules_the_cleanup_and_the_pkcs12_purge(ca: CertificateAuthority) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from ca.ra.cleanup import schedule_cleanup
    from ca.ra.keygen import KeygenService, schedule_p12_purge
    from tests.ca.ra_p12_support import P12

    scheduler = BackgroundScheduler(timezone="UTC")  # not started: the jobs are run by hand
    schedule_cleanup(scheduler, lambda: ca)
    schedule_p12_purge(scheduler, lambda: ca)
    assert {job.id for job in scheduler.get_jobs()} == {"ra-cleanup", "ra-p12-purge"}

    result = KeygenService(ca, RecordingNotifier()).order(
        ACCOUNT, P12, ["frank@example.org"], requested_by="ra"
    )
    lost = strand(ca, "grace@example.org", S.NEW, signed=False)
    ca.clock = lambda: result.pkcs12.created_at + timedelta(days=91)  # the CA runs on
    scheduler.get_job("ra-p12-purge").func()
    scheduler.get_job("ra-cleanup").func()
    assert ca.store.pkcs12_bytes_of(result.order_id) is None
    assert ca.store.get_order(lost).status is S.FAILED
