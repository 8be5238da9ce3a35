"""Opening CMS EnvelopedData and AuthEnvelopedData as real clients send them (RFC 5652 §6, 5083).

cryptography's ``pkcs7_decrypt_der`` reads DER EnvelopedData with RSA PKCS#1 v1.5 and AES-CBC
only; mail clients also send BER (gpgsm, ``openssl cms -stream``: indefinite lengths, the
ciphertext in chunks), RSAES-OAEP (RFC 8551 §2.3), ECDH key agreement (RFC 5753) and AES-GCM
AuthEnvelopedData (RFC 5084; RFC 8551 §2.7 makes AES-128-GCM a receiver's MUST).  So the
structure is walked here: the outer layers by offsets (:mod:`.ber`, the ciphertext is never
copied before it is decrypted), the recipient infos with asn1crypto, every operation with
cryptography's primitives; the private key may be an HSM handle (RSA decryption and ECDH
run on the token).

Failures say why, for the log (a message the gateway cannot open is delivered as it is):
:class:`NotForRecipient` names the recipients the message is encrypted to,
:class:`UnsupportedAlgorithm` the algorithm, :class:`DecryptionFailed` wrong key or damage;
a structure that is not CMS at all is :class:`DecryptionFailed` too ("malformed ...").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from config.errors import CmcgateError
from gateway.smime import ber, ecdh, encoding, mime
from gateway.smime.algorithms import (
    CBC_CIPHERS,
    GCM_CIPHERS,
    HASHES,
    ID_AUTH_ENVELOPED_DATA,
    ID_ENVELOPED_DATA,
    RSA_ENCRYPTION,
    RSAES_OAEP,
    cipher_name,
)
from gateway.smime.errors import (
    DecryptionFailed,
    MalformedMessage,
    NotForRecipient,
    UnsupportedAlgorithm,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CHUNK = 1 << 20
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


class _GcmParameters(core.Sequence):
    """RFC 5084 §3.2 GCMParameters."""

    _fields = [("nonce", core.OctetString), ("icv_len", core.Integer, {"default": 12})]


def decrypt_der(der: mime.Buffer, key: PrivateKey, cert: x509.Certificate) -> bytes:
    """The content of a DER/BER ContentInfo holding (Auth)EnvelopedData for ``cert``/``key``."""
    buf = bytes(der)
    try:
        return _open(buf, key, cert)
    except MalformedMessage as exc:
        raise DecryptionFailed(f"malformed enveloped data: {exc}") from exc
    except _DECODE_ERRORS as exc:  # asn1crypto parsing the small parts lazily
        if isinstance(exc, CmcgateError):
            raise  # a key backend's own error (ValueError subclasses among them)
        raise DecryptionFailed(f"malformed enveloped data: {type(exc).__name__}: {exc}") from exc


def _open(buf: bytes, key: PrivateKey, cert: x509.Certificate) -> bytes:
    info = ber.expect(buf, 0, 0x30, "ContentInfo")
    parts = list(ber.children(buf, info))
    if len(parts) != 2 or parts[0].tag != 0x06 or parts[1].tag != 0xA0:
        raise MalformedMessage("ContentInfo is not contentType + [0] content")
    content_type = core.ObjectIdentifier.load(ber.element_bytes(buf, parts[0])).dotted
    if content_type not in (ID_ENVELOPED_DATA, ID_AUTH_ENVELOPED_DATA):
        raise MalformedMessage(f"CMS content type {content_type} is not (Auth)EnvelopedData")
    authenticated = content_type == ID_AUTH_ENVELOPED_DATA
    body = next(ber.children(buf, parts[1]), None)
    if body is None or body.tag != 0x30:
        raise MalformedMessage("(Auth)EnvelopedData is not a SEQUENCE")
    fields = [f for f in ber.children(buf, body) if f.tag not in (0xA0, 0xA2)]  # no originator
    # version, recipientInfos, (auth)EncryptedContentInfo, [1] attrs?, mac (authenticated)
    if len(fields) < 3 or fields[0].tag != 0x02 or fields[1].tag & ~0x20 != 0x11:
        raise MalformedMessage("(Auth)EnvelopedData does not start version, recipientInfos")
    infos = asn1_cms.RecipientInfos.load(ber.element_bytes(buf, fields[1]))
    content_key = _content_key(infos, key, cert)
    content_info = fields[2]
    if authenticated:
        attrs = next((f for f in fields[3:] if f.tag == 0xA1), None)
        mac = next((f for f in fields[3:] if f.tag & ~0x20 == ber.OCTET_STRING), None)
        if mac is None:
            raise MalformedMessage("AuthEnvelopedData without mac")
        aad = b"" if attrs is None else _auth_attrs_der(buf, attrs)
        tag = b"".join(ber.octets(buf, mac))
        return _decrypt_content(buf, content_info, content_key, (aad, tag))
    return _decrypt_content(buf, content_info, content_key, None)


# -- finding our RecipientInfo and the content-encryption key -----------------------------
class _Me:
    """The recipient identifiers ``cert`` answers to."""

    def __init__(self, cert: x509.Certificate) -> None:
        self.serial = cert.serial_number
        self.issuer_der = cert.issuer.public_bytes()
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            self.key_id: bytes | None = ext.value.digest
        except x509.ExtensionNotFound:
            self.key_id = None

    def matches(self, rid: Any) -> bool:
        if rid.name == "issuer_and_serial_number":
            chosen = rid.chosen
            if chosen["serial_number"].native != self.serial:
                return False
            issuer = chosen["issuer"]
            # Byte-equal names are the rule; RFC 5280 §7.1 name matching (slow) otherwise.
            return bool(
                issuer.dump() == self.issuer_der or issuer == asn1_x509.Name.load(self.issuer_der)
            )
        key_id = rid.chosen["subject_key_identifier"] if rid.name == "r_key_id" else rid.chosen
        return self.key_id is not None and bytes(key_id.native) == self.key_id


def describe(rid: Any) -> str:
    """``issuer …, serial …`` or ``subjectKeyIdentifier …`` of a recipient identifier."""
    if rid.name == "issuer_and_serial_number":
        serial = rid.chosen["serial_number"].native
        return f"issuer {rid.chosen['issuer'].human_friendly}, serial {serial:x}"
    key_id = rid.chosen["subject_key_identifier"] if rid.name == "r_key_id" else rid.chosen
    return f"subjectKeyIdentifier {bytes(key_id.native).hex()}"


def _candidates(infos: Any, me: _Me, seen: list[Any]) -> Iterator[tuple[str, Any, Any]]:
    """(kind, RecipientInfo body, RecipientEncryptedKey or None) addressed to ``me``; every
    recipient identifier (or unsupported RecipientInfo) met is put in ``seen``."""
    for info in infos:
        if info.name == "ktri":
            seen.append(info.chosen["rid"])
            if me.matches(info.chosen["rid"]):
                yield "ktri", info.chosen, None
        elif info.name == "kari":
            for encrypted in info.chosen["recipient_encrypted_keys"]:
                seen.append(encrypted["rid"])
                if me.matches(encrypted["rid"]):
                    yield "kari", info.chosen, encrypted
        else:
            seen.append(f"a {info.name} recipient (password/KEK/other: not supported)")


def _content_key(infos: Any, key: PrivateKey, cert: x509.Certificate) -> bytes:
    seen: list[Any] = []
    failure: DecryptionFailed | None = None
    for kind, info, encrypted in _candidates(infos, _Me(cert), seen):
        try:
            if kind == "ktri":
                return _key_transport(info, key)
            return _key_agreement(info, encrypted, key)
        except DecryptionFailed as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    named = "; ".join(r if isinstance(r, str) else describe(r) for r in seen)
    raise NotForRecipient(
        f"no key for recipient {named or '(none named)'}"
        f" (the key tried is for serial {cert.serial_number:x})"
    )


def _key_transport(info: Any, key: PrivateKey) -> bytes:
    algorithm = info["key_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    pad: padding.AsymmetricPadding
    if oid == RSA_ENCRYPTION:
        pad = padding.PKCS1v15()
    elif oid == RSAES_OAEP:
        pad = _oaep(algorithm["parameters"])
    else:
        raise UnsupportedAlgorithm(f"unsupported key transport algorithm {oid}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DecryptionFailed("RSA key transport, but the recipient's key is not RSA")
    try:
        return key.decrypt(bytes(info["encrypted_key"].native), pad)
    except ValueError as exc:  # wrong key, bad padding, or a token refusing the parameters
        raise DecryptionFailed(f"RSA key transport failed: {exc or 'wrong key or data'}") from exc


def _oaep(params: Any) -> padding.OAEP:
    """RFC 4055 §4.1 RSAES-OAEP-params (absent parameters: all defaults, SHA-1)."""
    if isinstance(params, core.Void):
        return padding.OAEP(padding.MGF1(HASHES["sha1"]()), HASHES["sha1"](), None)
    hash_name = params["hash_algorithm"]["algorithm"].native
    mgf = params["mask_gen_algorithm"]
    mgf_hash = mgf["parameters"]["algorithm"].native
    label = params["p_source_algorithm"]["parameters"].native or None
    if mgf["algorithm"].native != "mgf1" or hash_name not in HASHES or mgf_hash not in HASHES:
        raise UnsupportedAlgorithm(f"unsupported RSAES-OAEP parameters ({hash_name}, {mgf_hash})")
    return padding.OAEP(padding.MGF1(HASHES[mgf_hash]()), HASHES[hash_name](), label)


def _key_agreement(info: Any, encrypted: Any, key: PrivateKey) -> bytes:
    originator = info["originator"]
    if originator.name != "originator_key":
        raise UnsupportedAlgorithm("key agreement with a static originator key is not supported")
    public_key = originator.chosen
    bits = public_key["public_key"].contents
    if not bits or bits[0] != 0:
        raise MalformedMessage("originator public key BIT STRING has unused bits")
    algorithm = info["key_encryption_algorithm"]
    parameters = algorithm["parameters"]
    if isinstance(parameters, core.Void):
        raise MalformedMessage("key agreement algorithm without its key-wrap algorithm")
    wrap = asn1_cms.KeyEncryptionAlgorithm.load(parameters.dump())["algorithm"].dotted
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DecryptionFailed("ECDH key agreement, but the recipient's key is not EC")
    ukm = info["ukm"].native
    return ecdh.unwrap(
        key,
        bytes(bits[1:]),
        algorithm["algorithm"].dotted,
        wrap,
        None if ukm is None else bytes(ukm),
        bytes(encrypted["encrypted_key"].native),
    )


# -- the content ---------------------------------------------------------------------------
def _auth_attrs_der(buf: bytes, attrs: ber.Tlv) -> bytes:
    """RFC 5083 §2.1: the authenticated attributes are MACed as a DER SET OF."""
    raw = bytearray(ber.element_bytes(buf, attrs))
    raw[0] = 0x31
    return bytes(asn1_cms.CMSAttributes.load(bytes(raw)).dump(force=True))


def _decrypt_content(
    buf: bytes, info: ber.Tlv, key: bytes, authenticated: tuple[bytes, bytes] | None
) -> bytes:
    parts = list(ber.children(buf, info))
    if len(parts) < 2 or parts[0].tag != 0x06 or parts[1].tag != 0x30:
        raise MalformedMessage("EncryptedContentInfo is not contentType, algorithm, content")
    if len(parts) < 3 or parts[2].number != 0:
        raise DecryptionFailed("the encrypted content is not in the message (detached)")
    algorithm = list(ber.children(buf, parts[1]))
    oid = core.ObjectIdentifier.load(ber.element_bytes(buf, algorithm[0])).dotted
    params = ber.element_bytes(buf, algorithm[1]) if len(algorithm) > 1 else None
    chunks = ber.octets(buf, parts[2])
    if authenticated is not None:
        return _decrypt_gcm(oid, params, key, chunks, *authenticated)
    return _decrypt_cbc(oid, params, key, chunks)


def _check_key(oid: str, wanted: int, key: bytes) -> None:
    if len(key) != wanted:
        raise DecryptionFailed(
            f"content key of {len(key)} bytes for {cipher_name(oid)}: wrong key or damaged"
        )


def _decrypt_cbc(oid: str, params: bytes | None, key: bytes, chunks: list[memoryview]) -> bytes:
    if oid in GCM_CIPHERS:
        raise MalformedMessage(f"{cipher_name(oid)} belongs in AuthEnvelopedData")
    if oid not in CBC_CIPHERS:
        raise UnsupportedAlgorithm(f"unsupported content encryption algorithm {cipher_name(oid)}")
    cipher_type, size = CBC_CIPHERS[oid]
    _check_key(oid, size, key)
    if params is None:
        raise MalformedMessage(f"{cipher_name(oid)} without an IV")
    iv = bytes(core.OctetString.load(params).native)
    algorithm = cipher_type(key)
    block = algorithm.block_size // 8
    total = sum(len(chunk) for chunk in chunks)
    if total == 0 or total % block or len(iv) != block:
        raise DecryptionFailed("ciphertext or IV length does not fit the block cipher")
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    out = encoding.Output(total)
    last = bytearray()  # the final block: its padding is checked and dropped
    _stream(decryptor, chunks, total - block, out, last)
    tail = decryptor.update(bytes(last)) + decryptor.finalize()
    pad = tail[-1]
    if not 1 <= pad <= block or tail[-pad:] != bytes([pad]) * pad:
        raise DecryptionFailed("bad padding after decryption: wrong key or damaged message")
    out.write(tail[:-pad])
    return out.value()


def _decrypt_gcm(
    oid: str, params: bytes | None, key: bytes, chunks: list[memoryview], aad: bytes, tag: bytes
) -> bytes:
    if oid not in GCM_CIPHERS:
        raise UnsupportedAlgorithm(f"unsupported authenticated encryption {cipher_name(oid)}")
    _check_key(oid, GCM_CIPHERS[oid], key)
    if params is None:
        raise MalformedMessage("AES-GCM without GCMParameters")
    parsed = _GcmParameters.load(params)
    nonce, icv_len = bytes(parsed["nonce"].native), int(parsed["icv_len"].native)
    if not 12 <= icv_len <= 16 or len(tag) != icv_len or not nonce:
        raise MalformedMessage("AES-GCM parameters and mac do not fit (RFC 5084 §3.2)")
    mode = modes.GCM(nonce, tag, min_tag_length=icv_len)
    decryptor = Cipher(algorithms.AES(key), mode).decryptor()
    if aad:
        decryptor.authenticate_additional_data(aad)
    total = sum(len(chunk) for chunk in chunks)
    out = encoding.Output(total)
    _stream(decryptor, chunks, total, out, bytearray())
    try:
        out.write(decryptor.finalize())
    except InvalidTag as exc:
        raise DecryptionFailed("AES-GCM tag does not verify: wrong key or tampered") from exc
    return out.value()


def _stream(
    decryptor: CipherContext,
    chunks: Sequence[memoryview],
    count: int,
    out: encoding.Output,
    rest: bytearray,
) -> None:
    """Decrypt the first ``count`` bytes of ``chunks`` into ``out``; keep the others in ``rest``."""
    buffer = bytearray(min(_CHUNK, max(count, 1)) + 32)
    view = memoryview(buffer)
    left = count
    for chunk in chunks:
        for offset in range(0, len(chunk), _CHUNK):
            piece = chunk[offset : offset + _CHUNK]
            take = min(left, len(piece))
            if take:
                n = decryptor.update_into(piece[:take], buffer)
                out.write(view[:n])
                left -= take
            if take < len(piece):
                rest += piece[take:]
