"""A CA killed during issuance leaves no order half-way: on start-up (and with
``cmcgate ca recover``) every order not settled is finished or failed, and no VALID
certificate is left without an ISSUED order.

The kill test runs ``cmcgate ca serve`` as a child process, enrols over real HTTPS with the
gateway's CMC client from three threads, and SIGKILLs the CA while orders are in progress.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.profiles.builder import build_tbs
from ca.profiles.types import IssuanceRequest, Organization
from ca.recovery import stuck_orders
from ca.store.audit import audit_records, verify_audit
from ca.store.model import CertificateStatus, OrderStatus, OrderView
from ca.store.orders import Store
from cmc.client_config import client_from_config
from config.properties import load
from gateway.main import main as cli_main
from tests.ca.serve_process import Serve, served_ca
from tests.ca.test_cmc_server import ACCOUNT, SILVER, _csr

S = OrderStatus


# -- deterministic: one order stranded in each status, then `cmcgate ca recover` -----------


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url="http://127.0.0.1:8480", account_id=ACCOUNT, email_domains=("example.org",),
        product_id=SILVER,
    )  # fmt: skip
    return directory


def _strand(ca: CertificateAuthority, email: str, stop_at: OrderStatus, signed: bool) -> str:
    """Drive a real order as ``CertificateAuthority._issue`` does, and stop (as a kill would)
    in ``stop_at``; ``signed``: the certificate was signed and stored before the stop."""
    csr, _ = _csr(email)
    der = csr.public_bytes(serialization.Encoding.DER)
    order = ca.store.new_order(
        ACCOUNT, SILVER, csr.subject.rfc4514_string(), [email], "default",
        requested_by="test", csr_der=der,
    )  # fmt: skip
    path = [S.KEY_VALIDATION, S.GENERATE_TBS, S.PRE_VALIDATION, S.PRE_ISSUE, S.ISSUE]
    steps = path[: path.index(stop_at) + 1] if stop_at in path else []
    if stop_at is S.POST_VALIDATION:
        steps = path
    if steps:
        ca.store.advance(order.id, *steps)
    if signed:
        account = ca.settings.account(ACCOUNT)
        product = ca.settings.product(SILVER)
        assert account is not None and product is not None
        request = IssuanceRequest(csr.public_key(), csr.subject, (email,), timedelta(days=365))  # type: ignore[arg-type]
        prepared = build_tbs(
            product.profile, request, Organization.from_account(account), ca.issuing_cert,
            ca.endpoints(), now=datetime.now(UTC),
        )  # fmt: skip
        cert = prepared.sign(ca.keys.load(ca.settings.ca.issuing.key_label))
        ca.store.record_certificate(order.id, cert.public_bytes(serialization.Encoding.DER))
        if stop_at is S.POST_VALIDATION:
            ca.store.advance(order.id, S.POST_VALIDATION)
    return order.id


def test_recover_finishes_signed_orders_and_fails_the_others(
    ca_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CertificateAuthority.open(ca_dir / "ca.yaml") as ca:
        new = _strand(ca, "new@example.org", S.NEW, signed=False)
        pre_issue = _strand(ca, "pre@example.org", S.PRE_ISSUE, signed=False)
        unsigned = _strand(ca, "unsigned@example.org", S.ISSUE, signed=False)
        stored = _strand(ca, "stored@example.org", S.ISSUE, signed=True)
        post = _strand(ca, "post@example.org", S.POST_VALIDATION, signed=True)
        orphan = _strand(ca, "orphan@example.org", S.ISSUE, signed=True)
        ca.store.fail(orphan, "failed after the certificate was stored")
        orphan_serial = ca.store.get_order(orphan).certificate_serial

    capsys.readouterr()
    assert cli_main(["ca", "list", "--stuck", "--json", "--dir", str(ca_dir)]) == 0
    listed = {row["order"]: row["status"] for row in json.loads(capsys.readouterr().out)}
    assert listed == {new: "NEW", pre_issue: "PRE_ISSUE", unsigned: "ISSUE", stored: "ISSUE",
                      post: "POST_VALIDATION"}  # fmt: skip

    # a running CA's orders are left alone by default (untouched for less than 60 s)
    assert cli_main(["ca", "recover", "--dir", str(ca_dir)]) == 0
    assert "0 order(s) recovered" in capsys.readouterr().out
    assert cli_main(["ca", "recover", "--older-than", "0", "--dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert "6 order(s) recovered" in out, out

    store = Store.open_ca_dir(ca_dir)
    try:
        for order_id in (new, pre_issue, unsigned):
            order = store.get_order(order_id)
            assert order.status is S.FAILED
            assert (order.failure_reason or "").startswith("interrupted at ")
            assert order.certificate_serial is None
        for order_id in (stored, post):
            order = store.get_order(order_id)
            assert order.status is S.ISSUED, order
            cert = store.get_certificate(order.certificate_serial or "")
            assert cert.status is CertificateStatus.VALID
        assert store.get_revocation(orphan_serial or "") is not None
        assert store.get_certificate(orphan_serial or "").status is CertificateStatus.REVOKED
        assert stuck_orders(store) == []
        assert verify_audit(store).ok
        recovered = [r.subject for r in audit_records(store, event_type="recover")]
        assert sorted(recovered) == sorted([stored, post])
    finally:
        store.close()
    crl = x509.load_der_x509_crl((ca_dir / "crl" / "issuing.crl").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(orphan_serial or "0", 16))


# -- kill -9 during issuance over CMC ------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Serve, Path]]:
    serve, props = served_ca(tmp_path)
    try:
        yield serve, props
    finally:
        serve.stop()


def _enrol_until(stop: threading.Event, props: Path, counter: list[int]) -> None:
    pki = load(props).pki
    assert pki is not None
    n = 0
    while not stop.is_set():
        n += 1
        csr, key = _csr(f"user{threading.get_ident() % 1000}-{n}@example.org")
        try:
            with client_from_config(pki) as client:
                client.enroll(csr, key)
            counter.append(1)
        except Exception:  # noqa: BLE001 - the CA is being killed: any failure is expected
            time.sleep(0.05)


def _in_progress(store: Store) -> list[OrderView]:
    return stuck_orders(store)


@pytest.mark.slow
def test_kill_9_during_issuance_leaves_every_order_settled_after_restart(
    served: tuple[Serve, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    serve, props = served
    store = Store.open_ca_dir(serve.ca_dir)
    stranded: set[str] = set()
    stranded_signed: set[str] = set()
    issued_ok: list[int] = []
    kills = 0
    try:
        while kills < 3 or len(store.find_orders()) < 40:
            assert kills < 8, "could not reach 40 orders"
            before = len(store.find_orders())
            serve.start()
            stop = threading.Event()
            threads = [
                threading.Thread(target=_enrol_until, args=(stop, props, issued_ok))
                for _ in range(3)
            ]
            for thread in threads:
                thread.start()
            # let about 14 orders through, then kill the moment one is caught between
            # signing and ISSUED (any order in progress will do after a while)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if len(store.find_orders()) - before >= 14:
                    break
                time.sleep(0.05)
            patience = time.monotonic() + 5
            while time.monotonic() < deadline:
                busy = _in_progress(store)
                if any(o.status in (S.ISSUE, S.POST_VALIDATION) for o in busy) or (
                    busy and time.monotonic() > patience
                ):
                    break
                time.sleep(0.002)
            serve.kill()
            kills += 1
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            left = _in_progress(store)
            stranded |= {o.id for o in left}
            stranded_signed |= {o.id for o in left if o.certificate_serial}
            if left:
                capsys.readouterr()
                assert cli_main(["ca", "list", "--stuck", "--json",
                                 "--dir", str(serve.ca_dir)]) == 0  # fmt: skip
                listed = {row["order"] for row in json.loads(capsys.readouterr().out)}
                assert listed == {o.id for o in left}
        assert stranded, "no order was caught in progress: the kills did not test recovery"

        serve.start()  # recovery runs before the port opens
        serve.stop()

        orders = store.find_orders()
        assert len(orders) >= 40
        assert [o.id for o in orders if o.status.in_progress] == []
        for cert in store.find_certificates(status=CertificateStatus.VALID):
            assert cert.order_id is not None
            assert store.get_order(cert.order_id).status is S.ISSUED, cert
        for order_id in stranded_signed:
            order = store.get_order(order_id)
            assert order.status is S.ISSUED or (
                order.status is S.FAILED
                and store.get_certificate(order.certificate_serial or "").status
                is CertificateStatus.REVOKED
            ), order
        report = verify_audit(store)
        assert report.ok, report.problems
        print(f"kills={kills} orders={len(orders)} issued over CMC={len(issued_ok)} "
              f"stranded={len(stranded)} with certificate={len(stranded_signed)}")  # fmt: skip
    finally:
        store.close()
