"""The bundled CA answers CMC requests sent with GET (``?message=`` + base64), as the project's
client sends them with ``security.pkiConnection.rfc2797.requestType=GET``: same TLS client
certificate check, same answer as POST. Real HTTPS on loopback, the real client."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cmc.client import CmcClient
from cmc.errors import CMCFailure
from cmc.messages.api import build_full_request
from cmc.transport.codec import get_request_url
from tests.ca import test_cmc_server as server_tests

Running = server_tests.Running
#: the module-scoped CA over HTTPS and its gateway properties (an instance of its own here)
running = server_tests.running


def _get_client(running: Running, props: Path | None = None) -> CmcClient:
    """The gateway's client configured, through the Totemo key, to send GET requests."""
    source = props or running.props
    text = source.read_text()
    assert "rfc2797.requestType=POST" in text
    get_props = source.with_name(source.stem + "-get.properties")
    get_props.write_text(text.replace("rfc2797.requestType=POST", "rfc2797.requestType=GET"))
    pki = running.pki(get_props)
    assert pki.request_method == "GET"
    return running.client(get_props)


def test_a_gateway_configured_for_get_enrols_a_user(running: Running) -> None:
    csr, key = server_tests._csr("getter@example.org")
    with _get_client(running) as client:
        result = client.enroll(csr, key)
        fetched = client.get_cert(result.certificate.issuer, result.certificate.serial_number)
    assert result.certificate.public_key() == key.public_key()
    assert fetched == result.certificate
    emails = result.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.RFC822Name)
    assert emails == ["getter@example.org"]


def test_get_checks_the_access_certificate_like_post(running: Running) -> None:
    csr, key = server_tests._csr("mallory-get@example.org")
    with _get_client(running, running.other_props) as client, pytest.raises(CMCFailure) as failed:
        client.enroll(csr, key)
    assert failed.value.fail_info == "badIdentity"
    assert "speaks for account other.ra" in (failed.value.status_string or "")


def _tls_get(running: Running, path_and_query: str) -> requests.Response:
    """A plain HTTPS GET with the gateway's access certificate (requests, no CMC client)."""
    directory = running.directory.parent
    from cryptography.hazmat.primitives.serialization import pkcs12

    key, cert, _ = pkcs12.load_key_and_certificates(
        (directory / f"{server_tests.ACCOUNT}.p12").read_bytes(), server_tests.PASSWORD
    )
    assert key is not None and cert is not None
    pem = directory / "access-get.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    url = f"https://localhost:{running.service.https_port}{path_and_query}"
    return requests.get(
        url, cert=str(pem), verify=str(running.directory / "root-ca.pem"), timeout=30
    )


def test_get_and_post_of_one_request_get_the_same_kind_of_answer(running: Running) -> None:
    csr, _ = server_tests._csr("twin@example.org")
    request = build_full_request(signer=running.access_signer(), requests=[csr])
    path = f"/ws/cmc?account={server_tests.ACCOUNT}&product={server_tests.SILVER}"
    answer = _tls_get(running, get_request_url(path, request.der, "message"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/pkcs7-mime")
    fail_info, text = server_tests._status_of(running, answer.content)
    assert fail_info is None, text
    # the same request again (POST this time) is a replay of an issued request: answered
    # from the order the GET made (RFC 5272 §3.2.3 style), so the GET was really processed
    again = server_tests._status_of(running, server_tests._raw_exchange(running, request.der))
    assert again[0] is None, again[1]
    certificates = running.service.ca.store.find_certificates(email="twin@example.org")
    assert len(certificates) == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", 400),  # no message at all
        ("&message=%%%", 400),  # not base64
        ("&message=" + quote(base64.b64encode(b"not CMC").decode(), safe=""), 400),
        ("&message=AA%3D%3D&message=AA%3D%3D", 400),  # two messages
        ("&message=" + "A" * 20000, 400),  # longer than aiohttp's default request line
    ],
)
def test_bad_get_requests_get_http_errors_without_traces(
    running: Running, query: str, expected: int
) -> None:
    answer = _tls_get(running, f"/ws/cmc?account={server_tests.ACCOUNT}{query}")
    assert answer.status_code == expected
    assert "Traceback" not in answer.text
    assert "message parameter" in answer.text or "PKI Request" in answer.text, answer.text


def test_get_without_a_client_certificate_gets_no_answer(running: Running) -> None:
    url = f"https://localhost:{running.service.https_port}/cmc?message=AA%3D%3D"
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(url, verify=str(running.directory / "root-ca.pem"), timeout=30)
