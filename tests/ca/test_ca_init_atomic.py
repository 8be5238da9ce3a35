"""``cmcgate ca init`` is atomic: a failed init (a wrong PIN) leaves nothing behind, so the
retry with the right PIN works without ``--force``. Real SoftHSM2 token, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from ca.keys.softhsm import SoftHsmToken
from gateway.main import main as cli_main


def _init(ca_dir: Path, token: SoftHsmToken, pin_file: Path) -> list[str]:
    return ["ca", "init", "--dir", str(ca_dir), "--pin-file", str(pin_file),
            "--token-label", token.token_label, "--key-type", "ec-p256",
            "--domain", "example.org"]  # fmt: skip


def test_a_wrong_pin_leaves_no_ca_yaml_and_the_retry_needs_no_force(
    softhsm_token: SoftHsmToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("9999\n")
    wrong.chmod(0o600)
    ca_dir = tmp_path / "ca"

    assert cli_main(_init(ca_dir, softhsm_token, wrong)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"cmcgate: PKCS#11 login failed on token '{softhsm_token.token_label}': the PIN was refused"
    ]
    assert not ca_dir.exists() or list(ca_dir.iterdir()) == []

    # an existing, empty directory (made by a package, say) is kept and filled on success
    ca_dir.mkdir(exist_ok=True)
    assert cli_main(_init(ca_dir, softhsm_token, wrong)) == 2
    assert list(ca_dir.iterdir()) == []

    capsys.readouterr()
    assert cli_main(_init(ca_dir, softhsm_token, softhsm_token.pin_file)) == 0
    out = capsys.readouterr().out
    assert f"CA ready in {ca_dir.resolve()}" in out
    names = sorted(p.name for p in ca_dir.iterdir())
    assert names == sorted(
        ["ca.yaml", "ca.db", "root-ca.pem", "issuing-ca.pem", "ca-chain.pem", "certs", "crl"]
    ), names
    root = x509.load_pem_x509_certificate((ca_dir / "root-ca.pem").read_bytes())
    issuing = x509.load_pem_x509_certificate((ca_dir / "issuing-ca.pem").read_bytes())
    issuing.verify_directly_issued_by(root)
    crl = x509.load_der_x509_crl((ca_dir / "crl" / "issuing.crl").read_bytes())
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    # the CA works from its final place: the list command reads its database
    assert cli_main(["ca", "list", "--dir", str(ca_dir)]) == 0


def test_a_failure_after_the_keys_were_made_deletes_them_again(
    softhsm_token: SoftHsmToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    # the issuing key's label is taken on the token by something else: init fails after it
    # generated the root key, which must not stay behind (the retry would then need --force)
    with softhsm_token.backend() as keys:
        keys.generate("cmcgate-issuing", "ec-p256")
    assert cli_main(_init(ca_dir, softhsm_token, softhsm_token.pin_file)) == 2
    assert "exists" in capsys.readouterr().err
    assert not ca_dir.exists()
    with softhsm_token.backend() as keys:
        assert not keys.exists("cmcgate-root")
        keys.delete("cmcgate-issuing")
    assert cli_main(_init(ca_dir, softhsm_token, softhsm_token.pin_file)) == 0
