"""The certificate broker enrols internal senders on their first mail, on real services.

A real bundled CA (software keys; products: example-silver (auto), example-manual (approval),
example-gold (sponsor profile)) serves CMC over HTTPS with client certificates; the gateway
reads a properties file in the seed's form, takes mail over real SMTP, enrols through the
real CMC client and relays to the SMTP sink; openssl judges the signatures.
"""

from __future__ import annotations

import smtplib
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from ca.init import initialise
from ca.keys import KeyType
from ca.keys.software import SoftwareBackend
from ca.service.certs import issue_access_certificate
from ca.service.http import CaService, ServiceThread
from cmc.client_config import client_from_config
from config.model import EnrolmentSettings, PkiConnection
from config.properties import load
from config.totemo import pki_connection_properties
from gateway.broker.enrolling import EnrollingCertificates
from gateway.broker.enrolment import Enroller
from gateway.broker.keypool import KeyPool, is_pool_label
from gateway.broker.renewal import Renewer
from gateway.certs.adapter import StoreCertificates
from gateway.certs.keystore import KeyStore
from gateway.certs.models import Source
from gateway.certs.store import CertStore
from gateway.devservices import SmtpSink, free_port
from gateway.pipeline import PipelineSettings, SmimePipeline
from gateway.policy import Policy, SignMode
from gateway.smime import smime_kind
from gateway.smtp.relay import NextHop
from gateway.smtp.server import GatewayHandler, start_front

PASSWORD = b"access-secret-1"
ACCOUNT = "example.ra"
MANUAL_PRODUCT = """
  example-manual:
    profile: mailbox
    validities: [1y]
    key_types: [rsa2048, rsa3072, ec-p256]
    approval: manual
    allow_simple_request: false
    publish_ldap: false
  example-gold:
    profile: sponsor
    validities: [1y]
    key_types: [rsa2048, rsa3072, ec-p256]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
"""


def _without_scheduled_publication(scheduler: Any, _service: CaService) -> None:
    if scheduler.get_job("ldap-publish") is not None:
        scheduler.remove_job("ldap-publish")


@dataclass
class BundledCa:
    """The bundled CA behind a real HTTPS CMC endpoint; :meth:`stop`/:meth:`start` it."""

    directory: Path
    https_port: int
    http_port: int
    thread: ServiceThread | None = None
    #: False: the LDAP publication job is not scheduled (a test runs the publisher itself)
    scheduled_publication: bool = True

    def start(self) -> CaService:
        service = CaService(
            self.directory, https=("127.0.0.1", self.https_port), http=("127.0.0.1", self.http_port)
        )
        if not self.scheduled_publication:
            service.extra_jobs = _without_scheduled_publication  # type: ignore[attr-defined]
        self.thread = ServiceThread(service)
        return self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    @property
    def service(self) -> CaService:
        assert self.thread is not None
        return self.thread.service

    def orders_for(self, email: str) -> list[object]:
        orders = self.service.ca.store.find_orders(account=ACCOUNT)
        return [o for o in orders if email in o.emails]

    def approve_all(self) -> None:
        for order in self.service.ca.store.find_orders(account=ACCOUNT):
            if order.status.value == "PENDING_AUTHORIZATION":
                self.service.ca.approve(order.id, "test-operator")


def write_properties(
    tmp: Path,
    ca: BundledCa,
    product: str,
    name: str,
    *,
    subject_template: str = "CN=Secure Mail: Gateway Certificate",
    issuer_dn: str | None = None,
    trusted_roots: str = "root-ca.pem",
    fetch_for_recipients: bool = False,
    extra: dict[str, object] | None = None,
) -> Path:
    """A gateway properties file in the seed's (Totemo/SwissSign) form; ``trusted_roots`` is
    a file of the CA's directory."""
    password = tmp / "access.pass"
    password.write_bytes(PASSWORD + b"\n")
    password.chmod(0o600)
    issuer = issuer_dn or ca.service.ca.issuing_cert.subject.rfc4514_string()
    path = tmp / f"{name}.properties"
    path.write_text(
        pki_connection_properties(
            server_name="localhost",
            server_port=ca.https_port,
            account=ACCOUNT,
            product=product,
            issuer_dn=issuer,
            access_p12=tmp / "access.p12",
            access_password_file=password,
            trusted_roots=ca.directory / trusted_roots,
            subject_template=subject_template,
            type_="rfc5272",
            fetch_for_recipients=fetch_for_recipients,
            extra={
                **(extra or {}),
                "cmcgate.pki.retries": 1,
                "cmcgate.pki.connectTimeout": 2,
                "cmcgate.gateway.internalDomains": "example.org",
                "cmcgate.keys.backend": "software",
                "cmcgate.keys.directory": tmp / "user-keys",
                "cmcgate.keys.passphraseFile": password,
            },
        )  # fmt: skip
    )
    return path


