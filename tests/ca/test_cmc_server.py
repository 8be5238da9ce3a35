"""The bundled CA's CMC service over real HTTPS on loopback with client certificates.

The gateway side is the real CMC client, configured from a properties file in the seed's
form (``config.properties.load`` + ``cmc.client_config.client_from_config``): trusted root =
our root CA, access certificate = the PKCS#12 ``cmcgate ca access-cert`` issued.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ca.init import initialise
from ca.keys import KeyType
from ca.keys.softhsm import SoftHsmToken
from ca.service.certs import INFRA_KEY_LABEL, SIGNER_KEY_LABEL, issue_access_certificate
from ca.service.commands import register_service_commands
from ca.service.http import CaService, ServiceThread
from ca.store.audit import audit_records
from cmc.client import CmcClient, EnrollmentPending, access_signer, client_from_settings
from cmc.client_config import client_from_config, transport_settings
from cmc.errors import CMCFailure
from cmc.messages.api import (
    FullPKIResponse,
    RawValue,
    Signer,
    build_full_request,
    control,
    parse_response,
)
from cmc.transport.http import CmcTransport, HttpStatusRefused, TransportError, TransportSettings
from config.model import PkiConnection
from config.properties import load
from config.totemo import pki_connection_properties
from gateway.main import main

PASSWORD = b"access-secret-1"
ACCOUNT, OTHER = "example.ra", "other.ra"
SILVER, SPONSOR = "example-silver", "example-sponsor"


def _rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 1024)


EXTRA_PRODUCTS = """
  example-manual:
    profile: mailbox
    validities: [1y]
    key_types: [rsa2048, rsa3072, ec-p256, ec-p384]
    approval: manual
    allow_simple_request: false
    publish_ldap: false
  example-sponsor:
    profile: sponsor
    validities: [1y]
    key_types: [ec-p256]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
  other-silver:
    profile: mailbox
    validities: [1y]
    key_types: [ec-p256]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
"""

OTHER_ACCOUNT = """
  other.ra:
    organisation:
      name: "Other AG"
      country: "CH"
    email_domains:
      - "other.org"
    products: [other-silver]

"""


def _service_cli(argv: list[str]) -> int:
    """``cmcgate ca <argv>`` for the commands of
    :func:`ca.service.http.register_service_commands`."""
    parser = argparse.ArgumentParser(prog="cmcgate ca")
    register_service_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    directory: Path
    service: CaService
    props: Path
    other_props: Path

    def pki(self, props: Path | None = None) -> PkiConnection:
        pki = load(props or self.props).pki
        assert pki is not None
        return pki

    def client(self, props: Path | None = None) -> CmcClient:
        return client_from_config(self.pki(props))

    def client_for(self, url_tail: str) -> CmcClient:
        """The gateway's client with another ``connection.ssl.url``."""
        pki = self.pki()
        settings = transport_settings(pki)
        url = settings.url.split("/ws/cmc")[0] + url_tail
        return client_from_settings(replace(settings, url=url), issuer_dn=pki.issuer_dn)

    def transport(self) -> CmcTransport:
        return CmcTransport(transport_settings(self.pki()))

    def access_signer(self) -> Signer:
        return access_signer((self.directory.parent / f"{ACCOUNT}.p12").read_bytes(), PASSWORD)

    @property
    def crl_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}/crl/issuing.crl"


def _write_props(tmp: Path, name: str, port: int, url: str, p12: Path, issuer: str) -> Path:
    password = tmp / f"{name}.pass"
    password.write_bytes(PASSWORD + b"\n")
    path = tmp / f"{name}.properties"
    path.write_text(
        pki_connection_properties(
            server_name="localhost",
            server_port=port,
            account=ACCOUNT,
            product=SILVER,
            url=url,
            issuer_dn=issuer,
            access_p12=p12,
            access_password_file=password,
            trusted_roots=tmp / "ca" / "root-ca.pem",
            type_="rfc5272",
            extra={
                "cmcgate.pki.retries": 1,
                "cmcgate.gateway.internalDomains": "example.org",
                "cmcgate.keys.backend": "software",
                "cmcgate.keys.directory": tmp / "gw-keys",
                "cmcgate.keys.passphraseFile": password,
            },
        )  # fmt: skip
    )
    return path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("cmc-server")
    directory = tmp / "ca"
    http_port = _free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id="example-silver",
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    text = ca_yaml.read_text()
    text = text.replace(
        "products: [example-silver]", "products: [example-silver, example-manual, example-sponsor]"
    )
    text = text.replace("# what can be ordered", OTHER_ACCOUNT + "# what can be ordered")
    ca_yaml.write_text(text + EXTRA_PRODUCTS)
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    thread = ServiceThread(service)
    thread.start()
    try:
        # the CLI issues the access certificate, as an operator would
        (tmp / "p12.pass").write_bytes(PASSWORD + b"\n")
        for account in (ACCOUNT, OTHER):
            assert _service_cli(["access-cert", "--dir", str(directory), "--account", account,
                                 "--out", str(tmp / f"{account}.p12"),
                                 "--password-file", str(tmp / "p12.pass")]) == 0  # fmt: skip
        issuer = service.ca.issuing_cert.subject.rfc4514_string()
        url = f"/ws/cmc?account={ACCOUNT}&product=example-silver&validity=1y"
        props = _write_props(tmp, "gw", service.https_port, url, tmp / f"{ACCOUNT}.p12", issuer)
        other = _write_props(tmp, "other", service.https_port, url, tmp / f"{OTHER}.p12", issuer)
        yield Running(directory, service, props, other)
    finally:
        thread.stop()


