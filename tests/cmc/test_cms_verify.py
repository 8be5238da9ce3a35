"""verify_signed_data / verify_chain against messages OpenSSL makes (BER streaming, detached,
PSS, ECDSA) and against certificate paths that must fail, each with its own error."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from cmc.errors import (
    CertificateNotValidAt,
    ChainSignatureInvalid,
    ExtendedKeyUsageMissing,
    IssuerNotAuthorised,
    MalformedMessage,
    SignatureInvalid,
    SignerNotFound,
    TamperedContent,
    UnsupportedAlgorithm,
    UntrustedSigner,
)
from cmc.messages.api import Signer, build_simple_response
from cmc.messages.cms import verify_chain, verify_signed_data
from cmc.messages.signing import sign_content
from tests.cmc.conftest import NOW, PkiFixture, make_cert

CONTENT = b"Content-Type: text/plain\r\n\r\nhello from a mail client\r\n"


def _pem(tmp_path: Path, name: str, cert: x509.Certificate, key: object) -> tuple[Path, Path]:
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def openssl_sign(tmp_path: Path, cert: x509.Certificate, key: object, *args: str) -> bytes:
    cert_path, key_path = _pem(tmp_path, "signer", cert, key)
    (tmp_path / "content").write_bytes(CONTENT)
    out = tmp_path / "signed.der"
    subprocess.run(
        [
            "openssl",
            "cms",
            "-sign",
            "-binary",
            "-in",
            str(tmp_path / "content"),
            "-signer",
            str(cert_path),
            "-inkey",
            str(key_path),
            "-outform",
            "DER",
            "-out",
            str(out),
            *args,
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def test_streamed_ber_smime_signature_verifies(pki: PkiFixture, tmp_path: Path) -> None:
    der = openssl_sign(tmp_path, pki.ca, pki.ca_key, "-nodetach", "-stream")
    assert der[1] == 0x80  # indefinite length, as streaming mail clients send
    verified = verify_signed_data(der)
    assert verified.content == CONTENT
    assert verified.content_type == "1.2.840.113549.1.7.1"
    assert verified.signer_certificate == pki.ca
    assert verified.signing_time is not None


def test_detached_pss_signature_verifies_and_rejects_other_content(
    pki: PkiFixture, tmp_path: Path
) -> None:
    der = openssl_sign(tmp_path, pki.ca, pki.ca_key, "-keyopt", "rsa_padding_mode:pss")
    verified = verify_signed_data(der, detached_content=CONTENT)
    assert verified.content == CONTENT
    with pytest.raises(TamperedContent):
        verify_signed_data(der, detached_content=CONTENT + b"P.S. pay me\r\n")
    with pytest.raises(MalformedMessage):
        verify_signed_data(der)


def test_ecdsa_sha512_signature_from_openssl_verifies(pki: PkiFixture, tmp_path: Path) -> None:
    der = openssl_sign(tmp_path, pki.ra, pki.ra_key, "-nodetach", "-md", "sha512")
    assert verify_signed_data(der).signer_public_key == pki.ra_key.public_key()


def test_sha1_signature_is_refused(pki: PkiFixture, tmp_path: Path) -> None:
    der = openssl_sign(tmp_path, pki.ca, pki.ca_key, "-nodetach", "-md", "sha1")
    with pytest.raises(UnsupportedAlgorithm):
        verify_signed_data(der)


def test_signature_by_other_key_is_invalid(pki: PkiFixture) -> None:
    der = sign_content("1.3.6.1.5.5.7.12.2", b"\x30\x00", Signer(pki.user_rsa))
    with pytest.raises(SignerNotFound):
        verify_signed_data(der)
    with pytest.raises(SignatureInvalid):
        verify_signed_data(der, signer_public_key=pki.ca_key.public_key())
    verify_signed_data(der, signer_public_key=pki.user_rsa.public_key())


def test_certs_only_message_has_no_signer(pki: PkiFixture) -> None:
    with pytest.raises(SignerNotFound):
        verify_signed_data(build_simple_response([pki.ca]).der)


class HsmLikeKey(rsa.RSAPrivateKey):
    """Exposes only what an HSM-backed key object offers: sign, public_key, key_size."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self._inner = inner
        self.calls = 0

    def sign(self, data, padding, algorithm):  # type: ignore[no-untyped-def,override]
        self.calls += 1
        return self._inner.sign(data, padding, algorithm)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._inner.public_key()

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def decrypt(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        raise AssertionError("an HSM key is never asked to decrypt here")

    def private_numbers(self):  # type: ignore[no-untyped-def,override]
        raise AssertionError("an HSM key never reveals its numbers")

    def private_bytes(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        raise AssertionError("an HSM key never exports itself")

    def __copy__(self) -> HsmLikeKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HsmLikeKey:
        return self


def test_key_object_is_only_asked_to_sign(pki: PkiFixture) -> None:
    key = HsmLikeKey(pki.ca_key)
    for pss in (False, True):
        der = sign_content("1.3.6.1.5.5.7.12.3", b"\x30\x00", Signer(key, pki.ca, rsa_pss=pss))
        assert verify_signed_data(der).signer_certificate == pki.ca
    assert key.calls == 2


def test_chain_reports_what_failed(pki: PkiFixture) -> None:
    leaf = pki.issue(pki.user_rsa.public_key(), "a@example.org")
    assert verify_chain(leaf, [pki.ca], [pki.root], at=NOW) == [leaf, pki.ca, pki.root]
    assert verify_chain(
        leaf, [pki.ca], [pki.root], at=NOW, required_eku=ExtendedKeyUsageOID.EMAIL_PROTECTION
    )
    with pytest.raises(ExtendedKeyUsageMissing):
        verify_chain(
            leaf, [pki.ca], [pki.root], at=NOW, required_eku=ExtendedKeyUsageOID.CLIENT_AUTH
        )
    with pytest.raises(CertificateNotValidAt):
        verify_chain(leaf, [pki.ca], [pki.root], at=NOW + timedelta(days=3000))
    with pytest.raises(UntrustedSigner):
        verify_chain(leaf, [], [pki.root], at=NOW)
    with pytest.raises(UntrustedSigner):
        verify_chain(leaf, [pki.ca], [pki.stranger], at=NOW)
    # issued by a non-CA certificate (the RA) that claims the CA's place
    fake = make_cert(leaf.subject, pki.user_rsa.public_key(), pki.ra.subject, pki.ra_key, ca=False)
    with pytest.raises(IssuerNotAuthorised):
        verify_chain(fake, [pki.ra, pki.ca], [pki.root], at=NOW)
    # same issuer name, different key: the signature link fails
    impostor = make_cert(
        leaf.subject, pki.user_rsa.public_key(), pki.ca.subject, pki.stranger_key, ca=False
    )
    with pytest.raises(ChainSignatureInvalid):
        verify_chain(impostor, [pki.ca], [pki.root], at=NOW)


def test_signature_hash_must_match_digest_algorithm(pki: PkiFixture) -> None:
    der = sign_content(
        "1.3.6.1.5.5.7.12.3",
        b"\x30\x00",
        Signer(pki.ca_key, pki.ca, hash_algorithm=hashes.SHA384()),
    )
    assert verify_signed_data(der).signer_certificate == pki.ca
