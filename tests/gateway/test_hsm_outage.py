"""A running gateway whose users' keys live in an HSM (SoftHSM2) survives an HSM outage.

The outage is real, done by another process with pkcs11-tool while the gateway runs: the
sender's key object is deleted (mail is refused with 4xx meanwhile, never sent unsigned) and
restored from the same key material, which gives it a new object handle on the token.  The
gateway signs again without a restart.
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.devservices import SmtpSink, free_port
from tests.fixtures.softhsm import SoftHsmToken, write_private_key
from tests.gateway.certs import make_ca, openssl
from tests.gateway.test_service import CMCGATE, GatewayProcess, message

ALICE_LABEL = "user:alice@example.org:1"


def _write_config(path: Path, port: int, sink_port: int, token: SoftHsmToken) -> None:
    tmp = path.parent
    path.write_text(
        f"cmcgate.gateway.listen=127.0.0.1:{port}\n"
        f"cmcgate.gateway.nextHop=127.0.0.1:{sink_port}\n"
        "cmcgate.gateway.nextHopTls=off\n"
        "cmcgate.gateway.internalDomains=example.org\n"
        "cmcgate.policy.sign=always\n"
        "cmcgate.policy.encrypt=never\n"
        f"cmcgate.store.dsn=sqlite:///{tmp / 'gateway.db'}\n"
        "cmcgate.keys.backend=pkcs11\n"
        f"cmcgate.keys.module={token.module_path}\n"
        f"cmcgate.keys.tokenLabel={token.token_label}\n"
        f"cmcgate.keys.pinFile={token.pin_file}\n"
        f"cmcgate.gateway.stateDir={tmp / 'state'}\n"
    )


@pytest.fixture
def hsm_gateway(
    tmp_path: Path, smtp_sink: SmtpSink, softhsm_token: SoftHsmToken
) -> Iterator[tuple[GatewayProcess, Path, Path]]:
    """A gateway process with alice's key on the token; (gateway, CA file, alice's key)."""
    port = free_port()
    config = tmp_path / "gateway.properties"
    _write_config(config, port, smtp_sink.port, softhsm_token)
    ca = make_ca("HSM Outage Test CA", kind="rsa")
    alice_cert, alice_key = ca.issue("alice@example.org", kind="rsa").write(tmp_path)
    done = subprocess.run(
        [CMCGATE, "gateway", "certs", "import", "--config", str(config),
         "--email", "alice@example.org", "--cert", str(alice_cert), "--key", str(alice_key)],
        capture_output=True, text=True, timeout=60, env=softhsm_token.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    listed = softhsm_token.pkcs11_tool("--list-objects", "--type", "privkey")
    assert ALICE_LABEL in listed.stdout, listed.stdout
    gateway = GatewayProcess(config, port).start()
    try:
        yield gateway, ca.write(tmp_path), alice_key
    finally:
        gateway.stop()


def _send(port: int) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        return client.send_message(message())


def test_mail_is_signed_again_after_an_hsm_outage_without_restarting_the_gateway(
    hsm_gateway, smtp_sink, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    gateway, ca_file, alice_key = hsm_gateway
    assert _send(gateway.port) == {}
    openssl("cms", "-verify", "-CAfile", ca_file, data=smtp_sink.received()[-1].content)

    gone = softhsm_token.pkcs11_tool("--delete-object", "--type", "privkey", "--label", ALICE_LABEL)
    assert gone.returncode == 0, gone.stderr
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(gateway.port)
    assert refused.value.smtp_code == 451, refused.value
    assert len(smtp_sink.received()) == 1, "nothing may leave unsigned during the outage"

    key = serialization.load_pem_private_key(alice_key.read_bytes(), None)
    write_private_key(softhsm_token, ALICE_LABEL, key, tmp_path)

    assert _send(gateway.port) == {}
    assert len(smtp_sink.received()) == 2
    openssl("cms", "-verify", "-CAfile", ca_file, data=smtp_sink.received()[-1].content)
