"""Test PKI for the S/MIME tests: a CA and S/MIME user certificates, plus PEM files for openssl.

Certificates carry what RFC 8550 and ``openssl cms -verify`` (purpose smimesign) expect:
emailProtection EKU, an rfc822Name SAN, digitalSignature (+ keyEncipherment for RSA).
Keys are cached per (CA, email, kind) so a test run mints each one once.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certbuild import key_usage, self_signed_ca

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@functools.cache
def _rsa_key(label: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _ec_key(label: str, curve: str = "p256") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1() if curve == "p384" else ec.SECP256R1())


def new_key(kind: str, label: str) -> PrivateKey:
    """``rsa``, ``ec`` (P-256), ``ec-p384`` or ``ed25519`` (a key nobody can encrypt to)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return _rsa_key(label) if kind == "rsa" else _ec_key(label, kind[3:])


@dataclass(frozen=True)
class Identity:
    email: str
    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def rsa_key(self) -> rsa.RSAPrivateKey:
        """The key as an RSA key (for decryption); fails for EC identities."""
        assert isinstance(self.key, rsa.RSAPrivateKey), f"{self.email} has no RSA key"
        return self.key

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<local>.pem`` (certificate) and ``<local>.key`` (PKCS#8); return both."""
        stem = self.email.split("@")[0] + "-" + type(self.key).__name__[:2].lower()
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            stem += str(self.key.curve.key_size)
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


@dataclass(frozen=True)
class CA:
    name: str
    key: PrivateKey
    cert: x509.Certificate
    issued: dict[str, Identity] = field(default_factory=dict, compare=False)

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.name.replace(' ', '_')}.pem"
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(
        self,
        email: str,
        *,
        kind: str = "rsa",
        eku: bool = True,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        subject_email: bool = False,
    ) -> Identity:
        """An end-entity S/MIME certificate for ``email`` (cached per arguments)."""
        cache_key = f"{email}|{kind}|{eku}|{not_before}|{not_after}|{subject_email}"
        if cache_key in self.issued:
            return self.issued[cache_key]
        key = new_key(kind, f"{self.name}|{cache_key}")
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, email.split("@")[0])]
        if subject_email:
            attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
        usage_rsa = kind == "rsa"
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - dt.timedelta(days=1))
            .not_valid_after(not_after or NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                key_usage(
                    digital_signature=True,
                    key_encipherment=usage_rsa,
                    key_agreement=kind.startswith("ec"),
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if not subject_email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
            )
        usages = [ExtendedKeyUsageOID.EMAIL_PROTECTION if eku else ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        identity = Identity(email, key, cert, (self.cert,))
        self.issued[cache_key] = identity
        return identity


@functools.cache
def make_ca(name: str = "Test Root CA", kind: str = "ec") -> CA:
    key = new_key(kind, f"ca|{name}")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmcgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    valid = (NOW - dt.timedelta(days=2), NOW + dt.timedelta(days=3650))
    cert = self_signed_ca(key, subject, valid, key_usage(ca=True))
    return CA(name, key, cert)


def openssl(*args: str | Path, data: bytes | None = None, ok: bool = True) -> bytes:
    """Run the openssl CLI; return stdout. With ``ok`` assert it succeeded (stderr shown)."""
    import subprocess

    proc = subprocess.run(
        ["openssl", *map(str, args)], input=data, capture_output=True, check=False, timeout=60
    )
    if ok:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    else:
        assert proc.returncode != 0, "openssl unexpectedly succeeded"
    return proc.stdout


def tls_server_files(
    directory: Path, *, ca: CA | None = None, stem: str = "smtp"
) -> tuple[Path, Path]:
    """A TLS server certificate for 127.0.0.1 and localhost (issued by ``ca``, self-signed
    without one) and its key, written as ``<stem>.pem`` and ``<stem>.key``."""
    import ipaddress

    key = new_key("ec", f"tls|{stem}|{ca.name if ca else 'self'}")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    issuer_name, issuer_key = (ca.cert.subject, ca.key) if ca else (subject, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
