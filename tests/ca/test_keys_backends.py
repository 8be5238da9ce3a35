"""The same stories hold for keys in the HSM (SoftHSM2) and for software keys.

Every test runs twice: once with a Pkcs11Backend on a fresh SoftHSM2 token, once with a
SoftwareBackend in a temp dir. What the keys sign is judged by openssl and cryptography.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from ca.keys import (
    EcKeyHandle,
    KeyBackend,
    KeyExists,
    KeyNotExportable,
    KeyNotFound,
    KeyType,
    PrivateKeyHandle,
    RsaKeyHandle,
    UnsupportedKeyOperation,
    raw_sign_rate,
)
from ca.keys.software import SoftwareBackend
from tests.certbuild import key_usage, self_signed_ca
from tests.fixtures.softhsm import softhsm_missing_reason, softhsm_token_context

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(params=["pkcs11", "software"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyBackend]:
    if request.param == "pkcs11":
        reason = softhsm_missing_reason()
        if reason:
            pytest.skip(reason)
        with softhsm_token_context() as token, token.backend() as hsm:
            yield hsm
    else:
        with SoftwareBackend(tmp_path / "keys", passphrase="correct horse") as soft:
            yield soft


def _openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=60)


def _self_signed(key: PrivateKeyHandle, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    usage = key_usage(
        digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey), ca=True
    )
    valid = (NOW - dt.timedelta(minutes=5), NOW + dt.timedelta(days=30))
    return self_signed_ca(key, name, valid, usage)


def _write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_generated_key_is_found_again_by_its_label(backend: KeyBackend) -> None:
    made = backend.generate("root-ca", KeyType.EC_P256)
    loaded = backend.load("root-ca")
    assert isinstance(loaded, EcKeyHandle) and isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.label == "root-ca" and loaded.key_type is KeyType.EC_P256
    assert loaded.backend_kind == backend.kind
    assert loaded.public_key() == made.public_key()
    assert loaded.key_size == 256 and loaded.curve.name == "secp256r1"
    assert backend.exists("root-ca") and not backend.exists("other")


def test_labels_list_every_key_and_delete_removes_exactly_one(backend: KeyBackend) -> None:
    backend.generate("alice@example.org", KeyType.EC_P256)
    backend.generate("bob@example.org", KeyType.EC_P256)
    assert backend.labels() == ["alice@example.org", "bob@example.org"]
    handle = backend.load("alice@example.org")
    backend.delete("alice@example.org")
    assert backend.labels() == ["bob@example.org"]
    assert not backend.exists("alice@example.org")
    with pytest.raises(KeyNotFound):
        backend.load("alice@example.org")
    with pytest.raises(KeyNotFound):
        backend.delete("alice@example.org")
    with pytest.raises(KeyNotFound):  # a handle to a deleted key stops working
        handle.sign(b"x", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]


def test_a_label_cannot_be_generated_twice(backend: KeyBackend) -> None:
    first = backend.generate("cmc-signer", KeyType.EC_P256)
    with pytest.raises(KeyExists):
        backend.generate("cmc-signer", KeyType.EC_P256)
    assert backend.load("cmc-signer").public_key() == first.public_key()
    again = backend.load_or_generate("cmc-signer", KeyType.RSA2048)
    assert again.public_key() == first.public_key()


def test_loading_an_unknown_label_raises_key_not_found(backend: KeyBackend) -> None:
    with pytest.raises(KeyNotFound, match="nobody"):
        backend.load("nobody")


def test_the_private_key_cannot_be_exported(backend: KeyBackend) -> None:
    key = backend.generate("ca", KeyType.RSA2048)
    with pytest.raises(KeyNotExportable):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyNotExportable):
        key.private_numbers()


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.EC_P256])
def test_a_self_signed_ca_certificate_verifies_with_openssl(
    backend: KeyBackend, key_type: KeyType, tmp_path: Path
) -> None:
    key = backend.generate("root", key_type)
    cert = _self_signed(key, f"cmcgate test root {key_type.value}")
    cert.verify_directly_issued_by(cert)
    pem = _write_pem(tmp_path / "root.pem", cert)
    result = _openssl("verify", "-CAfile", str(pem), "-x509_strict", str(pem))
    assert result.returncode == 0, result.stderr
    assert b"OK" in result.stdout


def test_a_crl_signed_by_the_key_verifies_with_openssl_crl(
    backend: KeyBackend, tmp_path: Path
) -> None:
    key = backend.generate("root", KeyType.RSA2048)
    cert = _self_signed(key, "crl issuer")
    revoked = x509.RevokedCertificateBuilder().serial_number(42).revocation_date(NOW).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(key, hashes.SHA256())
    )
    assert crl.is_signature_valid(key.public_key())
    crl_path = tmp_path / "ca.crl"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    result = _openssl(
        "crl", "-in", str(crl_path), "-CAfile", str(_write_pem(tmp_path / "ca.pem", cert)),
        "-noout", "-verify",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"verify OK" in result.stderr + result.stdout


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.EC_P256])
def test_a_cms_message_signed_with_the_key_verifies_with_openssl_cms(
    backend: KeyBackend, key_type: KeyType, tmp_path: Path
) -> None:
    key = backend.generate("alice@example.org", key_type)
    cert = _self_signed(key, "alice@example.org")
    body = b"Content-Type: text/plain\r\n\r\nhello from the gateway\r\n"
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(body)
        .add_signer(cert, key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    cms = tmp_path / "signed.der"
    cms.write_bytes(signed)
    result = _openssl(
        "cms", "-verify", "-inform", "DER", "-in", str(cms), "-binary",
        "-CAfile", str(_write_pem(tmp_path / "alice.pem", cert)), "-purpose", "any",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == body


def test_pkcs7_decrypt_with_the_key_opens_what_pkcs7_encrypt_made(backend: KeyBackend) -> None:
    key = backend.generate("bob@example.org", KeyType.RSA2048)
    assert isinstance(key, RsaKeyHandle)
    cert = _self_signed(key, "bob@example.org")
    body = b"secret for bob\r\n"
    enveloped = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(body)
        .add_recipient(cert)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    assert pkcs7.pkcs7_decrypt_der(enveloped, cert, key, []) == body


def test_a_csr_signed_by_the_key_is_valid(backend: KeyBackend) -> None:
    key = backend.generate("carol@example.org", KeyType.EC_P256)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "carol@example.org")]))
        .sign(key, hashes.SHA256())
    )
    assert csr.is_signature_valid


def test_rsa_pss_prehashed_and_oaep_work_like_a_software_key(backend: KeyBackend) -> None:
    key = backend.generate("rsa", KeyType.RSA2048)
    public = key.public_key()
    assert isinstance(key, RsaKeyHandle) and isinstance(public, rsa.RSAPublicKey)
    data = b"to be signed"
    for salt in (padding.PSS.MAX_LENGTH, padding.PSS.DIGEST_LENGTH, 20):
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), salt)
        public.verify(key.sign(data, pss, hashes.SHA256()), data, pss, hashes.SHA256())
    digest = hashes.Hash(hashes.SHA384())
    digest.update(data)
    prehashed = key.sign(digest.finalize(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA384()))
    public.verify(prehashed, data, padding.PKCS1v15(), hashes.SHA384())
    for oaep_hash in (hashes.SHA1(), hashes.SHA256()):
        oaep = padding.OAEP(padding.MGF1(oaep_hash), oaep_hash, None)
        assert key.decrypt(public.encrypt(b"k" * 32, oaep), oaep) == b"k" * 32
    assert key.decrypt(public.encrypt(b"k", padding.PKCS1v15()), padding.PKCS1v15()) == b"k"


def test_ec_prehashed_and_sha384_signatures_verify(backend: KeyBackend) -> None:
    key = backend.generate("ec", KeyType.EC_P256)
    public = key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(key, EcKeyHandle)
    data = b"to be signed"
    public.verify(key.sign(data, ec.ECDSA(hashes.SHA384())), data, ec.ECDSA(hashes.SHA384()))
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    sig = key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    public.verify(sig, data, ec.ECDSA(hashes.SHA256()))


def test_weak_hashes_and_unsupported_paddings_are_refused(backend: KeyBackend) -> None:
    rsa_key = backend.generate("rsa", KeyType.RSA2048)
    ec_key = backend.generate("ec", KeyType.EC_P256)
    assert isinstance(rsa_key, RsaKeyHandle) and isinstance(ec_key, EcKeyHandle)
    with pytest.raises(UnsupportedKeyOperation, match="sha1"):
        rsa_key.sign(b"x", padding.PKCS1v15(), hashes.SHA1())
    with pytest.raises(UnsupportedKeyOperation, match="AUTO"):
        rsa_key.sign(
            b"x", padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()
        )
    with pytest.raises(UnsupportedKeyOperation, match="md5"):
        ec_key.sign(b"x", ec.ECDSA(hashes.MD5()))


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.EC_P384])
def test_ecdh_runs_inside_the_backend_for_generated_and_imported_keys(
    backend: KeyBackend, key_type: KeyType
) -> None:
    """S/MIME to EC recipients (RFC 5753) needs ECDH with the user's key where it lives."""
    plain = ec.generate_private_key(key_type.curve)
    generated = backend.generate("generated", key_type)
    imported = backend.import_key("imported", plain)
    for handle in (generated, backend.load("generated"), imported, backend.load("imported")):
        assert isinstance(handle, EcKeyHandle)
        peer = ec.generate_private_key(key_type.curve)
        shared = handle.exchange(ec.ECDH(), peer.public_key())
        assert shared == peer.exchange(ec.ECDH(), handle.public_key())
    other_curve = ec.SECP384R1() if key_type is KeyType.EC_P256 else ec.SECP256R1()
    with pytest.raises(ValueError, match="not secp"):
        generated.exchange(ec.ECDH(), ec.generate_private_key(other_curve).public_key())


