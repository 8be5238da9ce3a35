"""A throw-away PKI for the transport tests: CA, server and client certificates, an access P12.

EC P-256 keys keep minting fast.  Server keys are written (unencrypted, test-only) into the
given directory because ``ssl`` servers load them from files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certbuild import key_usage

P12_PASSWORD = b"access-secret"


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ServerFiles:
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class TransportPki:
    ca: Issued
    other_ca: Issued  # trusted by nobody here: signs nothing the server uses
    client: Issued
    client_p12: bytes
    server: ServerFiles  # SAN: DNS localhost, IP 127.0.0.1
    server_localhost_only: ServerFiles  # SAN: DNS localhost only
    ca_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmcgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue(
    subject: str,
    issuer: Issued | None,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.certificate.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if ca:
        builder = builder.add_extension(key_usage(ca=True), critical=True)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def _write_server(directory: Path, name: str, issued: Issued, ca: Issued) -> ServerFiles:
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(issued.pem() + ca.pem())
    key_file.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ServerFiles(str(cert_file), str(key_file))


def mint_transport_pki(directory: Path) -> TransportPki:
    ca = _issue("cmcgate transport test CA", None, ca=True)
    other_ca = _issue("some other CA", None, ca=True)
    server_auth = [ExtendedKeyUsageOID.SERVER_AUTH]
    server = _issue(
        "ra.test",
        ca,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        eku=server_auth,
    )
    localhost_only = _issue("localhost", ca, san=[x509.DNSName("localhost")], eku=server_auth)
    client = _issue("cmcgate access", ca, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    p12 = pkcs12.serialize_key_and_certificates(
        b"access",
        client.key,
        client.certificate,
        [ca.certificate],
        serialization.BestAvailableEncryption(P12_PASSWORD),
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.pem())
    return TransportPki(
        ca=ca,
        other_ca=other_ca,
        client=client,
        client_p12=p12,
        server=_write_server(directory, "server", server, ca),
        server_localhost_only=_write_server(directory, "localhost-only", localhost_only, ca),
        ca_file=str(ca_file),
    )
