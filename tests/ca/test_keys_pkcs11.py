"""Stories only the HSM backend has: keys that cannot leave the token, PINs, sessions."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as px

from ca.keys import (
    EcKeyHandle,
    KeyBackendError,
    KeyNotFound,
    KeyType,
    RsaKeyHandle,
    SecretNotFound,
    TokenUnavailable,
    UnsupportedKeyOperation,
    backend_from_settings,
)
from ca.keys.pkcs11 import Pkcs11Backend
from ca.keys.pool import _registry
from tests.fixtures.softhsm import SoftHsmToken, write_private_key


def _private_object(token: SoftHsmToken, label: str, session: pkcs11.Session) -> pkcs11.Object:
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)


def test_the_ca_private_key_cannot_be_read_out_of_the_token(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    rsa_key = softhsm_backend.generate("root-ca", KeyType.RSA2048)
    softhsm_backend.generate("ec-ca", KeyType.EC_P256)
    expected_id = x509.SubjectKeyIdentifier.from_public_key(rsa_key.public_key()).digest
    tok = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    # PKCS#11 login is per application: the backend's login covers this session too.
    with tok.open() as session:
        priv = _private_object(softhsm_token, "root-ca", session)
        assert priv[Attribute.SENSITIVE] is True
        assert priv[Attribute.EXTRACTABLE] is False
        assert priv[Attribute.TOKEN] is True
        assert priv[Attribute.NEVER_EXTRACTABLE] is True
        assert priv[Attribute.ALWAYS_SENSITIVE] is True
        assert priv[Attribute.ID] == expected_id
        for secret in (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.VALUE):
            with pytest.raises((px.AttributeSensitive, px.AttributeTypeInvalid)):
                priv[secret]
        with pytest.raises(px.AttributeSensitive):
            _private_object(softhsm_token, "ec-ca", session)[Attribute.VALUE]
    # Not even wrapped under a key of our own choosing does it leave the token.
    with tok.open(rw=True) as session:
        wrapper: Any = session.generate_key(pkcs11.KeyType.AES, 256, label="wrapper")
        with pytest.raises(px.KeyUnextractable):
            wrapper.wrap_key(
                _private_object(softhsm_token, "root-ca", session),
                mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD,
            )
    out = tmp_path / "exported.der"
    read = softhsm_token.pkcs11_tool(
        "--read-object", "--type", "privkey", "--label", "root-ca", "-o", str(out)
    )
    assert not out.exists() and "not" in read.stderr, read.stderr
    listed = softhsm_token.pkcs11_tool("--list-objects", "--type", "privkey")
    assert listed.stdout.count("sensitive, always sensitive, never extractable") == 2


def test_an_imported_key_is_sensitive_on_the_token(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend
) -> None:
    softhsm_backend.import_key("user@example.org", ec.generate_private_key(ec.SECP256R1()))
    tok = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.token_label)
    with tok.open() as session:
        priv = _private_object(softhsm_token, "user@example.org", session)
        assert priv[Attribute.SENSITIVE] is True and priv[Attribute.EXTRACTABLE] is False
        with pytest.raises(px.AttributeSensitive):
            priv[Attribute.VALUE]


def test_keys_stay_on_the_token_for_the_next_backend(softhsm_token: SoftHsmToken) -> None:
    with softhsm_token.backend() as first:
        made = first.generate("cmc-signer", KeyType.EC_P256)
    with softhsm_token.backend(pin=None, pin_file=softhsm_token.pin_file) as second:
        loaded = second.load("cmc-signer")
        assert loaded.public_key() == made.public_key()
        sig = loaded.sign(b"hello", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]
        made.public_key().verify(sig, b"hello", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]


def test_a_wrong_pin_is_reported_in_words(softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(KeyBackendError, match="PIN was refused") as info:
        softhsm_token.backend(pin="0000")
    assert isinstance(info.value.__cause__, px.PinIncorrect)
    assert "0000" not in str(info.value)


def test_an_unknown_token_or_module_is_reported_in_words(softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(KeyBackendError, match="no token with this label"):
        Pkcs11Backend(softhsm_token.module_path, "no-such-token", pin="1234")
    with pytest.raises(KeyBackendError, match="does not exist"):
        Pkcs11Backend("/nonexistent/libpkcs11.so", "t", pin="1234")


def test_without_a_module_path_softhsm_is_found(softhsm_token: SoftHsmToken) -> None:
    with Pkcs11Backend(None, softhsm_token.token_label, pin=softhsm_token.pin) as keys:
        assert keys.module_path == softhsm_token.module_path
        keys.generate("auto", KeyType.EC_P256)
    with backend_from_settings(
        "pkcs11", token_label=softhsm_token.token_label, pin=softhsm_token.pin
    ) as again:
        assert again.labels() == ["auto"]


def test_the_pin_comes_from_a_file_or_the_environment(
    softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMCGATE_TEST_PIN", softhsm_token.pin)
    with backend_from_settings(
        "pkcs11",
        module_path=softhsm_token.module_path,
        token_label=softhsm_token.token_label,
        pin_env="CMCGATE_TEST_PIN",
        pool_size="2",
    ) as by_env:
        by_env.generate("k", KeyType.EC_P256)
    with backend_from_settings(
        "pkcs11",
        module_path=softhsm_token.module_path,
        token_label=softhsm_token.token_label,
        pin_file=softhsm_token.pin_file,
    ) as by_file:
        assert by_file.labels() == ["k"]
    with pytest.raises(SecretNotFound, match="CMCGATE_UNSET"):
        Pkcs11Backend(softhsm_token.module_path, "x", pin_env="CMCGATE_UNSET")
    with pytest.raises(KeyBackendError, match="exactly one"):
        Pkcs11Backend(softhsm_token.module_path, "x", pin="1", pin_env="CMCGATE_TEST_PIN")


def test_backends_on_one_token_share_a_login_and_the_last_close_logs_out(
    softhsm_token: SoftHsmToken,
) -> None:
    a = softhsm_token.backend()
    b = softhsm_token.backend()
    key = a.generate("shared", KeyType.EC_P256)
    assert len([p for p in _registry.values() if p.token_label == "cmcgate-test"]) == 1
    a.close()
    assert b.load("shared").public_key() == key.public_key()
    b.close()
    assert not [p for p in _registry.values() if p.token_label == "cmcgate-test"]
    with pytest.raises(KeyBackendError, match="closed"):
        b.labels()


def test_every_key_type_can_be_generated_on_the_token(softhsm_backend: Pkcs11Backend) -> None:
    started = time.perf_counter()
    for key_type in KeyType:
        key = softhsm_backend.generate(f"key-{key_type.value}", key_type)
        assert softhsm_backend.load(key.label).key_type is key_type
        if isinstance(key, RsaKeyHandle):
            assert key.key_size == key_type.rsa_bits
            sig = key.sign(b"m", padding.PKCS1v15(), hashes.SHA512())
            key.public_key().verify(sig, b"m", padding.PKCS1v15(), hashes.SHA512())
        else:
            assert isinstance(key, EcKeyHandle)
            assert key.curve.name == key_type.curve.name
            sig = key.sign(b"m", ec.ECDSA(hashes.SHA384()))
            key.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA384()))
    assert time.perf_counter() - started < 30


def test_a_key_made_by_pkcs11_tool_is_usable(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend
) -> None:
    made = softhsm_token.pkcs11_tool(
        "--keypairgen", "--key-type", "EC:prime256v1", "--label", "from-tool", "--id", "0a0b"
    )
    assert made.returncode == 0, made.stderr
    key = softhsm_backend.load("from-tool")
    assert isinstance(key, EcKeyHandle) and key.key_type is KeyType.EC_P256
    sig = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))


def test_oaep_with_sha256_works_although_softhsm_knows_only_sha1_oaep(
    softhsm_backend: Pkcs11Backend,
) -> None:
    key = softhsm_backend.generate("rsa", KeyType.RSA2048)
    other = softhsm_backend.generate("other", KeyType.RSA2048)
    assert isinstance(key, RsaKeyHandle) and isinstance(other, RsaKeyHandle)
    for hash_ in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        oaep = padding.OAEP(padding.MGF1(hash_), hash_, None)
        assert key.decrypt(key.public_key().encrypt(b"cek" * 8, oaep), oaep) == b"cek" * 8
    labelled = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"label")
    ciphertext = key.public_key().encrypt(b"k", labelled)
    assert key.decrypt(ciphertext, labelled) == b"k"
    with pytest.raises(ValueError, match="failed: wrong key or data"):
        other.decrypt(ciphertext, labelled)
    unlabelled = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    with pytest.raises(ValueError, match="failed: wrong key or data"):
        key.decrypt(ciphertext, unlabelled)


def test_decrypting_with_the_wrong_key_raises_a_value_error(
    softhsm_backend: Pkcs11Backend,
) -> None:
    mine = softhsm_backend.generate("mine", KeyType.RSA2048)
    other = softhsm_backend.generate("other", KeyType.RSA2048)
    assert isinstance(mine, RsaKeyHandle) and isinstance(other, RsaKeyHandle)
    ciphertext = other.public_key().encrypt(b"for other", padding.PKCS1v15())
    with pytest.raises(ValueError, match="failed: wrong key or data"):
        mine.decrypt(ciphertext, padding.PKCS1v15())


def test_an_ec_key_made_for_signing_only_says_why_it_cannot_do_ecdh(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend
) -> None:
    """Keys made before ECDH decryption existed (or by tools, for signing) lack CKA_DERIVE."""
    made = softhsm_token.pkcs11_tool(
        "--keypairgen", "--key-type", "EC:prime256v1", "--label", "signing-only",
        "--usage-sign",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = softhsm_backend.load("signing-only")
    assert isinstance(key, EcKeyHandle)
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(UnsupportedKeyOperation, match="CKA_DERIVE is false"):
        key.exchange(ec.ECDH(), peer)
    generated = softhsm_backend.generate("generated", KeyType.EC_P256)
    assert len(generated.exchange(ec.ECDH(), peer)) == 32


def test_signing_works_again_after_the_hsm_replaced_its_key_objects(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    """An HSM outage as the gateway sees it: the key objects the sessions hold are deleted by
    another process and restored from the same key material, so they come back with new
    handles. The same backend object signs again without being re-created."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    handle = softhsm_backend.import_key("alice", key)
    handle.sign(b"before", padding.PKCS1v15(), hashes.SHA256())
    deleted = softhsm_token.pkcs11_tool("--delete-object", "--type", "privkey", "--label", "alice")
    assert deleted.returncode == 0, deleted.stderr
    write_private_key(softhsm_token, "alice", key, tmp_path)

    signature = handle.sign(b"after the outage", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(signature, b"after the outage", padding.PKCS1v15(), hashes.SHA256())


def test_signing_works_again_after_the_token_was_reinitialised_and_the_key_restored(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    handle = softhsm_backend.import_key("alice", key)
    handle.sign(b"before", padding.PKCS1v15(), hashes.SHA256())
    reinit = subprocess.run(
        ["softhsm2-util", "--init-token", "--token", softhsm_token.token_label]
        + ["--label", softhsm_token.token_label, "--pin", softhsm_token.pin]
        + ["--so-pin", softhsm_token.so_pin],
        env=softhsm_token.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert reinit.returncode == 0, reinit.stderr
    write_private_key(softhsm_token, "alice", key, tmp_path)

    signature = handle.sign(b"after the outage", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(signature, b"after the outage", padding.PKCS1v15(), hashes.SHA256())


def test_a_key_still_missing_after_reopening_is_a_backend_error_not_a_crash(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend
) -> None:
    handle = softhsm_backend.generate("alice", KeyType.RSA2048)
    handle.sign(b"before", padding.PKCS1v15(), hashes.SHA256())
    deleted = softhsm_token.pkcs11_tool("--delete-object", "--type", "privkey", "--label", "alice")
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(KeyNotFound, match="no private key labelled 'alice'"):
        handle.sign(b"during the outage", padding.PKCS1v15(), hashes.SHA256())


def test_a_token_that_stays_gone_is_a_temporary_token_unavailable_error(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend
) -> None:
    handle = softhsm_backend.generate("alice", KeyType.RSA2048)
    handle.sign(b"before", padding.PKCS1v15(), hashes.SHA256())
    deleted = subprocess.run(
        ["softhsm2-util", "--delete-token", "--token", softhsm_token.token_label],
        env=softhsm_token.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(TokenUnavailable, match="token 'cmcgate-test'"):
        handle.sign(b"during the outage", padding.PKCS1v15(), hashes.SHA256())