def test_eight_threads_sign_fifty_times_each_at_the_same_time(backend: KeyBackend) -> None:
    rsa_key = backend.generate("rsa", KeyType.RSA2048)
    ec_key = backend.generate("ec", KeyType.EC_P256)
    assert isinstance(rsa_key, RsaKeyHandle) and isinstance(ec_key, EcKeyHandle)
    rsa_pub, ec_pub = rsa_key.public_key(), ec_key.public_key()

    def worker(n: int) -> int:
        for i in range(50):
            msg = f"thread {n} message {i}".encode()
            if i % 2:
                sig = rsa_key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
                rsa_pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
            else:
                sig = ec_key.sign(msg, ec.ECDSA(hashes.SHA256()))
                ec_pub.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        return n

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(worker, range(8))) == list(range(8))


async def test_asyncio_tasks_sign_concurrently_through_worker_threads(
    backend: KeyBackend,
) -> None:
    key = await asyncio.to_thread(backend.generate, "ec", KeyType.EC_P256)
    assert isinstance(key, EcKeyHandle)
    msgs = [f"mail {i}".encode() for i in range(40)]
    sigs = await asyncio.gather(
        *(asyncio.to_thread(key.sign, m, ec.ECDSA(hashes.SHA256())) for m in msgs)
    )
    for msg, sig in zip(msgs, sigs, strict=True):
        key.public_key().verify(sig, msg, ec.ECDSA(hashes.SHA256()))


