"""Setting up the CA: root, S/MIME issuing CA, infrastructure CA and the CA's own certificates."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.hierarchy import build_infrastructure_ca, build_issuing_ca, build_root_ca, ca_name
from ca.hierarchy_services import build_access_cert, build_tls_server_cert
from ca.profiles.errors import HierarchyError
from ca.profiles.lint import CertificateLinter, Severity

NOW = datetime.now(UTC) - timedelta(minutes=5)
ROOT_CRL = "http://ca.example.ch/crl/root.crl"
ROOT_CER = "http://ca.example.ch/certs/root.cer"
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


class NonExportableRsaKey(rsa.RSAPrivateKey):
    """Stands in for an HSM handle: signs through the interface, never yields private bytes."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self._inner = inner
        self.signatures = 0

    def sign(self, data: Any, padding: Any, algorithm: Any) -> bytes:
        self.signatures += 1
        return self._inner.sign(data, padding, algorithm)

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        return self._inner.decrypt(ciphertext, padding)

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._inner.public_key()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise AssertionError("private numbers requested")

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("private bytes requested")

    def __copy__(self) -> NonExportableRsaKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> NonExportableRsaKey:
        return self


@pytest.fixture(scope="module")
def root_key() -> NonExportableRsaKey:
    return NonExportableRsaKey(rsa.generate_private_key(65537, 3072))


@pytest.fixture(scope="module")
def root(root_key: NonExportableRsaKey) -> x509.Certificate:
    return build_root_ca(root_key, ca_name("cmcgate Root CA", "Example AG", "CH"), now=NOW)


@pytest.fixture(scope="module")
def smime_ca(root: x509.Certificate, root_key: NonExportableRsaKey) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP384R1())
    return build_issuing_ca(
        key.public_key(),
        ca_name("cmcgate S/MIME CA", "Example AG", "CH"),
        root,
        root_key,
        now=NOW,
        crl_url=ROOT_CRL,
        ca_issuers_url=ROOT_CER,
        policy_oid="1.3.6.1.4.1.99999.1",
    )


@pytest.fixture(scope="module")
def infra_ca(
    root: x509.Certificate, root_key: NonExportableRsaKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_infrastructure_ca(
        key.public_key(),
        ca_name("cmcgate Infrastructure CA", "Example AG", "CH"),
        root,
        root_key,
        now=NOW,
        crl_url=ROOT_CRL,
        ca_issuers_url=ROOT_CER,
    )
    return cert, key


@pytest.fixture(scope="module")
def linter() -> CertificateLinter:
    return CertificateLinter()


def _write(tmp_path: Path, name: str, *certs: x509.Certificate) -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(c.public_bytes(PEM) for c in certs))
    return str(path)


def _verify(tmp_path: Path, purpose: str, root: x509.Certificate, *chain: x509.Certificate) -> bool:
    """``openssl verify -purpose ...`` of the last certificate; True when it verifies."""
    *intermediates, leaf = chain
    args = ["openssl", "verify", "-purpose", purpose, "-CAfile", _write(tmp_path, "root.pem", root)]
    if intermediates:
        args += ["-untrusted", _write(tmp_path, "untrusted.pem", *intermediates)]
    args.append(_write(tmp_path, "leaf.pem", leaf))
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.strip().endswith(": OK")


def test_root_ca_follows_br_7_1_2_1_and_is_self_signed_through_the_key_interface(
    root: x509.Certificate, root_key: NonExportableRsaKey, linter: CertificateLinter
) -> None:
    ext = root.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    for absent in (x509.ExtendedKeyUsage, x509.CertificatePolicies):
        with pytest.raises(x509.ExtensionNotFound):
            ext.get_extension_for_class(absent)
    root.verify_directly_issued_by(root)
    assert root_key.signatures >= 1  # signed via sign(); private_bytes() would have raised
    assert root.signature_hash_algorithm is not None
    assert root.signature_hash_algorithm.name == "sha256"
    assert all(f.severity < Severity.WARNING for f in linter.check_ca(root.public_bytes(DER)))


def test_smime_issuing_ca_follows_br_7_1_2_2_and_chains_to_the_root(
    root: x509.Certificate, smime_ca: x509.Certificate, linter: CertificateLinter, tmp_path: Path
) -> None:
    ext = smime_ca.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ext.get_extension_for_class(x509.KeyUsage).critical
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION] and not eku.critical
    policies = {
        p.policy_identifier.dotted_string
        for p in ext.get_extension_for_class(x509.CertificatePolicies).value
    }
    assert policies == {
        "2.23.140.1.5.1.3",
        "2.23.140.1.5.2.3",
        "2.23.140.1.5.3.3",
        "1.3.6.1.4.1.99999.1",
    }
    crl = ext.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name
    assert crl is not None and crl[0].value == ROOT_CRL
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [a.access_location.value for a in aia] == [ROOT_CER]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest and aki.authority_cert_serial_number is None
    smime_ca.verify_directly_issued_by(root)
    assert _verify(tmp_path, "any", root, smime_ca)  # leaves: see test_profiles
    assert all(f.severity < Severity.WARNING for f in linter.check_ca(smime_ca.public_bytes(DER)))


