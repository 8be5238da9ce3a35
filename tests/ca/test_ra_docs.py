"""docs/ra-api.md is a shell session a newcomer pastes: every ``sh`` block, in order, runs as
it is against a CA made by ``cmcgate ca init`` and ``ca serve --ra-listen``, with curl, jq and
openssl, on the documented ports (8443, 8444, 8480)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ra-api.md"
BIN = Path(sys.executable).parent
PORTS = (8443, 8444, 8480)


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("curl", "jq", "openssl")),
    reason="curl, jq and openssl are needed (scripts/install-deps.sh installs them)",
)
def test_every_shell_block_of_ra_api_md_runs_as_pasted(tmp_path: Path) -> None:
    busy = [port for port in PORTS if _in_use(port)]
    if busy:
        pytest.skip(f"the documented ports {busy} are in use on this machine")
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 8, "the session is made of the document's sh blocks"
    script = "\n".join(blocks)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    env.pop("CMCGATE_CA_DIR", None)
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None or _in_use(8444):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    assert process.returncode == 0, output

    order = (tmp_path / "order.json").read_text()
    assert '"status": "ISSUED"' in order or '"status":"ISSUED"' in order
    alice = x509.load_pem_x509_certificate((tmp_path / "alice.pem").read_bytes())
    serial = f"{alice.serial_number:X}"
    # the revocation reached the CRL the last block printed
    assert re.search(rf"Serial Number: 0*{serial}\b", output, re.I), output[-2000:]
    assert "badIdentity" in output  # the refused order of the Errors section
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca" / "ca-chain.pem"),
         "-purpose", "smimesign", str(tmp_path / "alice.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
