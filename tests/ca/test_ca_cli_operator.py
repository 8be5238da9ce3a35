"""An RA operator works through the manual-approval queue from the shell, on a CA whose keys
are on a real SoftHSM2 token: looking needs no PIN, approving prints the certificate."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from ca.init import initialise
from ca.keys import KeyType
from ca.keys.softhsm import SoftHsmToken
from gateway.main import main as cli_main
from tests.ca.test_ca_cli import run, write_csr

ACCOUNT, PRODUCT = "example.ra", "example-manual"


@pytest.fixture
def manual_ca(softhsm_token: SoftHsmToken, tmp_path: Path) -> tuple[Path, Path]:
    pin = tmp_path / "hsm.pin"
    pin.write_text(softhsm_token.pin + "\n")
    pin.chmod(0o600)
    directory = tmp_path / "ca"
    initialise(
        directory, key_backend="pkcs11", pkcs11_module=softhsm_token.module_path,
        token_label=softhsm_token.token_label, pin_file=pin, key_type=KeyType.EC_P256,
        progress=lambda _: None, base_url="http://pki.example.org", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=PRODUCT, product_approval="manual",
    )  # fmt: skip
    return directory, pin


def test_an_operator_lists_pending_orders_without_the_pin_and_approval_prints_the_cert(
    manual_ca: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir, pin = manual_ca
    d = ["--dir", str(ca_dir)]
    csr = write_csr(tmp_path / "olga.csr", "olga@example.org")
    code, out, err = run(
        capsys, "ca", "issue", *d, "--csr", str(csr), "--account", ACCOUNT, "--product", PRODUCT
    )
    assert code == 0, err
    order_id = re.search(r"order (ord-\S+) PENDING_AUTHORIZATION", out).group(1)  # type: ignore[union-attr]

    pin.write_text("0000\n")  # this operator's PIN file is wrong: nothing that signs works
    code, out, err = run(capsys, "ca", "list", *d, "--status", "pending")
    assert code == 0, err
    assert order_id in out and "PENDING_AUTHORIZATION" in out and "olga@example.org" in out
    assert run(capsys, "ca", "list", *d)[0] == 0
    code, out, err = run(capsys, "ca", "show", *d, order_id)
    assert code == 0 and "status   PENDING_AUTHORIZATION" in out, err
    assert run(capsys, "ca", "audit", "verify", *d)[0] == 0
    code, out, err = run(capsys, "ca", "approve", *d, order_id)
    assert code == 2 and "the PIN was refused" in err

    pin.write_text("1234\n")
    code, out, err = run(capsys, "ca", "approve", *d, order_id, "--operator", "rita")
    assert code == 0, err
    leaf, *chain = x509.load_pem_x509_certificates(out.encode())
    assert [c.subject for c in chain] == [
        x509.load_pem_x509_certificate((ca_dir / name).read_bytes()).subject
        for name in ("issuing-ca.pem", "root-ca.pem")
    ]
    serial = format(leaf.serial_number, "x")
    assert f"order {order_id} ISSUED serial {serial}" in err
    (tmp_path / "olga.pem").write_text(out)
    verify = subprocess.run(
        ["openssl", "verify", "-purpose", "smimesign", "-CAfile", str(ca_dir / "root-ca.pem"),
         "-untrusted", str(ca_dir / "issuing-ca.pem"), str(tmp_path / "olga.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    code, again, err = run(capsys, "ca", "approve", *d, order_id)
    assert code == 0
    assert f"order {order_id} is already ISSUED (serial {serial}): nothing to approve" in err
    assert x509.load_pem_x509_certificates(again.encode())[0] == leaf

    code, out, _ = run(capsys, "ca", "show", *d, order_id)
    assert f"  issued   {leaf.subject.rfc4514_string()}" in out
    assert f"  serial   {serial}  (VALID)" in out
    assert run(capsys, "ca", "list", *d, "--status", "pending")[1].strip() == "no orders"


def test_list_status_failed_shows_the_reason(
    manual_ca: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir, _ = manual_ca
    d = ["--dir", str(ca_dir)]
    csr = write_csr(tmp_path / "eve.csr", "eve@evil.example")
    code, _, err = run(
        capsys, "ca", "issue", *d, "--csr", str(csr), "--account", ACCOUNT, "--product", PRODUCT
    )
    assert code == 1
    code, out, _ = run(capsys, "ca", "list", *d, "--status", "failed")
    assert code == 0 and "FAILED" in out and "outside the account's validated domains" in out
    with pytest.raises(SystemExit) as bad:  # argparse refuses the word
        run(capsys, "ca", "list", *d, "--status", "nonsense")
    assert bad.value.code == 2 and "unknown status 'nonsense'" in capsys.readouterr().err
    assert cli_main(["ca", "list", *d, "--status", "revoked"]) == 0
    failed = re.search(r"(ord-\S+)\s+FAILED", out).group(1)  # type: ignore[union-attr]
    code, out, err = run(capsys, "ca", "approve", *d, failed)
    assert code == 1 and out == ""
    assert err.startswith(f"order {failed} is FAILED: email eve@evil.example is outside")
    assert err.rstrip().endswith("it cannot be approved")