def start_bundled_ca(
    tmp: Path, **init_options: object
) -> tuple[BundledCa, PkiConnection, PkiConnection]:
    """A CA with an auto and a manual-approval product, started; the two PKI connections.

    ``init_options`` go to :func:`ca.init.initialise` (e.g. ``ldap_url`` to publish)."""
    directory = tmp / "ca"
    ca = BundledCa(directory, free_port(), free_port(), scheduled_publication=False)
    options: dict[str, object] = {"email_domains": ("example.org",), **init_options}
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{ca.http_port}", account_id=ACCOUNT,
        product_id="example-silver", organization_identifier="NTRCH-CHE-123.456.789",
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    text = ca_yaml.read_text().replace(
        "products: [example-silver]", "products: [example-silver, example-manual, example-gold]"
    )
    ca_yaml.write_text(text + MANUAL_PRODUCT)
    service = ca.start()
    (tmp / "access.p12").write_bytes(issue_access_certificate(service.ca, ACCOUNT, PASSWORD).p12)
    auto = load(write_properties(tmp, ca, "example-silver", "auto")).pki
    manual = load(write_properties(tmp, ca, "example-manual", "manual")).pki
    assert auto is not None and manual is not None
    return ca, auto, manual


@contextmanager
def running_bundled_ca(tmp: Path) -> Iterator[tuple[BundledCa, PkiConnection, PkiConnection]]:
    """:func:`start_bundled_ca`, stopped again on leaving."""
    ca, auto, manual = start_bundled_ca(tmp)
    try:
        yield ca, auto, manual
    finally:
        ca.stop()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, ...]]:
    with running_bundled_ca(tmp_path_factory.mktemp("enrol-ca")) as started:
        yield started


@dataclass
class Gateway:
    port: int
    store: CertStore
    keys: KeyStore
    enroller: Enroller
    ca: BundledCa
    controller: object

    def send(self, sender: str, body: str = "Hello Bob", *, from_header: str | None = None) -> None:
        message = (
            f"From: {from_header or sender}\r\nTo: bob@partner.example\r\nSubject: hi\r\n"
            f"Message-ID: <{threading.get_ident()}.{id(body)}@example.org>\r\n\r\n{body}\r\n"
        ).encode()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(sender, ["bob@partner.example"], message)


@pytest.fixture
def make_gateway(
    bundled: tuple, smtp_sink: SmtpSink, tmp_path: Path
) -> Iterator[Callable[..., Gateway]]:
    ca, auto, manual = bundled[:3]
    made: list[Gateway] = []

    def make(
        *,
        manual_approval: bool = False,
        pool_size: int = 0,
        pki: PkiConnection | None = None,
        keys: KeyStore | None = None,
        state_dir: Path | None = None,
    ) -> Gateway:
        """``pki``, ``keys`` and ``state_dir`` replace the defaults (the bundled CA's auto or
        manual product, software keys, the test's temporary directory)."""
        internal = ("example.org", "elsewhere.example")
        pki = pki or (manual if manual_approval else auto)
        store = CertStore.open(f"sqlite:///{tmp_path / 'gateway.db'}")
        if keys is None:
            keys = KeyStore(SoftwareBackend(tmp_path / "user-keys", passphrase="user-key-secret"))
        settings = EnrolmentSettings(key_pool_size=pool_size, key_type="rsa2048")
        enroller = Enroller(
            store, keys, lambda: client_from_config(pki), pki, settings,
            state_dir=state_dir or tmp_path,
        ).start()  # fmt: skip
        certificates = EnrollingCertificates(
            StoreCertificates(store, keys), enroller, internal_domains=internal
        )
        policy = Policy(default_sign=SignMode.ALWAYS)
        pipeline = SmimePipeline(PipelineSettings(internal, policy), certificates)
        handler = GatewayHandler(NextHop("127.0.0.1", smtp_sink.port, timeout=10), pipeline)
        port = free_port()
        controller = start_front(handler, "127.0.0.1", port, max_message_size=10**6)
        gateway = Gateway(port, store, keys, enroller, ca, controller)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.controller.stop()  # type: ignore[attr-defined]
        gateway.enroller.close()


