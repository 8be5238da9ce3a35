"""``cmcgate ca serve`` as operators run it (a child process): it logs every request with the
account, CMC status and failInfo, and a client with a valid access certificate that sends
its headers and then trickles the body is cut off instead of holding a connection for ever.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.service.cmc import MAX_BODY
from cmc.client_config import client_from_config
from cmc.errors import CMCFailure
from config.properties import load
from tests.ca.serve_process import Serve, served_ca
from tests.ca.test_cmc_server import ACCOUNT, PASSWORD, SILVER, _csr

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Path]]:
    tmp = tmp_path_factory.mktemp("serve")
    serve, props = served_ca(tmp)
    serve.start("--body-timeout", "1")
    try:
        yield serve, props
    finally:
        serve.stop()


def _tls(serve: Serve) -> ssl.SSLSocket:
    """A TLS connection with the account's access certificate (as the gateway has it)."""
    tmp = serve.ca_dir.parent
    key, cert, _ = pkcs12.load_key_and_certificates((tmp / f"{ACCOUNT}.p12").read_bytes(), PASSWORD)
    assert key is not None and cert is not None
    (tmp / "client.pem").write_bytes(
        cert.public_bytes(PEM)
        + key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(cafile=str(serve.ca_dir / "root-ca.pem"))
    context.load_cert_chain(str(tmp / "client.pem"))
    raw = socket.create_connection(("127.0.0.1", serve.https_port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def _headers(length: int) -> bytes:
    return (
        f"POST /ws/cmc?account={ACCOUNT}&product={SILVER} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/pkcs7-mime\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_trickled_request_body_is_cut_off_with_408(served: tuple[Serve, Path]) -> None:
    serve, _ = served
    length = 200
    with _tls(serve) as tls:
        tls.sendall(_headers(length))
        sent, answer = 0, b""
        while sent < length:  # one byte every 0.1 s: the whole body would take 20 s
            readable, _, _ = select.select([tls], [], [], 0.1)
            if readable:
                answer = tls.recv(4096)
                break
            tls.sendall(b"\x30")
            sent += 1
        rest = b""
        try:
            while chunk := tls.recv(4096):
                rest += chunk
        except (ssl.SSLError, ConnectionError):
            pass
    assert answer.startswith(b"HTTP/1.1 408"), (sent, answer)
    assert sent < length  # the server did not wait for the rest of the body
    assert b"Traceback" not in answer + rest
    # the connection was closed by the server: recv returned EOF above
    assert "body not received within 1 s" in serve.log.read_text()


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: tuple[Serve, Path]) -> None:
    serve, _ = served
    with _tls(serve) as tls:
        tls.sendall(_headers(MAX_BODY + 1_000_000))
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer


def test_every_request_is_logged_with_account_cmc_status_and_fail_info(
    served: tuple[Serve, Path],
) -> None:
    serve, props = served
    pki = load(props).pki
    assert pki is not None
    csr, key = _csr("logged@example.org")
    with client_from_config(pki) as client:
        issued = client.enroll(csr, key).certificate
    outside, key = _csr("mallory@evil.example")
    with client_from_config(pki) as client, pytest.raises(CMCFailure):
        client.enroll(outside, key)
    log = serve.log.read_text()
    serial = format(issued.serial_number, "x")
    assert re.search(
        rf"POST /ws/cmc -> 200 account={re.escape(ACCOUNT)} cmc=success serial={serial}$",
        log,
        re.MULTILINE,
    ), log[-3000:]
    refused = re.search(
        rf"POST /ws/cmc -> 200 account={re.escape(ACCOUNT)} cmc=failed failInfo=badIdentity "
        r"detail=[\"'].*evil\.example.*[\"']$",
        log,
        re.MULTILINE,
    )
    assert refused, log[-3000:]
