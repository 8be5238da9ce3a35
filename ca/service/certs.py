"""The CA service's own certificates: infrastructure CA, TLS server, CMC signer, access certs.

All live in the CA directory and are created on first use (``cmcgate ca serve`` or
``cmcgate ca access-cert``)::

    infra-ca.pem          infrastructure CA (issued by the root; key "cmcgate-infra" in the
                          key backend): issues the TLS server and the access certificates
    certs/infra-ca.cer    DER copy at the AIA URL of those certificates
    crl/infra.crl         its CRL (at their CRLDP URL)
    cmc-signer.pem        the certificate of the key "cmcgate-cmc-signer" (key backend) that
                          signs every Full PKI Response; EKU id-kp-cmcCA, chains to the root
    tls/server.pem        TLS server certificate + infrastructure CA (for ``load_cert_chain``)
    tls/server.key        its key, mode 0600 (a TLS key must be a file for the ssl module)
    access/<sha256>.pem   registry of access certificates issued by ``ca access-cert``

Who is an account (the decision): a client certificate speaks for account A when it chains to
the infrastructure CA with EKU clientAuth, its CN is A, and it is either in the access
registry (written by ``cmcgate ca access-cert``) or named by A's ``ra_certificates`` in
ca.yaml (SHA-256 or subject).  Deleting ``access/<sha256>.pem`` withdraws an access cert.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca import crl as crl_module
from ca.authority import CertificateAuthority
from ca.hierarchy import add_revocation_pointers, build_infrastructure_ca, validity_window
from ca.hierarchy_services import build_access_cert, build_tls_server_cert
from ca.keys import KeyType
from ca.profiles.builder import authority_key_id, random_serial, signature_hash_for
from ca.store.audit import AuditEvent, append_audit
from cmc.errors import UntrustedSigner
from cmc.messages.chain import verify_chain
from cmc.messages.signing import Signer
from config.errors import CmcgateError

INFRA_KEY_LABEL = "cmcgate-infra"
SIGNER_KEY_LABEL = "cmcgate-cmc-signer"
ID_KP_CMC_CA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.27")  # RFC 6402 §2.10
_RENEW_BEFORE = timedelta(days=30)


class ServiceCertError(CmcgateError):
    """A service certificate could not be made or an access certificate not issued."""


@dataclass(frozen=True)
class ServiceMaterial:
    infra_cert: x509.Certificate
    tls_cert_file: Path
    tls_key_file: Path
    signer: Signer


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(_der(cert)).hexdigest()


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _fresh(cert: x509.Certificate | None, now: datetime) -> bool:
    return cert is not None and cert.not_valid_after_utc - now > _RENEW_BEFORE


def _urls(ca: CertificateAuthority) -> tuple[str, str]:
    base = ca.settings.ca.base_url.rstrip("/")
    return f"{base}/crl/infra.crl", f"{base}/certs/infra-ca.cer"


def _sibling_name(root: x509.Certificate, common_name: str) -> x509.Name:
    """The root's subject with the CN replaced."""
    attrs = [a for a in root.subject if a.oid != NameOID.COMMON_NAME]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_infra_ca(ca: CertificateAuthority, *, now: datetime | None = None) -> x509.Certificate:
    """The infrastructure CA, created (key in the backend, cert by the root) on first use."""
    now = now or datetime.now(UTC)
    directory = ca.settings.ca.directory
    path = directory / "infra-ca.pem"
    cert = _read_cert(path)
    key = ca.keys.load_or_generate(INFRA_KEY_LABEL, KeyType.EC_P384)
    if cert is None or cert.public_key() != key.public_key() or not _fresh(cert, now):
        base = ca.settings.ca.base_url.rstrip("/")
        root_key = ca.keys.load(ca.settings.ca.root.key_label)
        validity = min(timedelta(days=5 * 365), ca.root_cert.not_valid_after_utc - now)
        cert = build_infrastructure_ca(
            key.public_key(),  # type: ignore[arg-type]
            _sibling_name(ca.root_cert, "cmcgate Infrastructure CA"),
            ca.root_cert,
            root_key,  # type: ignore[arg-type]
            now=now,
            crl_url=f"{base}/crl/root.crl",
            ca_issuers_url=f"{base}/certs/root-ca.cer",
            validity=validity,
        )
        crl_module.write_atomically(path, _pem(cert))
        crl_module.write_atomically(directory / "certs" / "infra-ca.cer", _der(cert))
    write_infra_crl(ca, cert, now=now)
    return cert


