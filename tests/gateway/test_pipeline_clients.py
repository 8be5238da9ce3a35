"""The pipeline with mail from real clients and for EC recipients (issue 14, items 1-7).

Inbound: openssl- and gpgsm-made mail of every kind arrives decrypted with a ``valid``
verdict; what cannot be opened is delivered as it is with the reason in the log.  Outbound:
EC recipients get encrypted mail openssl reads; the administrator's choices (content
cipher, RSA key transport, opaque signing) are what leaves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.smime import ContentCipher, RsaKeyTransport
from gateway.pipeline import PipelineSettings, SmimePipeline
from gateway.policy import EncryptMode, MissingAction, Policy, Rule, Scope
from gateway.smime import decrypt, encrypt, smime_kind, verify
from gateway.smime.mime import split_message
from gateway.smtp.message import Transaction
from tests.gateway.certs import CA, Identity, make_ca, openssl
from tests.gateway.gpgsm import gpgsm_missing_reason
from tests.gateway.test_end_to_end_smime import (  # noqa: F401 - make_gateway is a fixture
    INTERNAL,
    PLAIN,
    MemoryCertificates,
    make_gateway,
)
from tests.gateway.test_smime_envelope import carol, gpgsm, gpgsm_mail, openssl_mail  # noqa: F401

CA_ = make_ca("Clients CA", "rsa")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki-clients")
    CA_.write(directory)
    return CA_, directory


def pipeline(identities: list[Identity], policy: Policy | None = None, **options) -> SmimePipeline:
    settings = PipelineSettings(INTERNAL, policy or Policy(), trust_anchors=(CA_.cert,), **options)
    return SmimePipeline(settings, MemoryCertificates(identities))


MANDATORY = Policy(
    rules=(
        Rule(
            Scope.RECIPIENT,
            "partner.example",
            encrypt=EncryptMode.MANDATORY,
            missing=MissingAction.TEMPFAIL,
        ),
    )
)


def mail(sender: str, recipient: str, content: bytes) -> Transaction:
    return Transaction("Q14", "127.0.0.1", sender, (recipient,), content)


async def arrives_decrypted_and_valid(sealed: bytes, dave: Identity) -> None:
    [copy] = await pipeline([dave])(mail("carol@partner.example", dave.email, sealed))
    assert copy.actions == ("inbound", "decrypt", "verify-valid")
    assert copy.content.startswith(b"X-Cmcgate-Signature: valid; signer=carol@partner.example\r\n")
    assert b"the figures for Q3 are in." in copy.content


# -- inbound: items 1-4 ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,options",
    [
        ("rsa", ("-stream", "-aes256")),  # item 1: BER
        ("rsa", ("-keyopt", "rsa_padding_mode:oaep")),  # item 2: OAEP, SHA-1 defaults
        ("rsa", ("-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256")),
        ("rsa", ("-aes-128-gcm",)),  # item 3: AuthEnvelopedData
        ("ec", ("-aes256",)),  # item 4: ECDH, openssl's default sha1kdf
        ("ec-p384", ("-stream", "-aes-256-gcm", "-keyopt", "ecdh_kdf_md:sha384")),
    ],
    ids=["ber", "oaep-sha1", "oaep-sha256", "gcm", "ecdh", "ecdh-p384-ber-gcm"],
)
async def test_openssl_mail_arrives_decrypted_and_verified(pki, kind, options):
    ca, directory = pki
    dave = ca.issue("dave@example.org", kind=kind)
    await arrives_decrypted_and_valid(openssl_mail(directory, carol(ca), dave, *options), dave)


async def test_gpgsm_mail_arrives_decrypted_and_verified(pki, gpgsm):  # noqa: F811
    ca, _ = pki
    dave = ca.issue("dave@example.org")
    await arrives_decrypted_and_valid(gpgsm_mail(gpgsm, carol(ca), dave), dave)


# -- inbound: item 5 ---------------------------------------------------------------------------
async def test_each_undecryptable_message_is_delivered_with_its_reason_logged(pki, caplog):
    ca, directory = pki
    dave, erin = ca.issue("dave@example.org"), ca.issue("erin@example.org", kind="ec")
    gateway = pipeline([dave])
    cases = [
        (openssl_mail(directory, carol(ca), erin, "-aes256", to="dave@example.org"),
         "dave@example.org", "no key for recipient issuer "),
        (openssl_mail(directory, carol(ca), dave, "-camellia256"),
         "dave@example.org", "unsupported content encryption algorithm Camellia-256-CBC"),
        (openssl_mail(directory, carol(ca), erin, "-aes256"),
         "erin@example.org", "the gateway holds no decryption key for erin@example.org"),
    ]  # fmt: skip
    for sealed, recipient, reason in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cmcgate.gateway.pipeline"):
            [copy] = await gateway(mail("carol@partner.example", recipient, sealed))
        assert copy.actions == ("inbound", "not-decrypted")
        assert split_message(copy.content).body == split_message(sealed).body  # as it came
        [record] = caplog.records
        line = record.getMessage()
        assert line.startswith(f"queue_id=Q14 not decrypted for {recipient}: "), line
        assert reason in line, line


# -- outbound: item 6 --------------------------------------------------------------------------
async def test_mail_to_an_ec_recipient_is_encrypted_and_openssl_decrypts_it(pki):
    ca, directory = pki
    alice = ca.issue("alice@example.org")
    frank = ca.issue("frank@partner.example", kind="ec")
    for policy in (Policy(), MANDATORY):
        gateway = pipeline([alice, frank], policy)
        [copy] = await gateway(mail("alice@example.org", "frank@partner.example", PLAIN))
        assert copy.actions == ("outbound", "sign", "encrypt")
        cert, key = frank.write(directory)
        signed = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, data=copy.content)
        content = openssl("cms", "-verify", "-CAfile", ca.write(directory), data=signed)
        assert b"the numbers are attached." in content


async def test_an_internal_user_with_an_ec_key_reads_mail_and_their_sent_copy(pki):
    ca, _ = pki
    alice = ca.issue("alice@example.org", kind="ec")
    bob = ca.issue("bob@partner.example")
    gateway = pipeline([alice, bob])
    [out] = await gateway(mail("alice@example.org", "bob@partner.example", PLAIN))
    assert out.actions == ("outbound", "sign", "encrypt")
    own_copy = decrypt(out.content, alice.key, alice.cert)  # encrypted to the sender too
    assert verify(own_copy, trust_anchors=[ca.cert]).status == "valid"
    sealed = encrypt(PLAIN.replace(b"Alice <alice@example.org>", b"bob@partner.example"),
                     [alice.cert])  # fmt: skip
    [into] = await gateway(mail("bob@partner.example", "alice@example.org", sealed))
    assert into.actions == ("inbound", "decrypt")


# -- outbound: item 7 --------------------------------------------------------------------------
@pytest.mark.parametrize("cipher", list(ContentCipher))
async def test_the_chosen_cipher_key_transport_and_signature_format_leave(pki, cipher):
    ca, directory = pki
    alice, bob = ca.issue("alice@example.org"), ca.issue("bob@partner.example")
    gateway = pipeline(
        [alice, bob],
        MANDATORY,  # the plaintext guard knows AuthEnvelopedData is encrypted too
        content_cipher=cipher,
        rsa_transport=RsaKeyTransport.OAEP,
        detached_signature=False,
    )
    [copy] = await gateway(mail("alice@example.org", "bob@partner.example", PLAIN))
    head = split_message(copy.content).get("Content-Type") or ""
    assert ("authEnveloped-data" if cipher.is_gcm else "smime-type=enveloped-data") in head
    dump = openssl("cms", "-cmsout", "-print", data=copy.content)
    assert b"rsaesOaep" in dump and cipher.value.replace("aes", "aes-").encode() in dump
    cert, key = bob.write(directory)
    inner = openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, data=copy.content)
    assert smime_kind(inner) == "opaque-signed"
    assert b"the numbers are attached." in openssl(
        "cms", "-verify", "-CAfile", ca.write(directory), data=inner
    )


# -- the real stores, the key on SoftHSM ----------------------------------------------------------
async def test_ecdh_mail_is_opened_with_the_users_key_on_the_token(pki, softhsm_backend, tmp_path):
    from gateway.certs.adapter import StoreCertificates
    from gateway.certs.keystore import KeyStore
    from gateway.certs.store import CertStore

    ca, directory = pki
    dave = ca.issue("dave@example.org", kind="ec")
    keys = KeyStore(softhsm_backend)
    with CertStore.open(f"sqlite:///{tmp_path / 'gw.db'}") as store:
        label = keys.import_for_certificate(dave.cert, dave.email, dave.key)
        store.add(dave.cert, "imported", key_label=label)
        store.add_chain([ca.cert])
        settings = PipelineSettings(INTERNAL, Policy(), trust_anchors=(ca.cert,))
        gateway = SmimePipeline(settings, StoreCertificates(store, keys))
        sealed = openssl_mail(directory, carol(ca), dave, "-stream", "-aes-128-gcm")
        [copy] = await gateway(mail("carol@partner.example", dave.email, sealed))
    assert copy.actions == ("inbound", "decrypt", "verify-valid")
    assert b"the figures for Q3 are in." in copy.content


# -- over SMTP ----------------------------------------------------------------------------------
def test_client_mail_sent_over_smtp_arrives_decrypted_and_verified(
    pki,
    make_gateway,  # noqa: F811
    smtp_sink,
    request,
):
    ca, directory = pki
    dave = ca.issue("dave@example.org", kind="ec")
    erin = ca.issue("erin@example.org")
    gateway = make_gateway(MemoryCertificates([dave, erin]))
    mails = [(dave, openssl_mail(directory, carol(ca), dave, "-stream", "-aes-128-gcm"))]
    if gpgsm_missing_reason() is None:
        home = request.getfixturevalue("gpgsm")
        mails.append((erin, gpgsm_mail(home, carol(ca), erin)))
    for who, sealed in mails:
        assert gateway.send("carol@partner.example", [who.email], sealed) == {}
    received = smtp_sink.received()
    assert [r.rcpt_tos for r in received] == [(who.email,) for who, _ in mails]
    for message in received:
        assert message.content.startswith(
            b"X-Cmcgate-Signature: valid; signer=carol@partner.example\r\n"
        )
        assert b"the figures for Q3 are in." in message.content
