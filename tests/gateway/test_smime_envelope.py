"""Encrypted mail as real clients make it, opened by the gateway (issue 14, items 1-5).

Every message here is made by ``openssl cms`` or by gpgsm, as a new user's client would make
it: BER with indefinite lengths (``-stream``, gpgsm), RSAES-OAEP (SHA-1 and SHA-2
parameters), AES-GCM AuthEnvelopedData, ECDH to EC keys (every KDF hash openssl offers, on
P-256 and P-384).  Signed inside, the way clients send it; decrypted and then verified.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms

from gateway.smime import (
    DecryptionFailed,
    NotForRecipient,
    UnsupportedAlgorithm,
    decrypt,
    smime_kind,
    verify,
)
from gateway.smime.mime import decode_body, split_message
from tests.gateway.certs import CA, Identity, make_ca, openssl
from tests.gateway.gpgsm import Gpgsm, gpgsm_missing_reason

BODY = b"Content-Type: text/plain; charset=utf-8\n\nHi Dave, the figures for Q3 are in.\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki-envelope")
    ca = make_ca("Envelope CA", "rsa")
    ca.write(directory)
    return ca, directory


def carol(ca: CA) -> Identity:
    """The external sender whose client signs and encrypts."""
    return ca.issue("carol@partner.example")


def openssl_mail(
    directory: Path, signer: Identity, recipient: Identity, *options: str, to: str = ""
) -> bytes:
    """``openssl cms -sign`` then ``openssl cms -encrypt -recip CERT OPTIONS``: an S/MIME mail
    (``-keyopt`` applies to the ``-recip`` before it)."""
    s_cert, s_key = signer.write(directory)
    r_cert, _ = recipient.write(directory)
    (directory / "body.txt").write_bytes(BODY)
    signed = openssl(
        "cms", "-sign", "-in", directory / "body.txt", "-signer", s_cert, "-inkey", s_key
    )
    return openssl(
        "cms", "-encrypt", "-recip", r_cert, *options,
        "-from", signer.email, "-to", to or recipient.email, "-subject", "Q3",
        data=signed,
    )  # fmt: skip


def der_of(message: bytes) -> bytes:
    entity = split_message(message)
    return decode_body(entity.body, entity.transfer_encoding)


def assert_opens_and_verifies(ca: CA, sealed: bytes, recipient: Identity, key=None) -> None:
    assert smime_kind(sealed) == "enveloped"
    plain = decrypt(sealed, key or recipient.key, recipient.cert)
    assert smime_kind(plain) == "signed"
    result = verify(plain, trust_anchors=[ca.cert])
    assert (result.status, result.signer_email) == ("valid", "carol@partner.example"), result
    assert b"the figures for Q3 are in.\r\n" in result.content_bytes
    assert split_message(plain).get("Subject") == "Q3"


# -- item 1: BER ------------------------------------------------------------------------------
@pytest.mark.parametrize("cipher", ["-aes128", "-aes256"])
def test_openssl_streamed_ber_mail_is_decrypted_and_verified(pki, cipher):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, "-stream", cipher)
    der = der_of(sealed)
    assert der[:2] == b"\x30\x80"  # indefinite length: BER, which pkcs7_decrypt_der refuses
    assert_opens_and_verifies(ca, sealed, dave)


def test_legacy_triple_des_mail_is_still_decrypted(pki):
    """Legacy clients still send Triple-DES; reading it costs nothing and loses nothing."""
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, "-des3")
    assert b"des-ede3-cbc" in openssl("cms", "-cmsout", "-print", data=sealed)
    assert_opens_and_verifies(ca, sealed, dave)


# -- item 2: RSAES-OAEP ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "keyopts",
    [
        (),  # OAEP defaults: SHA-1, MGF1-SHA-1 (parameters all absent)
        ("-keyopt", "rsa_oaep_md:sha256"),
        ("-keyopt", "rsa_oaep_md:sha384", "-keyopt", "rsa_mgf1_md:sha256"),
        ("-keyopt", "rsa_oaep_md:sha512", "-keyopt", "rsa_oaep_label:0001020304"),
    ],
    ids=["sha1", "sha256", "sha384-mgf1-sha256", "sha512-label"],
)
def test_openssl_rsa_oaep_mail_is_decrypted_and_verified(pki, keyopts):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, "-keyopt", "rsa_padding_mode:oaep", *keyopts)
    assert b"rsaesOaep" in openssl("cms", "-cmsout", "-print", data=sealed)
    assert_opens_and_verifies(ca, sealed, dave)


# -- item 3: AES-GCM AuthEnvelopedData --------------------------------------------------------
@pytest.mark.parametrize("cipher", ["-aes-128-gcm", "-aes-256-gcm"])
def test_openssl_aes_gcm_auth_enveloped_mail_is_decrypted_and_verified(pki, cipher):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, cipher)
    assert b"smime-type=authEnveloped-data" in sealed.split(b"\n\n")[0]
    assert_opens_and_verifies(ca, sealed, dave)


def test_a_tampered_gcm_message_is_refused_not_returned(pki):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    der = bytearray(der_of(openssl_mail(directory, carol(ca), dave, "-aes-128-gcm")))
    der[-40] ^= 1  # inside the ciphertext
    from gateway.smime.envelope import decrypt_der

    with pytest.raises(DecryptionFailed, match="tag does not verify"):
        decrypt_der(bytes(der), dave.key, dave.cert)


# -- item 4: ECDH -----------------------------------------------------------------------------
@pytest.mark.parametrize("curve", ["ec", "ec-p384"])
@pytest.mark.parametrize(
    "kdf,cipher",
    [("", "-aes256"), ("sha1", "-aes128"), ("sha256", "-aes256"), ("sha384", "-aes128")]
    + [("sha512", "-aes256"), ("sha224", "-aes-128-gcm")],
    ids=["default", "sha1", "sha256", "sha384", "sha512", "sha224-gcm"],
)
def test_openssl_ecdh_mail_to_an_ec_key_is_decrypted_and_verified(pki, curve, kdf, cipher):
    ca, directory = pki
    dave = ca.issue("dave@example.org", kind=curve)
    options = ["-keyopt", f"ecdh_kdf_md:{kdf}"] if kdf else []
    sealed = openssl_mail(directory, carol(ca), dave, cipher, *options)
    dump = openssl("cms", "-cmsout", "-print", data=sealed)
    assert b"dhSinglePass-stdDH-" in dump and b"wrap" in dump
    assert_opens_and_verifies(ca, sealed, dave)


def test_openssl_streamed_ecdh_mail_is_decrypted_with_the_key_on_softhsm(pki, softhsm_backend):
    """ECDH runs on the token (CKM_ECDH1_DERIVE): the key never leaves the HSM."""
    ca, directory = pki
    dave = ca.issue("dave@example.org", kind="ec")
    handle = softhsm_backend.import_key("user:dave@example.org:1", dave.key)
    loaded = softhsm_backend.load("user:dave@example.org:1")
    for cipher in ("-aes256", "-aes-256-gcm"):
        sealed = openssl_mail(
            directory, carol(ca), dave, "-stream", cipher, "-keyopt", "ecdh_kdf_md:sha256"
        )
        assert_opens_and_verifies(ca, sealed, dave, key=loaded)
    assert handle.backend_kind == "pkcs11"


# -- gpgsm (Kleopatra, KMail) -----------------------------------------------------------------
@pytest.fixture
def gpgsm(pki, tmp_path: Path):
    reason = gpgsm_missing_reason()
    if reason:
        pytest.skip(reason)
    ca, _ = pki
    home = Gpgsm(tmp_path / "gnupg", [ca.cert])
    yield home
    home.close()


def gpgsm_mail(gpgsm: Gpgsm, signer: Identity, recipient: Identity, *extra: str) -> bytes:
    """What KMail sends: a multipart/signed made by gpgsm, encrypted by gpgsm, in MIME."""
    import base64

    gpgsm.import_identity(signer)
    gpgsm.import_certificate(recipient.cert)
    part = BODY.replace(b"\n", b"\r\n")
    signature = gpgsm.sign_detached(part, signer.cert)
    boundary = b"kmail-boundary-42"
    signed = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' micalg=sha-256; boundary="' + boundary + b'"\r\n\r\n'
        b"--" + boundary + b"\r\n" + part + b"\r\n--" + boundary + b"\r\n"
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(signature).replace(b"\n", b"\r\n")
        + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    der = gpgsm.encrypt(signed, recipient.cert)
    return (
        b"From: carol@partner.example\r\nTo: " + recipient.email.encode() + b"\r\n"
        b"Subject: Q3\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(der).replace(b"\n", b"\r\n")
    )  # fmt: skip


def test_gpgsm_signed_and_encrypted_ber_mail_is_decrypted_and_verified(pki, gpgsm):
    ca, _ = pki
    dave = ca.issue("dave@example.org")
    sealed = gpgsm_mail(gpgsm, carol(ca), dave)
    assert der_of(sealed)[:2] == b"\x30\x80"  # gpgsm writes BER, indefinite lengths
    assert b"aes-128-cbc" in openssl("cms", "-cmsout", "-print", data=sealed)
    assert_opens_and_verifies(ca, sealed, dave)


def test_gpgsm_ecdh_mail_is_decrypted_and_verified(pki, gpgsm):
    if not gpgsm.supports_ecdh():
        pytest.skip(f"gpgsm {gpgsm.version} has no ECDH for CMS (GnuPG 2.3 added it)")
    ca, _ = pki
    dave = ca.issue("dave@example.org", kind="ec")
    assert_opens_and_verifies(ca, gpgsm_mail(gpgsm, carol(ca), dave), dave)


# -- item 5: why a message stays closed --------------------------------------------------------
def test_a_message_for_somebody_else_names_whom_it_is_for(pki):
    ca, directory = pki
    dave, erin = ca.issue("dave@example.org"), ca.issue("erin@example.org", kind="ec")
    sealed = openssl_mail(directory, carol(ca), erin, "-aes256")
    with pytest.raises(NotForRecipient) as caught:
        decrypt(sealed, dave.key, dave.cert)
    message = str(caught.value)
    assert message.startswith("no key for recipient issuer ") and "Envelope CA" in message
    assert f"serial {erin.cert.serial_number:x}" in message


def test_an_unsupported_content_cipher_is_named(pki):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, "-camellia256")
    with pytest.raises(UnsupportedAlgorithm, match="Camellia-256-CBC"):
        decrypt(sealed, dave.key, dave.cert)


def test_garbage_inside_the_mime_wrapper_is_a_decryption_failure_not_a_crash(pki):
    ca, directory = pki
    dave = ca.issue("dave@example.org")
    sealed = openssl_mail(directory, carol(ca), dave, "-aes256")
    der = der_of(sealed)
    info = asn1_cms.ContentInfo.load(der)
    assert info["content"]["version"].native == "v0"
    import base64

    head = sealed.split(b"\n\n")[0]
    for broken in (der[:40], der[:-30], b"\x30\x80" + der[2:60], bytes(64)):
        mail = head + b"\n\n" + base64.encodebytes(broken)
        with pytest.raises(DecryptionFailed):
            decrypt(mail, dave.key, dave.cert)
