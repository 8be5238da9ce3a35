"""`make demo` runs the main job end to end; its artefacts pass openssl on their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ca.keys.softhsm import softhsm_missing_reason
from gateway.devservices import slapd_available


@pytest.mark.skipif(
    softhsm_missing_reason() is not None or not slapd_available(),
    reason="SoftHSM2 and slapd are needed (run `make deps`)",
)
def test_demo_delivers_a_message_that_openssl_decrypts_with_bobs_key_and_verifies(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo-out"
    script = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    for name in ("delivered.eml", "bob.key.pem", "bob.cert.pem", "ca-chain.pem", "alice.cert.pem"):
        assert (out / name).is_file(), name
    # Re-check the artefacts here, independently of what the demo printed.
    decrypted = subprocess.run(
        ["openssl", "cms", "-decrypt", "-in", str(out / "delivered.eml"),
         "-recip", str(out / "bob.cert.pem"), "-inkey", str(out / "bob.key.pem")],
        capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    verified = subprocess.run(
        ["openssl", "cms", "-verify", "-CAfile", str(out / "ca-chain.pem"),
         "-purpose", "smimesign"],
        input=decrypted, capture_output=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert b"Q3" in verified.stdout or b"Zahlen" in verified.stdout
    chain = subprocess.run(
        ["openssl", "verify", "-purpose", "smimesign", "-CAfile", str(out / "ca-chain.pem"),
         str(out / "alice.cert.pem")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert chain.returncode == 0, chain.stderr
