"""RFC 5273 transport against a real HTTPS responder on loopback with client-cert auth."""

from __future__ import annotations

import base64
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from cmc.errors import TemporaryFailure
from cmc.transport.codec import decode_response_body, is_der_sequence
from cmc.transport.http import (
    ClientCertificateRefused,
    CmcTransport,
    HttpStatusRefused,
    InvalidTransportSettings,
    ServerNotTrusted,
    TransportRefused,
    TransportSettings,
    TransportUnavailable,
    UndecodableResponse,
    UnexpectedContentType,
)
from cmc.transport.pkcs12 import AccessCredentialError, encrypted_pem_bundle, load_pkcs12
from cmc.transport.tls import client_context, load_client_chain
from tests.cmc.tlsresponder import Reply, TlsResponder
from tests.cmc.transport_pki import P12_PASSWORD, TransportPki, mint_transport_pki

FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "backoff": 0.01}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TransportPki:
    return mint_transport_pki(tmp_path_factory.mktemp("transport-pki"))


@pytest.fixture
def start_responder(pki: TransportPki) -> Iterator[Callable[..., TlsResponder]]:
    started: list[TlsResponder] = []

    def start(*, localhost_only: bool = False, tls: bool = True) -> TlsResponder:
        files = pki.server_localhost_only if localhost_only else pki.server
        responder = TlsResponder(
            cert_file=files.cert_file,
            key_file=files.key_file,
            client_ca_file=pki.ca_file,
            tls=tls,
        ).start()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        responder.stop()


@pytest.fixture
def responder(start_responder: Callable[..., TlsResponder]) -> TlsResponder:
    return start_responder()


@pytest.fixture
def response_der(pki: TransportPki) -> bytes:
    return pki.ca.certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def csr_der(pki: TransportPki) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=alice@example.org"))
        .sign(pki.client.key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def make_settings(pki: TransportPki, url: str = "", **overrides: Any) -> TransportSettings:
    values: dict[str, Any] = {
        "url": url,
        "access_p12": pki.client_p12,
        "access_p12_password": P12_PASSWORD,
        "trust_anchors": (pki.ca.certificate,),
        **FAST,
    }
    values.update(overrides)
    return TransportSettings(**values)


def send(settings: TransportSettings, der: bytes, *, full: bool = True) -> bytes:
    with CmcTransport(settings) as transport:
        return transport.send(der, full=full)


def test_a_full_request_arrives_as_binary_der_with_the_cmc_request_type(
    pki: TransportPki, responder: TlsResponder, response_der: bytes
) -> None:
    responder.reply_with(Reply(body=response_der))
    request = response_der[::-1]
    assert send(make_settings(pki, responder.url()), request) == response_der
    (seen,) = responder.seen
    assert seen.method == "POST"
    assert seen.path == "/ws/cmc?account=a&product=p"
    assert seen.headers["content-type"] == "application/pkcs7-mime; smime-type=CMC-request"
    assert "content-transfer-encoding" not in seen.headers
    assert seen.body == request
    assert seen.client_subject == "cmcgate access"


def test_a_simple_request_arrives_as_pkcs10(
    pki: TransportPki, responder: TlsResponder, csr_der: bytes, response_der: bytes
) -> None:
    responder.reply_with(Reply(body=response_der))
    send(make_settings(pki, responder.url()), csr_der, full=False)
    (seen,) = responder.seen
    assert seen.headers["content-type"] == "application/pkcs10"
    assert seen.body == csr_der


def test_a_base64_request_arrives_as_mime_base64_text(
    pki: TransportPki, responder: TlsResponder, csr_der: bytes, response_der: bytes
) -> None:
    responder.reply_with(Reply(body=response_der))
    send(make_settings(pki, responder.url(), encode_base64=True), csr_der, full=False)
    (seen,) = responder.seen
    assert seen.headers["content-transfer-encoding"] == "base64"
    assert seen.headers["content-type"] == "application/pkcs10"
    assert all(len(line) <= 76 for line in seen.body.split(b"\r\n"))
    assert base64.b64decode(b"".join(seen.body.split()), validate=True) == csr_der


def test_a_get_request_carries_the_base64_request_in_the_query(
    pki: TransportPki, responder: TlsResponder, csr_der: bytes, response_der: bytes
) -> None:
    responder.reply_with(Reply(body=response_der))
    settings = make_settings(pki, responder.url(), method="get")
    assert send(settings, csr_der, full=False) == response_der
    (seen,) = responder.seen
    assert seen.method == "GET" and seen.body == b""
    query = parse_qs(urlsplit(seen.path).query)
    assert query["account"] == ["a"] and query["product"] == ["p"]
    assert base64.b64decode(query["message"][0], validate=True) == csr_der


@pytest.mark.parametrize(
    ("encoding", "headers"),
    [
        ("binary", ()),
        ("base64", ()),
        ("base64", (("Content-Transfer-Encoding", "base64"),)),
        ("pem", ()),
    ],
)
def test_binary_base64_and_pem_responses_all_decode_to_der(
    pki: TransportPki,
    responder: TlsResponder,
    response_der: bytes,
    encoding: str,
    headers: tuple[tuple[str, str], ...],
) -> None:
    text = base64.encodebytes(response_der)
    body = {
        "binary": response_der,
        "base64": text,
        "pem": b"-----BEGIN PKCS7-----\n" + text + b"-----END PKCS7-----\n",
    }[encoding]
    responder.reply_with(Reply(body=body, headers=headers))
    assert send(make_settings(pki, responder.url()), b"\x30\x00") == response_der


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/PKCS7-MIME; Smime-Type=CMC-Response",
        "application/pkcs7-mime",
        'application/pkcs7-mime;smime-type="certs-only"',
        "APPLICATION/PKCS7-MIME ;  SMIME-TYPE = CERTS-ONLY ; name=resp.p7c",
        "application/x-pkcs7-mime; smime-type=CMC-response",
    ],
)
def test_response_content_types_are_compared_case_insensitively(
    pki: TransportPki, responder: TlsResponder, response_der: bytes, content_type: str
) -> None:
    responder.reply_with(Reply(content_type=content_type, body=response_der))
    assert send(make_settings(pki, responder.url()), b"\x30\x00") == response_der


