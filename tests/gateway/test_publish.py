"""The gateway publishes the certificates it enrols to the configured directory, on real services.

The bundled CA serves CMC over HTTPS (it does not publish itself here: its products have
``publish_ldap: false``); the gateway runs in-process from a properties file with
``cmcgate.publish.ldap.*`` pointing at a real slapd; ldap3 reads the directory back.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from config.properties import load
from gateway.devservices import Slapd, SmtpSink, free_port
from gateway.smime import smime_kind
from gateway.smtp import service
from tests.gateway.test_enrolment import BundledCa, openssl_signer, start_bundled_ca


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BundledCa, Path]]:
    directory = tmp_path_factory.mktemp("publish-ca")
    ca, _auto, _manual = start_bundled_ca(directory)
    try:
        yield ca, directory / "auto.properties"
    finally:
        ca.stop()


@pytest.fixture
def running(
    bundled: tuple[BundledCa, Path], slapd: Slapd, smtp_sink: SmtpSink, tmp_path: Path
) -> Iterator[service.RunningGateway]:
    _ca, seed = bundled
    (tmp_path / "ldap.pass").write_text(slapd.admin_password + "\n")
    path = tmp_path / "gateway.properties"
    path.write_text(
        seed.read_text() + f"cmcgate.gateway.listen=127.0.0.1:{free_port()}\n"
        f"cmcgate.gateway.nextHop=127.0.0.1:{smtp_sink.port}\n"
        "cmcgate.gateway.nextHopTls=off\n"
        f"cmcgate.gateway.stateDir={tmp_path / 'state'}\n"
        f"cmcgate.store.dsn=sqlite:///{tmp_path / 'gateway.db'}\n"
        "cmcgate.policy.sign=always\n"
        "cmcgate.enrolment.keyType=ec-p256\n"
        f"cmcgate.publish.ldap.url={slapd.url}\n"
        f"cmcgate.publish.ldap.base={slapd.suffix}\n"
        f"cmcgate.publish.ldap.bindDn={slapd.admin_dn}\n"
        f"cmcgate.publish.ldap.passwordFile={tmp_path / 'ldap.pass'}\n"
        "cmcgate.publish.ldap.timeout=2\n"
    )
    gateway = service.start(load(path))
    try:
        yield gateway
    finally:
        gateway.stop()


def send(gateway: service.RunningGateway, sender: str) -> None:
    message = (
        f"From: {sender}\r\nTo: bob@partner.example\r\nSubject: hi\r\n"
        f"Message-ID: <{time.monotonic_ns()}@example.org>\r\n\r\nHello Bob\r\n"
    ).encode()
    listen = gateway.config.gateway.listen
    with smtplib.SMTP(listen.host, listen.port, timeout=30) as client:
        client.sendmail(sender, ["bob@partner.example"], message)


def certificates_in(slapd: Slapd, email: str) -> list[bytes]:
    with slapd.connection() as conn:
        conn.search(slapd.suffix, f"(mail={email})", attributes=["userCertificate;binary"])
        return [bytes(v) for entry in conn.entries for v in entry["userCertificate;binary"].values]


def eventually(probe: Callable[[], object], seconds: float = 15) -> object:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_the_first_mail_of_a_new_user_enrols_her_and_her_certificate_appears_in_ldap(
    bundled: tuple[BundledCa, Path],
    running: service.RunningGateway,
    slapd: Slapd,
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    send(running, "alice@example.org")

    [record] = running.stores.certs.find(email="alice@example.org")
    der = record.certificate.public_bytes(Encoding.DER)
    assert eventually(lambda: certificates_in(slapd, "alice@example.org")) == [der]
    [delivered] = smtp_sink.received()
    assert openssl_signer(tmp_path, bundled[0], delivered.content) == record.certificate
    assert not list((tmp_path / "state" / "publish").iterdir())  # nothing left to retry
    with slapd.connection() as conn:
        conn.search(slapd.suffix, "(mail=alice@example.org)", attributes=["objectClass", "sn"])
        [entry] = conn.entries
    assert entry.entry_dn == f"mail=alice@example.org,{slapd.suffix}"
    assert "inetOrgPerson" in entry["objectClass"].values and entry["sn"].value == "alice"


def test_an_existing_entry_gets_the_certificate_added(
    running: service.RunningGateway, slapd: Slapd
) -> None:
    dn = f"uid=carol,{slapd.suffix}"
    with slapd.connection() as conn:
        assert conn.add(dn, ["inetOrgPerson"],
                        {"cn": "Carol", "sn": "Example", "mail": "carol@example.org"})  # fmt: skip

    send(running, "carol@example.org")

    [record] = running.stores.certs.find(email="carol@example.org")
    der = record.certificate.public_bytes(Encoding.DER)
    assert eventually(lambda: certificates_in(slapd, "carol@example.org")) == [der]
    with slapd.connection() as conn:
        conn.search(slapd.suffix, "(mail=carol@example.org)")
        assert [e.entry_dn for e in conn.entries] == [dn]  # no second entry created


def test_with_ldap_down_mail_still_goes_out_signed_and_the_next_poll_publishes(
    running: service.RunningGateway, slapd: Slapd, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    slapd.pause()
    started = time.monotonic()
    send(running, "dave@example.org")
    took = time.monotonic() - started

    [delivered] = smtp_sink.received()
    assert smime_kind(delivered.content) == "signed"
    assert took < 10
    [record] = running.stores.certs.find(email="dave@example.org")
    waiting = tmp_path / "state" / "publish"
    assert eventually(lambda: list(waiting.iterdir()))  # remembered for the retry
    enroller = running.broker.enroller
    report = enroller.poll_pending()  # still down: kept, nothing raised
    assert report.failed == {} and len(list(waiting.iterdir())) == 1

    slapd.start()
    enroller.poll_pending()

    der = record.certificate.public_bytes(Encoding.DER)
    assert certificates_in(slapd, "dave@example.org") == [der]
    assert not list(waiting.iterdir())
