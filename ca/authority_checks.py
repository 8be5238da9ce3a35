"""What the CA decides before it touches an order: linter policy, key type, CSR addresses.

Split out of :mod:`ca.authority` (which re-exports these names).
"""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import urlsplit

from cryptography import x509

from ca.keys import KeyType
from ca.profiles.lint import CertificateLinter

_linters: dict[frozenset[str], CertificateLinter] = {}
_linters_lock = threading.Lock()


def shared_linter(ignored: frozenset[str] = frozenset()) -> CertificateLinter:
    """pkilint's validators take ~0.7 s to build: one linter per process and policy."""
    with _linters_lock:
        if ignored not in _linters:
            _linters[ignored] = CertificateLinter(ignored_codes=ignored)
        return _linters[ignored]


def uses_internal_urls(base_url: str) -> bool:
    """True for a loopback/private CRL and AIA host, which only a development CA uses."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith((".localhost", ".test", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def public_key_type(public_key: object) -> KeyType:
    """The KeyType of a public key (RSA by size, EC by curve); ValueError otherwise."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.from_rsa_bits(public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeyType.from_curve_name(public_key.curve.name)
    raise ValueError(f"{type(public_key).__name__} keys are not supported")


def csr_emails(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    """rfc822Names of the CSR's SAN, else its emailAddress, else an email-like CN."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    if not emails:
        for oid in (x509.NameOID.EMAIL_ADDRESS, x509.NameOID.COMMON_NAME):
            values = [str(a.value) for a in csr.subject.get_attributes_for_oid(oid)]
            emails = [v for v in values if "@" in v]
            if emails:
                break
    return tuple(dict.fromkeys(e.strip().lower() for e in emails))
