"""Software keys: encrypted files named safely; plus key types, secrets and the factory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.keys import (
    KeyBackendError,
    KeyType,
    SecretNotFound,
    UnknownKeyType,
    backend_from_settings,
    read_secret,
)
from ca.keys.software import SoftwareBackend, filename_to_label, label_to_filename


def test_key_files_are_encrypted_and_readable_only_by_the_owner(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    with SoftwareBackend(directory, passphrase="s3cret") as keys:
        keys.generate("alice@example.org", KeyType.EC_P256)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert [f.name for f in files] == ["alice@example.org.pem"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    pem = files[0].read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # encrypted: no key without the passphrase
        serialization.load_pem_private_key(pem, password=None)


def test_a_wrong_passphrase_is_reported_in_words(tmp_path: Path) -> None:
    with SoftwareBackend(tmp_path, passphrase="right") as keys:
        keys.generate("ca", KeyType.EC_P256)
    with SoftwareBackend(tmp_path, passphrase="wrong") as keys:
        with pytest.raises(KeyBackendError, match="wrong passphrase"):
            keys.load("ca")


@pytest.mark.parametrize(
    "label",
    ["alice@example.org", "../../etc/passwd", ".hidden", "a/b\\c", "ünïcødé@exämple.org", "%41"],
)
def test_any_label_maps_to_one_file_inside_the_directory(tmp_path: Path, label: str) -> None:
    name = label_to_filename(label)
    assert "/" not in name and not name.startswith(".")
    assert filename_to_label(name) == label
    with SoftwareBackend(tmp_path / "keys", passphrase="p") as keys:
        key = keys.generate(label, KeyType.EC_P256)
        assert keys.labels() == [label]
        assert keys.load(label).public_key() == key.public_key()
    assert [p.parent for p in (tmp_path / "keys").iterdir()] == [tmp_path / "keys"]


def test_labels_that_are_not_printable_or_too_long_are_refused(tmp_path: Path) -> None:
    with SoftwareBackend(tmp_path, passphrase="p") as keys:
        for bad in ("", "a\nb", "x" * 201):
            with pytest.raises(KeyBackendError, match="label"):
                keys.generate(bad, KeyType.EC_P256)


def test_the_passphrase_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("from-a-file\n")
    secret.chmod(0o600)
    assert read_secret(file=secret) == "from-a-file"
    with backend_from_settings("software", directory=tmp_path / "k", passphrase_file=secret) as a:
        a.generate("k", KeyType.EC_P256)
    monkeypatch.setenv("CMCGATE_TEST_PASSPHRASE", "from-a-file")
    with backend_from_settings(
        "software", directory=tmp_path / "k", passphrase_env="CMCGATE_TEST_PASSPHRASE"
    ) as b:
        b.load("k").sign(b"x", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]


def test_secret_files_must_be_private_and_exactly_one_source_given(tmp_path: Path) -> None:
    loose = tmp_path / "pin"
    loose.write_text("1234")
    loose.chmod(0o644)
    with pytest.raises(SecretNotFound, match="chmod 600"):
        read_secret(file=loose)
    with pytest.raises(SecretNotFound, match="cannot read"):
        read_secret(file=tmp_path / "missing")
    with pytest.raises(SecretNotFound, match="exactly one"):
        read_secret()
    with pytest.raises(SecretNotFound, match="exactly one"):
        read_secret(file=loose, env="X")
    os.environ.pop("CMCGATE_SURELY_UNSET", None)
    with pytest.raises(SecretNotFound, match="CMCGATE_SURELY_UNSET"):
        read_secret(env="CMCGATE_SURELY_UNSET")


def test_key_types_parse_from_configuration_strings() -> None:
    assert KeyType.parse("rsa2048") is KeyType.RSA2048
    assert KeyType.parse(" EC-P384 ") is KeyType.EC_P384
    assert KeyType.parse("ec_p256") is KeyType.EC_P256
    assert KeyType("rsa4096").rsa_bits == 4096
    assert KeyType.EC_P256.curve.name == "secp256r1" and not KeyType.EC_P256.is_rsa
    assert [k.value for k in KeyType] == ["rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384"]
    with pytest.raises(UnknownKeyType, match="rsa2048, rsa3072, rsa4096, ec-p256, ec-p384"):
        KeyType.parse("dsa1024")
    with pytest.raises(ValueError):
        KeyType.parse("rsa1024")


def test_the_factory_names_unknown_backends_and_settings(tmp_path: Path) -> None:
    with pytest.raises(KeyBackendError, match="unknown key backend 'vault'"):
        backend_from_settings("vault")
    with pytest.raises(KeyBackendError, match="unknown settings .*: colour"):
        backend_from_settings("software", directory=tmp_path, passphrase="p", colour="red")
    with pytest.raises(KeyBackendError, match="needs: directory"):
        backend_from_settings("software", passphrase="p")
    with pytest.raises(KeyBackendError, match="needs: token_label"):
        backend_from_settings("pkcs11", pin="1234")
    with backend_from_settings("Software", directory=tmp_path, passphrase="p") as keys:
        assert keys.describe() == {"kind": "software", "directory": str(tmp_path)}
