"""The SoftHSM2 token the key tests stand on starts, works and stops cleanly."""

from __future__ import annotations

import os
from typing import Any, cast

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from ca.keys.pool import module_initialized
from tests.fixtures.softhsm import SoftHsmToken, softhsm_missing_reason, softhsm_token_context


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sign_and_verify_with_python_pkcs11(token: SoftHsmToken, label: str) -> None:
    lib = pkcs11.lib(token.module_path)
    tok = lib.get_token(token_label=token.token_label)
    with tok.open(rw=True, user_pin=token.pin) as session:
        pub, priv_ = session.generate_keypair(
            KeyType.EC,
            store=True,
            label=label,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        )
        priv: Any = priv_
        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"hello token")
        raw = priv.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
        labels = [
            o[Attribute.LABEL]
            for o in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
        ]
        assert labels == [label]
        der_pub = encode_ec_public_key(pub)
    public = load_der_public_key(der_pub)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    public.verify(utils.encode_dss_signature(r, s), b"hello token", ec.ECDSA(hashes.SHA256()))


@pytest.mark.skipif(softhsm_missing_reason() is not None, reason=str(softhsm_missing_reason()))
def test_softhsm_token_starts_and_stops_cleanly_twenty_times_in_a_row() -> None:
    conf_before = os.environ.get("SOFTHSM2_CONF")
    fds_before = None
    for cycle in range(20):
        with softhsm_token_context() as token:
            assert os.environ["SOFTHSM2_CONF"] == str(token.conf_path)
            # Every cycle sees only its own, empty token: the module re-read the new config.
            _sign_and_verify_with_python_pkcs11(token, f"key-{cycle}")
            directory = token.directory
        assert not directory.exists(), "temp dir left behind"
        assert os.environ.get("SOFTHSM2_CONF") == conf_before, "SOFTHSM2_CONF not restored"
        assert not module_initialized(token.module_path), "module left initialised"
        if cycle == 1:  # after the module has been loaded once
            fds_before = _open_fds()
    assert fds_before is not None
    assert _open_fds() <= fds_before + 2, "file descriptors leak across cycles"


def test_python_pkcs11_generates_and_signs_with_an_rsa_key_in_the_token(
    softhsm_token: SoftHsmToken,
) -> None:
    lib = pkcs11.lib(softhsm_token.module_path)
    tok = lib.get_token(token_label=softhsm_token.token_label)
    with tok.open(rw=True, user_pin=softhsm_token.pin) as session:
        pub, priv = session.generate_keypair(KeyType.RSA, 2048, store=True, label="raw-rsa")
        signature = cast(Any, priv).sign(b"hello", mechanism=Mechanism.SHA256_RSA_PKCS)
        n = int.from_bytes(pub[Attribute.MODULUS], "big")
        e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
    public = rsa.RSAPublicNumbers(e, n).public_key()
    public.verify(signature, b"hello", padding.PKCS1v15(), hashes.SHA256())


def test_softhsm_token_is_visible_to_pkcs11_tool_and_pin_file_holds_the_pin(
    softhsm_token: SoftHsmToken,
) -> None:
    listed = softhsm_token.pkcs11_tool("--list-token-slots", login=False)
    assert listed.returncode == 0, listed.stderr
    assert softhsm_token.token_label in listed.stdout
    assert softhsm_token.pin_file.read_text().strip() == softhsm_token.pin
    assert softhsm_token.pin_file.stat().st_mode & 0o077 == 0


def test_a_second_token_cannot_be_started_while_one_is_live(softhsm_token: SoftHsmToken) -> None:
    with pytest.raises(RuntimeError, match="already live"):
        with softhsm_token_context():
            pass
    assert os.environ["SOFTHSM2_CONF"] == str(softhsm_token.conf_path)
