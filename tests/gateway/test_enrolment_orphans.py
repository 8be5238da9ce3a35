"""Enrolment survives a lost answer, on real services.

A lost answer: a TCP proxy (real sockets) between the gateway and the bundled CA's HTTPS port
passes the gateway's request on, lets the CA issue, and then closes the gateway's connection
instead of passing the CA's answer on.  The CA has issued a valid certificate the gateway never
got; the retry must get *that* certificate (no second one) and sign the mail with it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import CertificateAuthority
from ca.keys.software import SoftwareBackend
from ca.service.cmc import CmcService, Query
from cmc.client import CmcClient, access_signer
from cmc.client_config import client_from_config
from cmc.errors import CMCTryLater
from cmc.transport.pkcs12 import load_pkcs12
from config.model import EnrolmentSettings
from gateway.broker.enrolment import Enroller
from gateway.certs.keystore import KeyStore
from gateway.certs.store import CertStore
from gateway.devservices import SmtpSink
from tests.gateway import test_enrolment
from tests.gateway.test_enrolment import (
    ACCOUNT,
    PASSWORD,
    BundledCa,
    Gateway,
    _reply_code,
    openssl_signer,
)

bundled = test_enrolment.bundled  # the fixtures, for this module too
make_gateway = test_enrolment.make_gateway


class AnswerDroppingProxy:
    """Forwards TCP connections to ``127.0.0.1:upstream_port``.  On the first connection,
    whatever the server sends once ``processed()`` is true (the CA has issued: what follows is
    its answer) is dropped and both connections are closed, or, with ``hold``, left open
    until the client gives up.  TLS passes through untouched."""

    def __init__(
        self, upstream_port: int, processed: Callable[[], bool], *, hold: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.processed = processed
        self.hold = hold
        self.connections = 0
        self.dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            drop = self.connections == 1
            for source, sink, dropping in ((client, upstream, False), (upstream, client, drop)):
                threading.Thread(
                    target=self._pump, args=(source, sink, dropping), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, drop_answer: bool) -> None:
        try:
            while data := source.recv(65536):
                if drop_answer and self.processed():
                    self.dropped += 1
                    if self.hold:
                        continue
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._listener.close()


def _issued_at_ca(ca: BundledCa, email: str) -> list[bytes]:
    return [c.der for c in ca.service.ca.store.find_certificates(email=email)]


def _assert_signed_with_the_one_certificate_issued(
    ca: BundledCa, gateway: Gateway, sink: SmtpSink, directory: Path, email: str
) -> None:
    """The one mail delivered verifies (openssl) with the gateway's certificate for ``email``,
    which is the only certificate the CA issued for it."""
    [delivered] = sink.received()
    [record] = gateway.store.find(email=email)
    assert openssl_signer(directory, ca, delivered.content) == record.certificate
    assert _issued_at_ca(ca, email) == [record.certificate.public_bytes(Encoding.DER)]


@pytest.mark.parametrize("between", ["nothing", "restart", "poll"])
def test_when_the_cas_answer_is_lost_the_retry_is_signed_with_the_one_certificate_issued(
    bundled: tuple, make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path,
    between: str,
) -> None:  # fmt: skip
    """Between the two attempts: nothing, a restart of the gateway, or a run of the
    background enrolment poll (which fetches the certificate before the mail comes back)."""
    ca, auto, _ = bundled
    email = f"lost-{between}@example.org"
    proxy = AnswerDroppingProxy(ca.https_port, lambda: bool(_issued_at_ca(ca, email)))
    try:
        pki = replace(auto, server_port=proxy.port, retries=1)  # the transport does not resend
        gateway = make_gateway(pki=pki)
        assert _reply_code(gateway, email) == 451  # no answer: temporary, the mail stays queued
        assert proxy.dropped == 1 and len(_issued_at_ca(ca, email)) == 1
        assert gateway.store.find(email=email) == [] and smtp_sink.received() == []
        if between == "restart":  # the gateway died after the request had left
            gateway.enroller.close()
            gateway = make_gateway(pki=pki)  # a new one over the same state and stores
        if between == "poll":
            assert gateway.enroller.poll_pending().issued == [email]
            assert len(gateway.store.find(email=email)) == 1
        assert _reply_code(gateway, email) == 250
    finally:
        proxy.close()
    _assert_signed_with_the_one_certificate_issued(ca, gateway, smtp_sink, tmp_path, email)
    assert len(ca.orders_for(email)) == 1


def test_an_answer_later_than_the_read_timeout_is_fetched_by_the_next_attempt(
    bundled: tuple, make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    ca, auto, _ = bundled
    email = "late@example.org"
    proxy = AnswerDroppingProxy(ca.https_port, lambda: bool(_issued_at_ca(ca, email)), hold=True)
    try:
        gateway = make_gateway(pki=replace(auto, server_port=proxy.port, read_timeout=1.0))
        assert _reply_code(gateway, email) == 451  # the gateway stopped waiting
        assert proxy.dropped >= 1 and len(_issued_at_ca(ca, email)) == 1
        assert _reply_code(gateway, email) == 250
    finally:
        proxy.close()
    _assert_signed_with_the_one_certificate_issued(ca, gateway, smtp_sink, tmp_path, email)


def test_an_answer_lost_on_the_first_attempt_is_fetched_by_the_transports_own_resend(
    bundled: tuple, make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """The transport resends the very same request (same transactionId and senderNonce) after
    a broken connection: the CA answers that replay with the certificate it issued."""
    ca, auto, _ = bundled
    email = "resent@example.org"
    proxy = AnswerDroppingProxy(ca.https_port, lambda: bool(_issued_at_ca(ca, email)))
    try:
        gateway = make_gateway(pki=replace(auto, server_port=proxy.port, retries=2))
        assert _reply_code(gateway, email) == 250
    finally:
        proxy.close()
    assert proxy.dropped == 1 and proxy.connections == 2
    _assert_signed_with_the_one_certificate_issued(ca, gateway, smtp_sink, tmp_path, email)


class InProcessCmc:
    """The CMC exchange with a :class:`~ca.service.cmc.CmcService` in this process, ``access``
    standing for the TLS client certificate: a CA with its key store closed (and a signer
    that still works, so that its tryLater is a signed answer) cannot be started as a server."""

    def __init__(self, service: CmcService, access: x509.Certificate) -> None:
        self.service = service
        self.access = access

    def send(self, body_der: bytes, *, full: bool) -> bytes:
        query = Query(ACCOUNT, "example-silver")
        return self.service.handle(body_der, "application/pkcs7-mime", query, self.access).body


def test_after_a_try_later_answer_the_next_attempt_is_a_new_transaction_with_the_same_key(
    bundled: tuple, tmp_path: Path
) -> None:
    """tryLater is an answer: that transaction is over (a CA that refuses resends would refuse
    it), so the next attempt sends a new request, for the key recorded before."""
    ca, auto, _ = bundled
    email = "later@example.org"
    outage = CertificateAuthority.open(ca.directory / "ca.yaml")
    outage.keys.close()
    material = ca.service.material
    p12 = (ca.directory.parent / "access.p12").read_bytes()
    down = InProcessCmc(CmcService(outage, material.signer, material.infra_cert),
                        load_pkcs12(p12, PASSWORD).certificate)  # fmt: skip

    def down_client() -> CmcClient:
        signer = access_signer(p12, PASSWORD)
        roots = [ca.service.ca.root_cert]
        return CmcClient(down, trust_anchors=roots, issuer_dn=auto.issuer_dn,
                         signer_for_request=signer)  # fmt: skip

    clients = [down_client, lambda: client_from_config(auto)]
    store = CertStore.open(f"sqlite:///{tmp_path / 'gateway.db'}")
    keys = KeyStore(SoftwareBackend(tmp_path / "user-keys", passphrase="user-key-secret"))
    enroller = Enroller(store, keys, lambda: clients[0](), auto,
                        EnrolmentSettings(key_type="rsa2048"), state_dir=tmp_path)  # fmt: skip
    try:
        with pytest.raises(CMCTryLater):
            enroller.enrol(email)
        clients.pop(0)
        identity = enroller.enrol(email)
    finally:
        enroller.close()
        outage.store.close()
    orders = ca.orders_for(email)
    assert [o.status.value for o in orders] == ["FAILED", "ISSUED"]
    assert orders[0].transaction_id != orders[1].transaction_id
    assert keys.labels_for(email) == ["user:later@example.org:1"]
    assert identity.cert.public_key() == keys.backend.load("user:later@example.org:1").public_key()
