"""The shipped examples and the documented first steps work as a newcomer pastes them.

* docs/ca.md "Create a CA": the shell block, run as is (only /etc and /var/lib moved into a
  temporary root, and a smaller key for speed), creates a CA on a SoftHSM token;
* docs/ca.md "Try it" with config/examples/bundled-ca.properties: `ca init` defaults, an
  access certificate, `ca serve`, `cmc enroll` -> a certificate (the file used to name an
  account, product, issuer and root file that `ca init` never creates: badIdentity);
* config/examples/gateway-local.properties keeps state, store and keys outside the source
  tree, and the documented sink + gateway deliver a message.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from config.properties import load
from gateway.devservices import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CMCGATE = str(BIN / "cmcgate")
EXAMPLES = ROOT / "config" / "examples"


def _block(doc: Path, heading: str, lang: str = "sh", index: int = 0) -> str:
    """The ``index``-th fenced ``lang`` block under ``heading`` in ``doc``."""
    text = doc.read_text()
    section = text[text.index(heading) :]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    return str(blocks[index])


@pytest.mark.skipif(shutil.which("softhsm2-util") is None, reason="softhsm2 not installed")
def test_the_create_a_ca_block_of_ca_md_runs_as_pasted(tmp_path: Path) -> None:
    script = _block(ROOT / "docs" / "ca.md", "## Create a CA")
    root = tmp_path / "root"
    script = (
        script.replace("/etc/cmcgate", f"{root}/etc/cmcgate")
        .replace("/var/lib/cmcgate", f"{root}/var/lib/cmcgate")
        .replace("--key-type rsa3072", "--key-type rsa2048")
    )
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ca = root / "var/lib/cmcgate/ca"
    assert (ca / "ca.yaml").is_file() and (ca / "root-ca.pem").is_file()
    assert "backend: pkcs11" in (ca / "ca.yaml").read_text()


@pytest.fixture
def bundled_ca(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The docs/ca.md "Try it" steps up to a running `ca serve` (ports: free ones)."""
    work = tmp_path / "try"
    work.mkdir()
    shutil.copy(EXAMPLES / "bundled-ca.properties", work)
    run = {"cwd": work, "capture_output": True, "text": True, "timeout": 300}
    init = subprocess.run([CMCGATE, "ca", "init", "--dir", "ca", "--key-type", "rsa2048"], **run)
    assert init.returncode == 0, init.stderr
    (work / "ra.pass").write_text("ra-secret\n")
    access = subprocess.run(
        [CMCGATE, "ca", "access-cert", "--dir", "ca", "--account", "totemoag.ra",
         "--out", "ca/ra-access.p12", "--password-file", "ra.pass"],
        **run,
    )  # fmt: skip
    assert access.returncode == 0, access.stderr
    https, http = free_port(), free_port()
    serve = subprocess.Popen(
        [CMCGATE, "ca", "serve", "--dir", "ca", "--listen", f"127.0.0.1:{https}",
         "--http-listen", f"127.0.0.1:{http}"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", https, 120, serve)
        yield work, https
    finally:
        serve.terminate()
        serve.wait(30)


@pytest.mark.slow
def test_bundled_ca_properties_enrol_at_a_ca_made_by_ca_init_defaults(
    bundled_ca: tuple[Path, int],
) -> None:
    work, https = bundled_ca
    properties = work / "bundled-ca.properties"
    # the one value a test has to change: the port (8443 may be taken here)
    properties.write_text(properties.read_text().replace("serverPort=8443", f"serverPort={https}"))
    enrolled = subprocess.run(
        [CMCGATE, "cmc", "enroll", "--config", "bundled-ca.properties",
         "--email", "alice@example.com"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CMCGATE_RA_P12_PASSWORD": "ra-secret"},
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    cert = x509.load_pem_x509_certificate((work / "alice@example.com.cert.pem").read_bytes())
    issuer = x509.load_pem_x509_certificate((work / "ca" / "issuing-ca.pem").read_bytes())
    assert cert.issuer == issuer.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]


def test_gateway_local_properties_keep_state_store_and_keys_outside_the_tree() -> None:
    config = load(EXAMPLES / "gateway-local.properties")
    assert config.gateway is not None and config.keys is not None and config.store is not None
    database = Path(config.store.dsn.removeprefix("sqlite:///"))
    for path in (config.gateway.state_dir, config.keys.directory, database):
        assert path is not None and path.is_absolute(), path
        assert not path.resolve().is_relative_to(ROOT), f"{path} is inside the checkout"


@pytest.mark.slow
def test_the_documented_sink_and_local_gateway_deliver_a_message(tmp_path: Path) -> None:
    """docs/configuration.md "Trying it locally", with free ports and a private /tmp dir."""
    sink_port, gateway_port = free_port(), free_port()
    text = (EXAMPLES / "gateway-local.properties").read_text()
    text = text.replace("127.0.0.1:10025", f"127.0.0.1:{gateway_port}")
    text = text.replace("127.0.0.1:10026", f"127.0.0.1:{sink_port}")
    text = text.replace("/tmp/cmcgate-local", str(tmp_path / "local"))
    properties = tmp_path / "gateway-local.properties"
    properties.write_text(text)
    commands = _block(ROOT / "docs" / "configuration.md", "## Trying it locally")
    sink_cmd = next(line for line in commands.splitlines() if "-m aiosmtpd" in line)
    assert sink_cmd.startswith(".venv/bin/python -m aiosmtpd -n -l 127.0.0.1:10026")
    argv = [sys.executable, *sink_cmd.split()[1:]]
    argv = [a.replace("127.0.0.1:10026", f"127.0.0.1:{sink_port}") for a in argv]
    sink = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    gateway = subprocess.Popen(
        [CMCGATE, "gateway", "run", "--config", str(properties)],
        env={**os.environ, "CMCGATE_KEYS_PASSPHRASE": "try-it-out"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", sink_port, 60, sink)
        wait_for_port("127.0.0.1", gateway_port, 120, gateway)
        with smtplib.SMTP("127.0.0.1", gateway_port, timeout=60) as smtp:
            refused = smtp.sendmail(
                "ann@partner.example", ["bob@example.org"], b"Subject: hi\r\n\r\nhello\r\n"
            )
        assert refused == {}
    finally:
        gateway.terminate()
        gateway.wait(30)
        time.sleep(0.2)
        sink.terminate()
        printed, _ = sink.communicate(timeout=30)
    assert "Subject: hi" in printed and "hello" in printed
    assert (tmp_path / "local" / "gateway.db").is_file()
    assert sorted(p.name for p in EXAMPLES.iterdir()) == [
        "bundled-ca.properties",
        "gateway-local.properties",
        "swisssign.properties",
    ]
