"""The gateway's own EnvelopedData / AuthEnvelopedData, judged by openssl and gpgsm (items 6, 7).

EC recipients get the content key by ECDH (RFC 5753), RSA recipients by PKCS#1 v1.5 (the
default) or RSAES-OAEP; the content is AES-CBC (EnvelopedData) or AES-GCM (AuthEnvelopedData).
Whatever is chosen, ``openssl cms -decrypt`` with each recipient's key must read it, and the
gateway's own inbound side must read it back (hypothesis round trips).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.smime import ContentCipher, RsaKeyTransport
from gateway.smime import (
    NotForRecipient,
    decrypt,
    encrypt,
    sign_then_encrypt,
    smime_kind,
    verify,
)
from gateway.smime.encrypt import envelope_bytes
from gateway.smime.envelope import decrypt_der
from gateway.smime.sign import inner_entity
from tests.gateway.certs import Identity, make_ca, openssl
from tests.gateway.gpgsm import Gpgsm, gpgsm_missing_reason
from tests.gateway.test_smime_outbound import PLAIN

CA_ = make_ca("Seal CA", "rsa")
KINDS = ("rsa", "ec", "ec-p384")


def person(name: str, kind: str) -> Identity:
    return CA_.issue(f"{name}@example.net", kind=kind)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki-seal")
    CA_.write(path)
    return path


def openssl_decrypt(directory: Path, who: Identity, message: bytes) -> bytes:
    cert, key = who.write(directory)
    path = directory / "sealed.eml"
    path.write_bytes(message)
    return openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", path)


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(RsaKeyTransport))
def test_openssl_decrypts_every_choice_for_rsa_and_ec_recipients(directory, cipher, transport):
    readers = [person("bob", "rsa"), person("erin", "ec"), person("frank", "ec-p384")]
    sealed = encrypt(PLAIN, [r.cert for r in readers], algorithm=cipher, rsa_transport=transport)
    assert smime_kind(sealed) == "enveloped"
    smime_type = "authEnveloped-data" if cipher.is_gcm else "enveloped-data"
    assert f"smime-type={smime_type};".encode() in sealed
    dump = openssl("cms", "-cmsout", "-print", data=sealed)
    assert cipher.value.replace("aes", "aes-").encode() in dump
    assert (b"rsaesOaep" if transport is RsaKeyTransport.OAEP else b"rsaEncryption") in dump
    for reader in readers:
        assert openssl_decrypt(directory, reader, sealed) == inner_entity(PLAIN)[1]
        assert decrypt(sealed, reader.key, reader.cert).endswith(b"attached.\r\n")


def test_an_ec_recipients_key_agreement_is_laid_out_as_rfc_5753_says():
    erin, frank, bob = person("erin", "ec"), person("frank", "ec-p384"), person("bob", "rsa")
    for cipher, wrap in ((ContentCipher.AES256_CBC, "aes256_wrap"), (ContentCipher.AES128_GCM,
                                                                      "aes128_wrap")):  # fmt: skip
        der = envelope_bytes(b"x" * 100, [bob.cert, erin.cert, frank.cert], algorithm=cipher)
        info = asn1_cms.ContentInfo.load(der, strict=True)
        assert info.dump(force=True) == der  # DER as it stands
        enveloped = info["content"]
        assert enveloped["version"].native == ("v0" if cipher.is_gcm else "v2")  # RFC 5652 §6.1
        kinds = sorted(r.name for r in enveloped["recipient_infos"])
        assert kinds == ["kari", "kari", "ktri"]
        schemes = set()
        for recipient in enveloped["recipient_infos"]:
            if recipient.name != "kari":
                continue
            kari = recipient.chosen
            assert kari["version"].native == "v3" and kari["ukm"].native is None
            assert kari["originator"].name == "originator_key"  # ephemeral-static
            algorithm = kari["key_encryption_algorithm"]
            schemes.add(algorithm["algorithm"].dotted)
            params = asn1_cms.KeyEncryptionAlgorithm.load(algorithm["parameters"].dump())
            assert params["algorithm"].native == wrap
            [key] = kari["recipient_encrypted_keys"]
            assert key["rid"].name == "issuer_and_serial_number"
        # dhSinglePass-stdDH-sha256kdf-scheme for P-256, -sha384kdf- for P-384
        assert schemes == {"1.3.132.1.11.1", "1.3.132.1.11.2"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.binary(max_size=3000),
    cipher=st.sampled_from(list(ContentCipher)),
    transport=st.sampled_from(list(RsaKeyTransport)),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
)
def test_whatever_is_sealed_opens_for_every_recipient_and_nobody_else(
    content, cipher, transport, kinds
):
    readers = [person(f"r{i}", kind) for i, kind in enumerate(kinds)]
    outsider = person("outsider", kinds[0])
    der = envelope_bytes(content, [r.cert for r in readers], algorithm=cipher,
                         rsa_transport=transport)  # fmt: skip
    for reader in readers:
        assert decrypt_der(der, reader.key, reader.cert) == content
    with pytest.raises(NotForRecipient):
        decrypt_der(der, outsider.key, outsider.cert)


def test_signed_and_sealed_for_an_ec_recipient_verifies_after_openssl_decrypts(directory):
    alice, erin = CA_.issue("alice@example.org", kind="ec"), person("erin", "ec")
    sealed = sign_then_encrypt(PLAIN, alice.key, alice.cert, alice.chain, [erin.cert],
                               algorithm=ContentCipher.AES128_GCM)  # fmt: skip
    signed = openssl_decrypt(directory, erin, sealed)
    content = openssl("cms", "-verify", "-CAfile", CA_.write(directory), data=signed)
    assert content == inner_entity(PLAIN)[1]
    assert verify(decrypt(sealed, erin.key, erin.cert), trust_anchors=[CA_.cert]).status == "valid"


# -- gpgsm reads what the gateway sends by default ----------------------------------------------
@pytest.fixture
def gpgsm(tmp_path: Path):
    reason = gpgsm_missing_reason()
    if reason:
        pytest.skip(reason)
    home = Gpgsm(tmp_path / "gnupg", [CA_.cert])
    yield home
    home.close()


@pytest.mark.parametrize("cipher", [ContentCipher.AES256_CBC, ContentCipher.AES128_CBC])
def test_gpgsm_decrypts_the_default_output(gpgsm, cipher):
    bob = person("bob", "rsa")
    gpgsm.import_identity(bob)
    der = envelope_bytes(b"Content-Type: text/plain\r\n\r\nfor gpgsm\r\n", [bob.cert],
                         algorithm=cipher)  # fmt: skip
    assert gpgsm.decrypt(der) == b"Content-Type: text/plain\r\n\r\nfor gpgsm\r\n"


def test_gpgsm_decrypts_for_an_ec_recipient(gpgsm):
    if not gpgsm.supports_ecdh():
        pytest.skip(f"gpgsm {gpgsm.version} has no ECDH for CMS (GnuPG 2.3 added it)")
    erin = person("erin", "ec")
    gpgsm.import_identity(erin)
    der = envelope_bytes(b"for gpgsm", [erin.cert])
    assert gpgsm.decrypt(der) == b"for gpgsm"
