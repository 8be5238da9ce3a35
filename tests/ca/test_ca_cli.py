"""An operator runs the bundled CA from the shell: ``cmcgate ca init|issue|list|show|revoke|crl``.

One software-key CA for the module, made by ``cmcgate ca init`` itself; the commands run
through ``gateway.main.main`` (one test through the installed ``cmcgate`` script) and what they
print or write is parsed back with cryptography and openssl.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ca.store.orders import Store
from gateway.main import main as cli_main

DOMAIN = "example.org"
ACCOUNT = "totemoag.ra"
PRODUCT = "totemo-persogold"
PEM = serialization.Encoding.PEM
CMCGATE = Path(sys.executable).with_name("cmcgate")


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("cli-ca") / "ca"
    code = cli_main(
        ["ca", "init", "--dir", str(directory), "--key-type", "ec-p256", "--domain", DOMAIN,
         "--base-url", "http://pki.example.org", "--organisation", "Example AG"]
    )  # fmt: skip
    assert code == 0
    yield directory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_csr(path: Path, email: str, key: object | None = None, pem: bool = True) -> Path:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(csr.public_bytes(PEM if pem else serialization.Encoding.DER))
    return path


def issue(
    capsys: pytest.CaptureFixture[str], ca_dir: Path, csr: Path, *extra: str
) -> tuple[int, str, str]:
    return run(
        capsys, "ca", "issue", "--dir", str(ca_dir), "--csr", str(csr),
        "--account", ACCOUNT, "--product", PRODUCT, *extra,
    )  # fmt: skip


def order_count(ca_dir: Path) -> int:
    store = Store.open_ca_dir(ca_dir)
    try:
        return len(store.find_orders())
    finally:
        store.close()


def issued_serial(err: str) -> str:
    match = re.search(r"order (ord-\S+) ISSUED serial ([0-9a-f]+)", err)
    assert match, err
    return match.group(2)


def test_init_refuses_to_overwrite_an_existing_ca_unless_forced(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_before = (ca_dir / "root-ca.pem").read_bytes()
    code, _, err = run(capsys, "ca", "init", "--dir", str(ca_dir), "--key-type", "ec-p256")
    assert code == 2
    assert "a CA is there already (use --force to replace it)" in err
    assert (ca_dir / "root-ca.pem").read_bytes() == root_before

    other = tmp_path / "other"
    init = ["ca", "init", "--dir", str(other), "--key-type", "ec-p256"]
    assert run(capsys, *init)[0] == 0
    first_root = (other / "root-ca.pem").read_bytes()
    code, out, _ = run(capsys, *init, "--force")
    assert code == 0 and "CA ready in" in out
    assert (other / "root-ca.pem").read_bytes() != first_root


def test_issue_prints_the_failed_order_and_its_reason_for_a_bad_request(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = write_csr(tmp_path / "outside.csr", "mallory@evil.example")
    code, out, err = issue(capsys, ca_dir, outside)
    assert code == 1 and out == ""
    match = re.search(r"order (ord-\S+) FAILED: (.*)", err)
    assert match, err
    assert "mallory@evil.example is outside the account's validated domains" in match.group(2)
    code, out, _ = run(capsys, "ca", "show", "--dir", str(ca_dir), match.group(1))
    assert code == 0 and "status   FAILED" in out and "outside the account's" in out

    weak = write_csr(tmp_path / "weak.csr", f"a@{DOMAIN}", rsa.generate_private_key(65537, 1024))
    code, _, err = issue(capsys, ca_dir, weak)
    assert code == 1 and "FAILED: key not allowed: RSA key of 1024 bits is too weak" in err

    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(b"not a request")
    code, _, err = issue(capsys, ca_dir, garbage)
    assert code == 1 and "FAILED: not a PKCS#10 request" in err

    code, _, err = issue(capsys, ca_dir, tmp_path / "missing.csr")
    assert code == 2 and "missing.csr" in err


def test_issue_writes_pem_der_and_p7b_that_parse(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csr = write_csr(tmp_path / "alice.csr", f"alice@{DOMAIN}")
    code, out, err = issue(capsys, ca_dir, csr, "--validity", "1y")
    assert code == 0
    chain = x509.load_pem_x509_certificates(out.encode())
    assert [c.subject.rfc4514_string() for c in chain] == [
        f"CN=alice@{DOMAIN}",
        "CN=cmcgate S/MIME Issuing CA,O=Example AG,C=CH",
        "CN=cmcgate Root CA,O=Example AG,C=CH",
    ]
    assert f"{chain[0].serial_number:x}" == issued_serial(err)

    der_csr = write_csr(tmp_path / "bob.csr", f"bob@{DOMAIN}", pem=False)
    der_out = tmp_path / "bob.cer"
    code, _, err = issue(capsys, ca_dir, der_csr, "--format", "der", "--out", str(der_out))
    assert code == 0
    cert = x509.load_der_x509_certificate(der_out.read_bytes())
    assert f"{cert.serial_number:x}" == issued_serial(err)

    p7b = tmp_path / "carol.p7b"
    code, _, _ = issue(
        capsys, ca_dir, write_csr(tmp_path / "c.csr", f"carol@{DOMAIN}"), "--format", "p7b",
        "--out", str(p7b),
    )  # fmt: skip
    assert code == 0
    printed = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(p7b), "-print_certs", "-noout"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    subjects = sorted(re.findall(r"subject=(.*)", printed))  # a SET OF: DER order, not chain
    assert subjects == [
        "C = CH, O = Example AG, CN = cmcgate Root CA",
        "C = CH, O = Example AG, CN = cmcgate S/MIME Issuing CA",
        f"CN = carol@{DOMAIN}",
    ]

    # A binary format with nothing to write it to is refused before anything is issued.
    orders_before = order_count(ca_dir)
    code, _, err = issue(capsys, ca_dir, csr, "--format", "der")
    assert code == 2 and "give --out FILE" in err
    assert order_count(ca_dir) == orders_before


def test_list_shows_certificates_expiring_within_a_window(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = issue(capsys, ca_dir, write_csr(tmp_path / "d.csr", f"dave@{DOMAIN}"))
    serial = issued_serial(err)
    code, out, _ = run(
        capsys, "ca", "list", "--dir", str(ca_dir), "--expiring-within", "400", "--json"
    )
    rows = {row["serial"]: row for row in json.loads(out)}
    assert rows[serial]["emails"] == [f"dave@{DOMAIN}"] and rows[serial]["status"] == "VALID"
    code, out, _ = run(capsys, "ca", "list", "--dir", str(ca_dir), "--expiring-within", "30")
    assert code == 0 and serial not in out
    code, out, _ = run(capsys, "ca", "list", "--dir", str(ca_dir), "--email", f"DAVE@{DOMAIN}")
    fields = out.split()
    assert code == 0 and len(fields) == 5
    assert fields[:2] == [serial, "VALID"] and fields[3:] == [
        f"dave@{DOMAIN}",
        rows[serial]["order"],
    ]


def test_show_an_order_and_a_certificate(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, err = issue(capsys, ca_dir, write_csr(tmp_path / "e.csr", f"erin@{DOMAIN}"))
    order_id = re.search(r"order (ord-\S+) ISSUED", err).group(1)  # type: ignore[union-attr]
    serial = issued_serial(err)

    code, out, _ = run(capsys, "ca", "show", "--dir", str(ca_dir), order_id)
    assert code == 0
    assert "status   ISSUED" in out and f"serial   {serial}" in out
    for step in ("NEW", "KEY_VALIDATION", "PRE_VALIDATION", "ISSUE", "FINALIZE_ISSUANCE"):
        assert f"  {step}" in out

    code, out, _ = run(capsys, "ca", "show", "--dir", str(ca_dir), serial)
    assert code == 0 and f"certificate {serial}" in out and "status   VALID" in out
    cert = x509.load_pem_x509_certificate(out[out.index("-----BEGIN") :].encode())
    assert f"{cert.serial_number:x}" == serial

    code, _, err = run(capsys, "ca", "show", "--dir", str(ca_dir), "ord-does-not-exist")
    assert code == 2 and "ord-does-not-exist" in err


def test_revoke_puts_the_serial_on_the_crl_that_crl_out_writes(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, err = issue(capsys, ca_dir, write_csr(tmp_path / "f.csr", f"fred@{DOMAIN}"))
    serial = issued_serial(err)
    code, out, _ = run(
        capsys, "ca", "revoke", "--dir", str(ca_dir), serial, "--reason", "keyCompromise",
        "--comment", "laptop stolen", "--operator", "rita",
    )  # fmt: skip
    assert code == 0 and f"revoked {serial} (keyCompromise)" in out

    code, out, _ = run(capsys, "ca", "show", "--dir", str(ca_dir), serial)
    assert "status   REVOKED" in out

    der_out, pem_out = tmp_path / "issuing.crl", tmp_path / "issuing-crl.pem"
    code, out, _ = run(capsys, "ca", "crl", "--dir", str(ca_dir), "--out", str(der_out))
    assert code == 0 and f"and {der_out}" in out
    # the file served at the CRL distribution point is the very CRL written to --out
    assert (ca_dir / "crl" / "issuing.crl").read_bytes() == der_out.read_bytes()
    crl = x509.load_der_x509_crl(der_out.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert run(capsys, "ca", "crl", "--dir", str(ca_dir), "--out", str(pem_out), "--pem")[0] == 0
    checked = subprocess.run(
        ["openssl", "crl", "-in", str(pem_out), "-CAfile", str(ca_dir / "issuing-ca.pem"),
         "-noout"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "verify OK" in checked.stdout + checked.stderr

    code, _, err = run(capsys, "ca", "revoke", "--dir", str(ca_dir), serial)
    assert code == 2 and serial in err

    root_crl = ca_dir / "crl" / "root.crl"
    before = root_crl.read_bytes()
    code, out, _ = run(capsys, "ca", "crl", "--dir", str(ca_dir), "--root")
    assert code == 0 and "CRL with 0 entries" in out and root_crl.read_bytes() != before
    checked = subprocess.run(
        ["openssl", "crl", "-in", str(root_crl), "-inform", "DER", "-CAfile",
         str(ca_dir / "root-ca.pem"), "-noout"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "verify OK" in checked.stdout + checked.stderr


def test_the_installed_cmcgate_script_runs_the_ca_commands(ca_dir: Path) -> None:
    done = subprocess.run(
        [str(CMCGATE), "ca", "audit", "verify", "--dir", str(ca_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.match(r"audit log intact: \d+ records", done.stdout)