def write_infra_crl(ca: CertificateAuthority, infra: x509.Certificate, *, now: datetime) -> None:
    key = ca.keys.load(INFRA_KEY_LABEL)
    crl = crl_module.build_crl(infra, key, [], now=now, next_update=timedelta(days=7))  # type: ignore[arg-type]
    path = ca.settings.ca.directory / "crl" / "infra.crl"
    crl_module.write_atomically(path, crl.public_bytes(serialization.Encoding.DER))


def _signer_cert(
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    infra: x509.Certificate,
    infra_key: object,
    now: datetime,
    crl_url: str,
    aia_url: str,
) -> x509.Certificate:
    start, end = validity_window(now, timedelta(days=397), infra)
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    builder = (
        x509.CertificateBuilder()
        .serial_number(random_serial())
        .issuer_name(infra.subject)
        .subject_name(subject)
        .public_key(public_key)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ID_KP_CMC_CA]), critical=False)
        .add_extension(authority_key_id(infra), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    builder = add_revocation_pointers(builder, crl_url, aia_url)
    return builder.sign(infra_key, signature_hash_for(infra.public_key()))  # type: ignore[arg-type]


def ensure_cmc_signer(
    ca: CertificateAuthority, infra: x509.Certificate, *, now: datetime | None = None
) -> Signer:
    """The key (in the backend) and certificate that sign Full PKI Responses."""
    now = now or datetime.now(UTC)
    path = ca.settings.ca.directory / "cmc-signer.pem"
    key = ca.keys.load_or_generate(SIGNER_KEY_LABEL, KeyType.EC_P256)
    cert = _read_cert(path)
    if (
        cert is None
        or cert.public_key() != key.public_key()
        or cert.issuer != infra.subject
        or not _fresh(cert, now)
    ):
        crl_url, aia_url = _urls(ca)
        subject = _sibling_name(ca.root_cert, "cmcgate CMC Signer")
        infra_key = ca.keys.load(INFRA_KEY_LABEL)
        cert = _signer_cert(key.public_key(), subject, infra, infra_key, now, crl_url, aia_url)  # type: ignore[arg-type]
        crl_module.write_atomically(path, _pem(cert))
    return Signer(key, cert, (infra, ca.root_cert))  # type: ignore[arg-type]


def _covers(cert: x509.Certificate, hosts: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v).lower() for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return all(h.lower() in have for h in hosts)


def _split_hosts(hosts: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for host in dict.fromkeys(h.strip("[]") for h in hosts if h):
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.append(host)
    return dns, ips


def ensure_tls_server_cert(
    ca: CertificateAuthority,
    infra: x509.Certificate,
    hosts: list[str],
    *,
    now: datetime | None = None,
) -> tuple[Path, Path]:
    """tls/server.pem (cert + infra CA) and tls/server.key for ``hosts`` (names and IPs)."""
    now = now or datetime.now(UTC)
    tls_dir = ca.settings.ca.directory / "tls"
    cert_file, key_file = tls_dir / "server.pem", tls_dir / "server.key"
    wildcard = {"", "::", "0.0.0.0"}  # noqa: S104 - names to leave out, not to bind
    wanted = [h for h in dict.fromkeys(["localhost", "127.0.0.1", *hosts]) if h not in wildcard]
    dns, ips = _split_hosts(wanted)
    current = _read_cert(cert_file)
    if (
        current is not None
        and key_file.exists()
        and current.issuer == infra.subject
        and _fresh(current, now)
        and _covers(current, dns + ips)
    ):
        return cert_file, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    crl_url, aia_url = _urls(ca)
    cert = build_tls_server_cert(
        key.public_key(), infra, ca.keys.load(INFRA_KEY_LABEL),  # type: ignore[arg-type]
        dns_names=dns, ip_addresses=ips, now=now, crl_url=crl_url, ca_issuers_url=aia_url,
    )  # fmt: skip
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    os.replace(tmp, key_file)
    crl_module.write_atomically(cert_file, _pem(cert) + _pem(infra))
    return cert_file, key_file


def ensure_service_material(
    ca: CertificateAuthority, hosts: list[str], *, now: datetime | None = None
) -> ServiceMaterial:
    infra = ensure_infra_ca(ca, now=now)
    cert_file, key_file = ensure_tls_server_cert(ca, infra, hosts, now=now)
    return ServiceMaterial(infra, cert_file, key_file, ensure_cmc_signer(ca, infra, now=now))


# --- access certificates ------------------------------------------------------------------


@dataclass(frozen=True)
class AccessCertificate:
    certificate: x509.Certificate
    p12: bytes

    @property
    def sha256(self) -> str:
        return fingerprint(self.certificate)


def registry_dir(ca_dir: Path) -> Path:
    return ca_dir / "access"


def issue_access_certificate(
    ca: CertificateAuthority,
    account_id: str,
    password: bytes,
    *,
    key_type: KeyType = KeyType.EC_P256,
    operator: str = "cli",
    now: datetime | None = None,
) -> AccessCertificate:
    """An access certificate for ``account_id`` as PKCS#12, recorded in the registry."""
    account = ca.settings.account(account_id)
    if account is None:
        known = ", ".join(a.id for a in ca.settings.accounts) or "none"
        raise ServiceCertError(f"no account {account_id!r} in ca.yaml (known: {known})")
    if len(password) < 8:
        raise ServiceCertError("the PKCS#12 password must have at least 8 characters")
    now = now or datetime.now(UTC)
    infra = ensure_infra_ca(ca, now=now)
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type.is_rsa:
        key = rsa.generate_private_key(65537, key_type.rsa_bits)
    else:
        key = ec.generate_private_key(key_type.curve)
    crl_url, aia_url = _urls(ca)
    cert = build_access_cert(
        key.public_key(), infra, ca.keys.load(INFRA_KEY_LABEL),  # type: ignore[arg-type]
        account_id=account_id, organization=account.organisation.name,
        country=account.organisation.country, now=now, crl_url=crl_url, ca_issuers_url=aia_url,
    )  # fmt: skip
    p12 = pkcs12.serialize_key_and_certificates(
        account_id.encode(),
        key,
        cert,
        [infra, ca.root_cert],
        serialization.BestAvailableEncryption(password),
    )
    issued = AccessCertificate(cert, p12)
    crl_module.write_atomically(
        registry_dir(ca.settings.ca.directory) / f"{issued.sha256}.pem", _pem(cert)
    )
    details = {"kind": "access-certificate", "serial": f"{cert.serial_number:x}"}
    append_audit(
        ca.store, AuditEvent.ISSUE, operator, account_id, {**details, "sha256": issued.sha256}
    )
    return issued


def access_account(
    cert: x509.Certificate,
    ca: CertificateAuthority,
    infra: x509.Certificate,
    *,
    now: datetime | None = None,
) -> str | None:
    """The account ``cert`` speaks for (see the module docstring), or None."""
    try:
        verify_chain(cert, [], [infra], at=now, required_eku=ExtendedKeyUsageOID.CLIENT_AUTH)
    except UntrustedSigner:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    account = ca.settings.account(str(names[0].value))
    if account is None:
        return None
    sha = fingerprint(cert)
    registered = _read_cert(registry_dir(ca.settings.ca.directory) / f"{sha}.pem")
    if registered is not None and _der(registered) == _der(cert):
        return account.id
    if account.authorises(sha256=sha, subject=cert.subject.rfc4514_string()):
        return account.id
    return None