@pytest.mark.parametrize(
    "content_type",
    ["text/html; charset=utf-8", None, "application/pkcs7-mime; smime-type=enveloped-data"],
)
def test_an_html_error_page_is_refused_naming_its_content_type(
    pki: TransportPki, responder: TlsResponder, content_type: str | None
) -> None:
    page = b"<html><body>Maintenance</body></html>"
    responder.reply_with(Reply(content_type=content_type, body=page))
    with pytest.raises(UnexpectedContentType) as caught:
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert not isinstance(caught.value, TemporaryFailure)
    assert caught.value.content_type == content_type
    assert (content_type or "without a Content-Type") in str(caught.value)
    assert "Maintenance" in str(caught.value)
    assert len(responder.seen) == 1


def test_a_pkcs7_answer_that_is_not_der_is_refused(
    pki: TransportPki, responder: TlsResponder
) -> None:
    responder.reply_with(Reply(body=b"certainly not DER!"))
    with pytest.raises(UndecodableResponse):
        send(make_settings(pki, responder.url()), b"\x30\x00")


def test_an_untrusted_server_certificate_is_refused_and_not_retried(
    pki: TransportPki, responder: TlsResponder
) -> None:
    settings = make_settings(pki, responder.url(), trust_anchors=(pki.other_ca.certificate,))
    with pytest.raises(ServerNotTrusted) as caught:
        send(settings, b"\x30\x00")
    assert not isinstance(caught.value, TemporaryFailure)
    assert "self-signed certificate in certificate chain" in str(caught.value)
    assert responder.connections == 1
    assert responder.seen == []


