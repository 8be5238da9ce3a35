"""A scriptable HTTPS responder on loopback, with client-certificate authentication.

Real TLS sockets: ``http.server`` behind an ``ssl`` server context that requires a client
certificate from the test CA.  Each request takes the next scripted :class:`Reply` (the last
one repeats); what arrived is recorded in :attr:`TlsResponder.seen`.  The TLS handshake runs
in the request thread, so a client that fails it does not stall the accept loop.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

CMC_RESPONSE = "application/pkcs7-mime; smime-type=CMC-response"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content_type: str | None = CMC_RESPONSE
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client_subject: str | None  # the client certificate's commonName, if one was presented


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        connection = self.request
        if isinstance(connection, ssl.SSLSocket):
            connection.settimeout(5)
            try:
                connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.server.responder._count("handshake_failures")
                _linger(connection)
                raise
        super().setup()

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        responder = self.server.responder
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        subject = None
        if isinstance(self.connection, ssl.SSLSocket):
            der = self.connection.getpeercert(binary_form=True)
            if der:
                names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
                    NameOID.COMMON_NAME
                )
                subject = str(names[0].value) if names else None
        seen = SeenRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            client_subject=subject,
        )
        reply = responder._record(seen)
        if reply.delay and responder._stopping.wait(reply.delay):
            return
        self.send_response(reply.status)
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _linger(connection: ssl.SSLSocket) -> None:
    """Close like nginx's lingering close: half-close, then drain what the client still sends.

    Closing a socket with unread data (the client's request, sent right after its TLS 1.3
    handshake) makes the kernel send a RST, and the RST can destroy the TLS alert before the
    client reads it; the client would then see a bare EOF instead of "certificate required".
    """
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(1)
        while connection.recv(65536):
            pass
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    responder: TlsResponder
    ssl_context: ssl.SSLContext | None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        self.responder._count("connections")
        if self.ssl_context is None:
            return sock, address
        wrapped = self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # failed handshakes, clients that hung up: expected in these tests


class TlsResponder:
    """Start with :meth:`start`, stop with :meth:`stop` (idempotent)."""

    def __init__(
        self,
        *,
        cert_file: str | None,
        key_file: str | None,
        client_ca_file: str | None,
        tls: bool = True,
    ) -> None:
        self.seen: list[SeenRequest] = []
        self.connections = 0
        self.handshake_failures = 0
        self._replies: list[Reply] = [Reply()]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        context: ssl.SSLContext | None = None
        if tls:
            assert cert_file and key_file
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert_file, key_file)
            if client_ca_file is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(client_ca_file)
        self._server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=True)
        self._server.responder = self
        self._server.ssl_context = context
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, host: str = "127.0.0.1", path: str = "/ws/cmc?account=a&product=p") -> str:
        scheme = "https" if self._server.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def wait_for_handshake_failures(self, count: int, timeout: float = 2.0) -> int:
        """The server thread counts a failed handshake just after the client sees it: wait."""
        deadline = time.monotonic() + timeout
        while self.handshake_failures < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.handshake_failures

    def reply_with(self, *replies: Reply) -> None:
        with self._lock:
            self._replies = list(replies)

    def start(self) -> TlsResponder:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, seen: SeenRequest) -> Reply:
        with self._lock:
            self.seen.append(seen)
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