def openssl_signer(directory: Path, ca: BundledCa, message: bytes) -> x509.Certificate:
    """``openssl cms -verify`` against the CA's root; returns the signer's certificate."""
    (directory / "signed.eml").write_bytes(message)
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-CAfile", str(ca.directory / "root-ca.pem"),
         "-in", str(directory / "signed.eml"), "-signer", str(directory / "signer.pem"),
         "-out", str(directory / "content.txt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return x509.load_pem_x509_certificate((directory / "signer.pem").read_bytes())


def _reply_code(gateway: Gateway, sender: str) -> int:
    try:
        gateway.send(sender)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code
    return 250


def test_the_first_mail_of_a_new_user_enrols_her_and_is_signed_with_the_new_certificate(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gateway = make_gateway()
    gateway.send("alice@example.org")
    [record] = gateway.store.find(email="alice@example.org")
    assert record.source is Source.PKI and record.key_label == "user:alice@example.org:1"
    [delivered] = smtp_sink.received()
    assert smime_kind(delivered.content) == "signed"
    signer = openssl_signer(tmp_path, gateway.ca, delivered.content)
    assert signer == record.certificate
    assert len(gateway.ca.orders_for("alice@example.org")) == 1
    gateway.send("alice@example.org", "second mail")  # no new order for a known user
    assert len(gateway.ca.orders_for("alice@example.org")) == 1


def test_fifty_concurrent_mails_from_a_new_user_make_exactly_one_order_and_all_are_signed(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gateway = make_gateway()
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def send(n: int) -> None:
        try:
            start.wait()
            gateway.send("burst@example.org", f"mail {n}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(gateway.ca.orders_for("burst@example.org")) == 1
    received = smtp_sink.received()
    assert len(received) == 50
    [record] = gateway.store.find(email="burst@example.org")
    assert all(smime_kind(m.content) == "signed" for m in received)
    assert openssl_signer(tmp_path, gateway.ca, received[-1].content) == record.certificate


def test_two_gateway_processes_sharing_state_make_exactly_one_order_for_a_new_user(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink
) -> None:
    """Workers of one gateway (``cmcgate.gateway.workers``): separate enrollers, stores and
    in-process single flights over one state directory — the lock file serialises them."""
    gateways = [make_gateway(), make_gateway()]
    errors: list[BaseException] = []
    start = threading.Barrier(40)

    def send(n: int) -> None:
        try:
            start.wait()
            gateways[n % 2].send("twice@example.org", f"mail {n}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(gateways[0].ca.orders_for("twice@example.org")) == 1
    assert len(gateways[0].store.find(email="twice@example.org")) == 1
    assert len(smtp_sink.received()) == 40
    assert all(smime_kind(m.content) == "signed" for m in smtp_sink.received())


def test_a_manual_approval_product_refuses_with_451_until_approved_then_signs(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gateway = make_gateway(manual_approval=True)
    assert _reply_code(gateway, "manual@example.org") == 451
    assert _reply_code(gateway, "manual@example.org") == 451  # the CA is not asked again
    assert len(gateway.ca.orders_for("manual@example.org")) == 1
    assert smtp_sink.received() == []
    assert gateway.enroller.poll_pending().pending == ["manual@example.org"]
    gateway.ca.approve_all()
    assert gateway.enroller.poll_pending().issued == ["manual@example.org"]
    gateway.send("manual@example.org")
    [delivered] = smtp_sink.received()
    [record] = gateway.store.find(email="manual@example.org")
    assert openssl_signer(tmp_path, gateway.ca, delivered.content) == record.certificate


def test_while_the_ca_is_down_mail_gets_451_and_after_it_is_back_the_next_attempt_is_signed(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gateway = make_gateway()
    gateway.ca.stop()
    try:
        assert _reply_code(gateway, "downtime@example.org") == 451
        assert smtp_sink.received() == []
        assert gateway.store.find(email="downtime@example.org") == []
    finally:
        gateway.ca.start()
    gateway.send("downtime@example.org")
    [delivered] = smtp_sink.received()
    [record] = gateway.store.find(email="downtime@example.org")
    assert record.key_label == "user:downtime@example.org:1"  # the key made while down, reused
    assert openssl_signer(tmp_path, gateway.ca, delivered.content) == record.certificate


def test_a_certificate_near_expiry_is_renewed_with_a_new_key_and_the_old_one_is_kept(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway()
    gateway.send("renew@example.org")
    [old] = gateway.store.find(email="renew@example.org")
    later = datetime.now(UTC) + timedelta(days=340)
    renewer = Renewer(gateway.store, gateway.enroller, internal_domains=("example.org",))
    assert renewer.run(datetime.now(UTC)).due == []  # nothing due today
    report = renewer.run(later)
    assert report.failed == {} and list(report.renewed) == ["renew@example.org"]
    records = gateway.store.find(email="renew@example.org")
    assert len(records) == 2 and old.fingerprint in {r.fingerprint for r in records}
    new = next(r for r in records if r.fingerprint != old.fingerprint)
    assert new.source is Source.PKI and new.key_label not in (None, old.key_label)
    assert new.certificate.public_key() != old.certificate.public_key()
    assert len(gateway.ca.orders_for("renew@example.org")) == 2
    signing = gateway.store.best_for_signing("renew@example.org", at=later)
    assert signing is not None and signing.fingerprint == new.fingerprint
    # renewing the old certificate again finds the new one: no second order
    assert gateway.enroller.renew("renew@example.org", old, later).cert == new.certificate
    assert len(gateway.ca.orders_for("renew@example.org")) == 2


def test_with_a_key_pool_the_first_send_takes_a_pooled_key_and_the_pool_refills(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gateway = make_gateway(pool_size=2)
    pool = gateway.enroller.pool
    assert isinstance(pool, KeyPool) and pool.wait_full(30)
    gateway.send("pooled@example.org")
    [record] = gateway.store.find(email="pooled@example.org")
    assert record.key_label is not None and is_pool_label(record.key_label)
    assert pool.taken == 1 and pool.wait_full(30)
    [delivered] = smtp_sink.received()
    assert openssl_signer(tmp_path, gateway.ca, delivered.content) == record.certificate
    # a second pool over the same backend does not hand out the claimed key again
    again = KeyPool(gateway.keys, 0, "rsa2048", claims_dir=tmp_path / "pool-claims")
    handles = [again.take("x@example.org") for _ in range(3)]
    assert record.key_label not in {h.label for h in handles if h is not None}


def test_a_user_the_ca_refuses_gets_no_certificate_and_the_ca_is_not_asked_for_every_mail(
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink
) -> None:
    gateway = make_gateway()  # elsewhere.example is internal here but not validated at the CA
    before = len(gateway.ca.service.ca.store.find_orders(account=ACCOUNT))
    assert _reply_code(gateway, "eve@elsewhere.example") == 451  # sign=always, no certificate
    assert _reply_code(gateway, "eve@elsewhere.example") == 451
    assert len(gateway.ca.service.ca.store.find_orders(account=ACCOUNT)) <= before + 1
    assert gateway.store.find(email="eve@elsewhere.example") == []
    assert gateway.keys.labels_for("eve@elsewhere.example") == []  # the unused key is gone
    assert smtp_sink.received() == []