def test_the_environment_ca_bundle_is_never_trusted(
    pki: TransportPki, responder: TlsResponder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test CA that signed the server is offered through every environment knob; only the
    # configured anchors count, so the server must still be refused.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, pki.ca_file)
    settings = make_settings(pki, responder.url(), trust_anchors=(pki.other_ca.certificate,))
    with pytest.raises(ServerNotTrusted):
        send(settings, b"\x30\x00")


def test_a_server_reached_by_a_name_not_in_its_certificate_is_refused(
    pki: TransportPki, start_responder: Callable[..., TlsResponder], response_der: bytes
) -> None:
    responder = start_responder(localhost_only=True)
    responder.reply_with(Reply(body=response_der))
    assert send(make_settings(pki, responder.url(host="localhost")), b"\x30\x00") == response_der
    with pytest.raises(ServerNotTrusted) as caught:
        send(make_settings(pki, responder.url(host="127.0.0.1")), b"\x30\x00")
    assert "mismatch" in str(caught.value).lower()
    assert len(responder.seen) == 1


def test_without_a_client_certificate_the_server_refuses_the_handshake(
    pki: TransportPki, responder: TlsResponder
) -> None:
    settings = make_settings(pki, responder.url(), access_p12=None, retries=1)
    with pytest.raises(ClientCertificateRefused) as caught:
        send(settings, b"\x30\x00")
    assert not isinstance(caught.value, TemporaryFailure)
    assert responder.seen == []
    assert responder.wait_for_handshake_failures(1) == 1


def test_a_slow_ca_is_a_temporary_failure_and_not_retried(
    pki: TransportPki, responder: TlsResponder
) -> None:
    responder.reply_with(Reply(delay=3.0))
    settings = make_settings(pki, responder.url(), read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TemporaryFailure) as caught:
        send(settings, b"\x30\x00")
    assert time.monotonic() - started < 2.0
    assert isinstance(caught.value, TransportUnavailable)
    assert "within 0.3 s" in str(caught.value)
    assert len(responder.seen) == 1


def test_a_503_is_retried_and_the_next_answer_used(
    pki: TransportPki, responder: TlsResponder, response_der: bytes
) -> None:
    responder.reply_with(Reply(status=503, content_type="text/plain"), Reply(body=response_der))
    assert send(make_settings(pki, responder.url()), b"\x30\x00") == response_der
    assert len(responder.seen) == 2


def test_a_ca_answering_503_forever_is_a_temporary_failure_after_all_attempts(
    pki: TransportPki, responder: TlsResponder
) -> None:
    responder.reply_with(Reply(status=503, content_type="text/plain", body=b"busy"))
    with pytest.raises(TransportUnavailable) as caught:
        send(make_settings(pki, responder.url(), retries=3), b"\x30\x00")
    assert isinstance(caught.value, TemporaryFailure)
    assert caught.value.status == 503 and caught.value.attempts == 3
    assert len(responder.seen) == 3


def test_a_503_asking_for_a_long_pause_is_not_retried_now(
    pki: TransportPki, responder: TlsResponder
) -> None:
    responder.reply_with(Reply(status=503, headers=(("Retry-After", "3600"),)))
    with pytest.raises(TransportUnavailable) as caught:
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert caught.value.retry_after == 3600.0 and caught.value.attempts == 1
    assert len(responder.seen) == 1


def test_a_retry_after_of_other_digits_is_no_pause_and_no_crash(
    pki: TransportPki, responder: TlsResponder
) -> None:
    """``¹`` (Latin-1 superscript one) passes str.isdigit() but not int()/float()."""
    responder.reply_with(Reply(status=503, headers=(("Retry-After", "\u00b9"),)))
    with pytest.raises(TransportUnavailable) as caught:
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert caught.value.retry_after is None and caught.value.status == 503


def test_a_400_is_permanent_and_not_retried(pki: TransportPki, responder: TlsResponder) -> None:
    responder.reply_with(Reply(status=400, content_type="text/plain", body=b"bad request body"))
    with pytest.raises(HttpStatusRefused) as caught:
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert not isinstance(caught.value, TemporaryFailure)
    assert caught.value.status == 400 and "bad request body" in str(caught.value)
    assert len(responder.seen) == 1


def test_a_429_is_temporary_not_retried_and_keeps_retry_after(
    pki: TransportPki, responder: TlsResponder
) -> None:
    responder.reply_with(Reply(status=429, headers=(("Retry-After", "120"),)))
    with pytest.raises(TransportUnavailable) as caught:
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert caught.value.retry_after == 120.0 and caught.value.status == 429
    assert len(responder.seen) == 1


def test_a_redirect_is_not_followed(pki: TransportPki, responder: TlsResponder) -> None:
    responder.reply_with(Reply(status=302, headers=(("Location", "https://elsewhere/"),)))
    with pytest.raises(HttpStatusRefused, match="elsewhere"):
        send(make_settings(pki, responder.url()), b"\x30\x00")
    assert len(responder.seen) == 1


def test_a_closed_port_is_a_temporary_failure_after_all_attempts(pki: TransportPki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(pki, f"https://127.0.0.1:{port}/cmc", retries=2)
    with pytest.raises(TransportUnavailable) as caught:
        send(settings, b"\x30\x00")
    assert isinstance(caught.value, TemporaryFailure)
    assert caught.value.attempts == 2 and caught.value.status is None
    assert "refused" in str(caught.value).lower()


def test_plain_http_only_when_explicitly_allowed(
    pki: TransportPki, start_responder: Callable[..., TlsResponder], response_der: bytes
) -> None:
    responder = start_responder(tls=False)
    responder.reply_with(Reply(body=response_der))
    with pytest.raises(InvalidTransportSettings, match="plain http"):
        make_settings(pki, responder.url())
    settings = make_settings(pki, responder.url(), allow_insecure_http=True)
    assert send(settings, b"\x30\x00") == response_der


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "ftp://ra.example/cmc"},
        {"url": "https://ra.example/cmc#x"},
        {"url": "https://ra.example:99999/cmc"},
        {"trust_anchors": ()},
        {"method": "PUT"},
        {"retries": 0},
        {"read_timeout": 0},
    ],
)
def test_unusable_settings_are_refused_up_front(
    pki: TransportPki, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidTransportSettings):
        make_settings(pki, **{"url": "https://ra.example/cmc", **overrides})