def test_raw_sign_rate_counts_signatures_per_second_and_cleans_up(backend: KeyBackend) -> None:
    rate = raw_sign_rate(backend, "ec-p256", seconds=0.2)
    assert rate > 10
    assert backend.labels() == []


def test_a_closed_backend_refuses_work(backend: KeyBackend) -> None:
    key = backend.generate("k", KeyType.EC_P256)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        key.sign(b"x", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]


@pytest.mark.parametrize("key_type", [KeyType.RSA2048, KeyType.EC_P256])
def test_an_imported_key_signs_like_the_original_and_cannot_be_exported_again(
    backend: KeyBackend, key_type: KeyType
) -> None:
    original = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type.is_rsa
        else ec.generate_private_key(ec.SECP256R1())
    )
    handle = backend.import_key("imported@example.org", original)
    assert handle.key_type is key_type
    assert backend.load("imported@example.org").public_key() == original.public_key()
    cert = _self_signed(handle, "imported")
    cert.verify_directly_issued_by(cert)
    with pytest.raises(KeyExists):
        backend.import_key("imported@example.org", original)
    with pytest.raises(KeyNotExportable):
        handle.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def test_keys_of_sizes_cmcgate_does_not_use_are_not_imported(backend: KeyBackend) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024"):
        backend.import_key("small", small)
    assert backend.labels() == []
