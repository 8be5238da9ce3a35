"""``cmcgate cmc request`` / ``cmcgate cmc inspect`` as an operator uses them."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from cmc.messages.api import FullPKIRequest, parse_request, verify_request
from gateway.main import main
from tests.cmc.conftest import NOW, PkiFixture, make_csr


def _write_key(tmp_path: Path, key: object) -> Path:
    path = tmp_path / "user.key"
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_operator_builds_self_signed_request_from_a_key(
    pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _write_key(tmp_path, pki.user_ec)
    out = tmp_path / "req.der"
    assert (
        main(
            ["cmc", "request", "--key", str(key), "--email", "dave@example.org", "--out", str(out)]
        )
        == 0
    )
    request = parse_request(out.read_bytes())
    assert isinstance(request, FullPKIRequest)
    verified = verify_request(request)
    assert verified.signer_public_key == pki.user_ec.public_key()
    assert "dave@example.org" in capsys.readouterr().out


def test_operator_signs_an_existing_csr_with_the_access_certificate(
    pki: PkiFixture, tmp_path: Path
) -> None:
    csr_path = tmp_path / "user.csr"
    csr_path.write_bytes(
        make_csr(pki.user_rsa, "erin@example.org").public_bytes(serialization.Encoding.PEM)
    )
    p12 = tmp_path / "access.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"access", pki.ra_key, pki.ra, [pki.ca], serialization.BestAvailableEncryption(b"pw")
        )
    )
    (tmp_path / "pw").write_text("pw\n")
    out = tmp_path / "req.der"
    code = main(
        [
            "cmc",
            "request",
            "--csr",
            str(csr_path),
            "--sign-with",
            str(p12),
            "--password-file",
            str(tmp_path / "pw"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    request = parse_request(out.read_bytes())
    assert isinstance(request, FullPKIRequest)
    assert request.signer_id.serial_number == pki.ra.serial_number
    assert verify_request(request).signer_certificate == pki.ra
    assert pki.ca in request.certificates
    # openssl, as the independent judge, verifies it against the P12's chain
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-in", str(out),
         "-CAfile", str(root), "-purpose", "any", "-attime", str(int(NOW.timestamp())),
         "-out", str(tmp_path / "content")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    assert (tmp_path / "content").read_bytes() == request.pki_data.der


@pytest.mark.parametrize("encoding", ["DER", "PEM", "base64"])
def test_inspect_shows_a_bouncycastle_response_in_any_encoding(
    interop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    der = (interop_dir / "response-failed.der").read_bytes()
    text = base64.encodebytes(der)
    data = {
        "DER": der,
        "PEM": b"-----BEGIN CMS-----\n" + text + b"-----END CMS-----\n",
        "base64": text,
    }
    path = tmp_path / "response"
    path.write_bytes(data[encoding])
    assert main(["cmc", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"encoding={encoding}" in out
    assert (
        "statusInfoV2 (1.3.6.1.5.5.7.7.25): status=failed bodyList=[1] failInfo=badIdentity" in out
    )
    assert "recipientNonce (1.3.6.1.5.5.7.7.7): 3b4de2523898055a33535f6523ee3f76" in out
    assert main(["cmc", "inspect", "--json", str(path)]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["kind"] == "Full PKI Response"
    assert described["controls"][2]["values"] == [6539976824452270206]


def test_inspect_of_a_plain_csr(
    pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.csr"
    path.write_bytes(
        make_csr(pki.user_rsa, "f@example.org").public_bytes(serialization.Encoding.PEM)
    )
    assert main(["cmc", "inspect", str(path)]) == 0
    assert "Simple PKI Request" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"hello world", b"0\x03\x02\x01\x05", b"\x00" * 40])
def test_bad_files_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    assert main(["cmc", "inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmcgate: ") and err.count("\n") == 1


def test_missing_file_and_csr_without_signer_are_clear_errors(
    pki: PkiFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cmc", "inspect", str(tmp_path / "nope")]) == 2
    assert "cannot read" in capsys.readouterr().err
    csr_path = tmp_path / "u.csr"
    csr_path.write_bytes(
        make_csr(pki.user_rsa, "g@example.org").public_bytes(serialization.Encoding.DER)
    )
    assert main(["cmc", "request", "--csr", str(csr_path), "--out", str(tmp_path / "o")]) == 2
    assert "--sign-with" in capsys.readouterr().err