def _csr(email: str, key: object = None, cn: str | None = None) -> tuple:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or email)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return csr, key


def _failure(exc_info: pytest.ExceptionInfo[CMCFailure]) -> str | None:
    return exc_info.value.fail_info


def test_a_gateway_enrols_a_user_and_openssl_accepts_the_certificate(running: Running) -> None:
    csr, key = _csr("alice@example.org")
    with running.client() as client:
        result = client.enroll(csr, key)
    cert = result.certificate
    assert cert.public_key() == key.public_key()
    assert "alice@example.org" in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name)
    leaf = running.directory / "alice.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-purpose", "smimesign",
         "-CAfile", str(running.directory / "root-ca.pem"),
         "-untrusted", str(running.directory / "issuing-ca.pem"), str(leaf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert result.signer_chain[0].subject.rfc4514_string().startswith("CN=cmcgate CMC Signer")


def test_a_manual_product_is_pending_until_an_operator_approves(running: Running) -> None:
    csr, key = _csr("bob@example.org")
    client = running.client_for(f"/ws/cmc?account={ACCOUNT}&product=example-manual")
    with client, pytest.raises(EnrollmentPending) as pending:
        client.enroll(csr, key)
    token = pending.value.pending.pend_token
    order = running.service.ca.store.find_order_by_pend_token(token)
    assert order is not None and order.status.value == "PENDING_AUTHORIZATION"
    with running.client() as again, pytest.raises(EnrollmentPending):
        again.poll(pending.value.pending)
    assert main(["ca", "approve", "--dir", str(running.directory), order.id]) == 0
    with running.client() as again:
        result = again.poll(pending.value.pending)
    assert result.certificate.public_key() == key.public_key()


def test_a_revoked_certificate_is_in_the_next_crl_served_over_http(running: Running) -> None:
    csr, key = _csr("carol@example.org")
    with running.client() as client:
        cert = client.enroll(csr, key).certificate
        issuer = cert.issuer
        fetched = client.get_cert(issuer, cert.serial_number)
        assert fetched == cert
        client.revoke(issuer, cert.serial_number, "key_compromise")
    answer = requests.get(running.crl_url, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(answer.content)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert crl.is_signature_valid(running.service.ca.issuing_cert.public_key())  # type: ignore[arg-type]


def _tls_without_client_cert(running: Running, version: ssl.TLSVersion) -> bytes:
    context = ssl.create_default_context(cadata=running.service.ca.root_cert.public_bytes(
        serialization.Encoding.PEM).decode())  # fmt: skip
    context.maximum_version = version
    with socket.create_connection(("127.0.0.1", running.service.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"POST /cmc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
            return tls.recv(1024)


def test_without_a_client_certificate_the_tls_handshake_is_refused(running: Running) -> None:
    # TLS 1.2: the handshake itself fails (asyncio closes without flushing the alert: EOF)
    with pytest.raises(ssl.SSLError):
        _tls_without_client_cert(running, ssl.TLSVersion.TLSv1_2)
    # TLS 1.3: the server refuses right after the handshake; no HTTP answer ever comes
    try:
        answer = _tls_without_client_cert(running, ssl.TLSVersion.TLSv1_3)
    except (ssl.SSLError, ConnectionError):
        answer = b""
    assert answer == b""
    settings = TransportSettings(
        url=running.pki().url, trust_anchors=(running.service.ca.root_cert,), retries=1
    )
    with CmcTransport(settings) as transport, pytest.raises(TransportError):
        transport.send(b"\x30\x00", full=True)


def test_the_access_certificate_of_another_account_is_refused_as_bad_identity(
    running: Running,
) -> None:
    csr, key = _csr("dave@example.org")
    with running.client(running.other_props) as client, pytest.raises(CMCFailure) as failed:
        client.enroll(csr, key)
    assert _failure(failed) == "badIdentity"
    assert "speaks for account other.ra" in (failed.value.status_string or "")
    refusals = [r for r in audit_records(running.service.ca.store) if r.event_type == "refusal"]
    assert any(r.details.get("fail_info") == "badIdentity" for r in refusals)


def test_an_unknown_product_is_refused_as_bad_identity(running: Running) -> None:
    csr, key = _csr("erin@example.org")
    with running.client_for(f"/ws/cmc?account={ACCOUNT}&product=nope") as client:
        with pytest.raises(CMCFailure) as failed:
            client.enroll(csr, key)
    assert _failure(failed) == "badIdentity"


@pytest.mark.parametrize(
    ("story", "email", "key_factory", "product", "fail_info"),
    [
        ("email domain not validated", "mallory@evil.example", None, SILVER, "badIdentity"),
        ("RSA-1024 key", "frank@example.org", _rsa1024, SILVER, "badAlg"),
        ("sponsor subject, no personal name", "gina@example.org", None, SPONSOR, "badRequest"),
    ],
)  # fmt: skip
def test_a_request_the_profile_does_not_allow_is_refused_with_the_right_fail_info(
    running: Running, story: str, email: str, key_factory: object, product: str, fail_info: str
) -> None:
    key = key_factory() if callable(key_factory) else None
    csr, key = _csr(email, key)
    url = f"/ws/cmc?account={ACCOUNT}&product={product}"
    with running.client_for(url) as client, pytest.raises(CMCFailure) as failed:
        client.enroll(csr, key)
    assert _failure(failed) == fail_info, (story, failed.value.status_string)


def test_a_csr_whose_signature_does_not_verify_fails_proof_of_possession(
    running: Running,
) -> None:
    csr, key = _csr("hank@example.org")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    broken = x509.load_der_x509_csr(bytes(der))
    with running.client() as client, pytest.raises(CMCFailure) as failed:
        client.enroll(broken, key)
    assert _failure(failed) == "popFailed"


def _raw_exchange(running: Running, der: bytes) -> bytes:
    with running.transport() as transport:
        return transport.send(der, full=True)


def _status_of(running: Running, answer: bytes) -> tuple[str | None, str | None]:
    response = parse_response(answer)
    assert isinstance(response, FullPKIResponse)
    status = response.statuses[0]
    return status.fail_info_name, status.status_string


def test_a_tampered_request_fails_the_message_check(running: Running) -> None:
    signer = running.access_signer()
    csr, _ = _csr("jack@example.org")
    nonce = b"N" * 16
    request = build_full_request(signer=signer, requests=[csr], sender_nonce=nonce)
    tampered = request.der.replace(nonce, b"M" * 16)
    assert _status_of(running, _raw_exchange(running, tampered))[0] == "badMessageCheck"


def test_an_unsupported_control_is_refused(running: Running) -> None:
    signer = running.access_signer()
    csr, _ = _csr("kim@example.org")
    request = build_full_request(
        signer=signer, requests=[csr], controls=[control("1.2.3.4.5", RawValue(b"\x05\x00"))]
    )
    assert _status_of(running, _raw_exchange(running, request.der))[0] == "badRequest"


def test_garbage_and_wrong_content_types_get_http_errors(running: Running) -> None:
    with running.transport() as transport:
        with pytest.raises(HttpStatusRefused) as bad:
            transport.send(b"this is not CMC", full=True)
    assert bad.value.status == 400
    assert "Traceback" not in str(bad.value)


def test_the_access_certificate_is_registered_and_audited(running: Running) -> None:
    issued = issue_access_certificate(running.service.ca, ACCOUNT, PASSWORD)
    assert (running.directory / "access" / f"{issued.sha256}.pem").exists()
    cn = issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == ACCOUNT


def test_with_keys_in_the_hsm_the_response_is_signed_by_a_token_key(
    tmp_path: Path, softhsm_token: SoftHsmToken
) -> None:
    directory = tmp_path / "ca"
    initialise(
        directory, key_backend="pkcs11", pkcs11_module=softhsm_token.module_path,
        token_label=softhsm_token.token_label, pin_file=softhsm_token.pin_file,
        key_type=KeyType.EC_P256, progress=lambda _: None, account_id=ACCOUNT,
        email_domains=("example.org",), product_id=SILVER,
    )  # fmt: skip
    thread = ServiceThread(CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", 0)))
    service = thread.start()
    try:
        issue = issue_access_certificate(service.ca, ACCOUNT, PASSWORD)
        signer = service.material.signer
        assert getattr(signer.key, "backend_kind", None) == "pkcs11"
        assert service.ca.keys.exists(SIGNER_KEY_LABEL)
        assert service.ca.keys.exists(INFRA_KEY_LABEL)
        (tmp_path / "gw.p12").write_bytes(issue.p12)
        issuer = service.ca.issuing_cert.subject.rfc4514_string()
        url = f"/ws/cmc?account={ACCOUNT}&product={SILVER}"
        props = _write_props(tmp_path, "gw", service.https_port, url, tmp_path / "gw.p12", issuer)
        pki = load(props).pki
        assert pki is not None
        csr, key = _csr("hsm@example.org")
        with client_from_config(pki) as client:
            result = client.enroll(csr, key)
        assert result.signer_chain[0] == signer.certificate
    finally:
        thread.stop()