def test_a_wrong_p12_password_is_a_credential_error(pki: TransportPki) -> None:
    with pytest.raises(AccessCredentialError, match="wrong password"):
        CmcTransport(make_settings(pki, "https://ra.example/cmc", access_p12_password=b"wrong"))


def test_no_unencrypted_private_key_is_left_on_disk(
    pki: TransportPki,
    responder: TlsResponder,
    response_der: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    responder.reply_with(Reply(body=response_der))
    assert send(make_settings(pki, responder.url()), b"\x30\x00") == response_der
    # The file fallback (platforms without memfd) writes an encrypted key and deletes it.
    credential = load_pkcs12(pki.client_p12, P12_PASSWORD)
    context = client_context((pki.ca.certificate,), None)
    load_client_chain(context, credential, scratch_dir=str(scratch))
    assert _unencrypted_keys(tmp_path) == []
    assert list(scratch.iterdir()) == []
    bundle = encrypted_pem_bundle(credential, b"pw")
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in bundle
    assert b"BEGIN PRIVATE KEY" not in bundle and b"BEGIN EC PRIVATE KEY" not in bundle


def _unencrypted_keys(root: Path) -> list[Path]:
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            data = (Path(directory) / name).read_bytes()
            if b"PRIVATE KEY-----" in data and b"ENCRYPTED" not in data:
                found.append(Path(directory) / name)
    return found


def test_der_sequences_are_recognised_by_their_exact_length() -> None:
    assert is_der_sequence(b"\x30\x00")
    assert is_der_sequence(b"\x30\x03\x02\x01\x05")
    assert is_der_sequence(b"\x30\x81\x01\x00")
    assert is_der_sequence(b"\x30\x80\x02\x01\x05\x00\x00")
    assert not is_der_sequence(b"\x30\x03\x02\x01")
    assert not is_der_sequence(b"\x31\x00")
    assert not is_der_sequence(b"0M==")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.sampled_from([None, "base64", "binary", "x-token"]))
def test_arbitrary_response_bodies_decode_or_raise_only_the_typed_error(
    body: bytes, encoding: str | None
) -> None:
    try:
        der = decode_response_body(body, encoding)
    except UndecodableResponse as exc:
        assert isinstance(exc, TransportRefused)
    else:
        assert is_der_sequence(der)
