"""`cmcgate gateway run` with ``cmcgate.smime.*`` and an EC recipient imported by the CLI.

Issue 14: ``gateway certs import`` called an EC certificate "usable for encryption" but mail
left signed only.  Now it leaves encrypted (ECDH), with the cipher and RSA key transport
the properties file chose, and openssl reads it with the recipient's key.
"""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

from gateway.devservices import SmtpSink
from tests.gateway.certs import make_ca, openssl
from tests.gateway.test_service import (
    CMCGATE,
    SIGN_AND_ENCRYPT,
    GatewayProcess,
    configure_gateway,
    message,
)


def certs_import(config: Path, *args: str) -> str:
    done = subprocess.run(
        [CMCGATE, "gateway", "certs", "import", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_an_imported_ec_recipient_gets_aes_gcm_mail_that_openssl_decrypts(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    config, port = configure_gateway(tmp_path, smtp_sink, SIGN_AND_ENCRYPT)
    with config.open("a") as props:
        props.write(
            "cmcgate.smime.contentCipher=AES128-GCM\n"
            "cmcgate.smime.rsaKeyTransport=oaep\n"
            "cmcgate.smime.signatureFormat=opaque\n"
        )
    ca = make_ca("Service SMIME CA", kind="rsa")
    alice = ca.issue("alice@example.org", kind="rsa")
    bob = ca.issue("bob@partner.example", kind="ec")
    alice_cert, alice_key = alice.write(tmp_path)
    bob_cert, bob_key = bob.write(tmp_path)
    certs_import(config, "--email", "alice@example.org", "--cert", str(alice_cert),
                 "--key", str(alice_key))  # fmt: skip
    shown = certs_import(config, "--email", "bob@partner.example", "--cert", str(bob_cert))
    assert "usable for" in shown and "encryption" in shown
    gateway = GatewayProcess(config, port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.send_message(message()) == {}
    finally:
        gateway.stop()
    [received] = smtp_sink.received()
    assert b"smime-type=authEnveloped-data" in received.content
    dump = openssl("cms", "-cmsout", "-print", data=received.content)
    assert b"aes-128-gcm" in dump and b"dhSinglePass-stdDH-sha256kdf-scheme" in dump
    assert b"rsaesOaep" in dump  # alice's own copy: OAEP as configured
    for cert, key in ((bob_cert, bob_key), (alice_cert, alice_key)):
        inner = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, data=received.content)
        assert b"smime-type=signed-data" in inner  # opaque signing as configured
        content = openssl("cms", "-verify", "-CAfile", ca.write(tmp_path), data=inner)
        assert b"Hello Bob" in content