def test_ca_subjects_need_cn_o_and_c(root: x509.Certificate, root_key: NonExportableRsaKey) -> None:
    no_org = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Root")])
    with pytest.raises(HierarchyError, match="lacks O"):
        build_root_ca(root_key, no_org, now=NOW)


def test_issuing_ca_may_not_outlive_the_root_nor_be_signed_by_another_key(
    root: x509.Certificate, root_key: NonExportableRsaKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    name = ca_name("Sub", "Example AG", "CH")
    with pytest.raises(HierarchyError, match="outlive its issuer"):
        build_issuing_ca(
            key,
            name,
            root,
            root_key,
            now=NOW,
            validity=timedelta(days=30 * 365),
            crl_url=ROOT_CRL,
            ca_issuers_url=ROOT_CER,
        )
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(HierarchyError, match="signing key is not the key"):
        build_issuing_ca(key, name, root, other, now=NOW, crl_url=ROOT_CRL, ca_issuers_url=ROOT_CER)


def test_ca_https_endpoint_gets_a_tls_server_cert_from_the_infrastructure_ca(
    root: x509.Certificate, infra_ca: tuple, linter: CertificateLinter, tmp_path: Path
) -> None:
    ca_cert, ca_key = infra_ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_tls_server_cert(
        key.public_key(),
        ca_cert,
        ca_key,
        dns_names=["CA.example.ch"],
        ip_addresses=["192.0.2.10"],
        now=NOW,
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ca.example.ch"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _verify(tmp_path, "sslserver", root, ca_cert, cert)
    pkix = linter.lint_pkix(cert.public_bytes(DER))
    assert all(f.severity < Severity.WARNING for f in pkix), pkix


def test_tls_server_cert_under_an_smime_issuing_ca_would_not_verify(tmp_path: Path) -> None:
    """Why the infrastructure CA exists: EKU chaining rejects serverAuth under emailProtection."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    own_root = build_root_ca(root_key, ca_name("R", "Example AG", "CH"), now=NOW)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    smime = build_issuing_ca(
        ca_key.public_key(),
        ca_name("S", "Example AG", "CH"),
        own_root,
        root_key,
        now=NOW,
        crl_url=ROOT_CRL,
        ca_issuers_url=ROOT_CER,
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = build_tls_server_cert(
        leaf_key.public_key(), smime, ca_key, dns_names=["ca.example.ch"], now=NOW
    )
    assert _verify(tmp_path, "any", own_root, smime, leaf)  # the chain itself is fine
    assert not _verify(tmp_path, "sslserver", own_root, smime, leaf)


def test_account_access_certificate_is_client_auth_with_account_and_organisation(
    root: x509.Certificate, infra_ca: tuple, tmp_path: Path
) -> None:
    ca_cert, ca_key = infra_ca
    key = rsa.generate_private_key(65537, 2048)
    cert = build_access_cert(
        key.public_key(),
        ca_cert,
        ca_key,
        account_id="totemoag.ra",
        organization="Example AG",
        country="CH",
        now=NOW,
    )
    assert cert.subject.rfc4514_string() == "CN=totemoag.ra,O=Example AG,C=CH"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment
    assert _verify(tmp_path, "sslclient", root, ca_cert, cert)
    assert not _verify(tmp_path, "sslserver", root, ca_cert, cert)
    # the access key really signs (TLS CertificateVerify) and the cert carries its public key
    sig = key.sign(b"hello", padding.PKCS1v15(), hashes.SHA256())
    cert_key = cert.public_key()
    assert isinstance(cert_key, rsa.RSAPublicKey)
    cert_key.verify(sig, b"hello", padding.PKCS1v15(), hashes.SHA256())


def test_service_certificates_refuse_bad_names_and_long_lifetimes(infra_ca: tuple) -> None:
    ca_cert, ca_key = infra_ca
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(HierarchyError, match="DNS name"):
        build_tls_server_cert(pub, ca_cert, ca_key, dns_names=["bad name"], now=NOW)
    with pytest.raises(HierarchyError, match="at least one"):
        build_tls_server_cert(pub, ca_cert, ca_key, now=NOW)
    with pytest.raises(HierarchyError, match="exceeds 398"):
        build_tls_server_cert(
            pub, ca_cert, ca_key, dns_names=["a.example.ch"], now=NOW, validity=timedelta(days=800)
        )
    with pytest.raises(HierarchyError, match="1024"):
        build_access_cert(
            rsa.generate_private_key(65537, 1024).public_key(),
            ca_cert,
            ca_key,
            account_id="a",
            organization="O",
            now=NOW,
        )
