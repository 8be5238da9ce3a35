"""RecipientInfos for outgoing mail (RFC 5652 §6.2), written as DER.

* RSA recipients: KeyTransRecipientInfo, version 0, issuerAndSerialNumber, the content key
  encrypted with PKCS#1 v1.5 (``rsaEncryption``, NULL parameters) or RSAES-OAEP with SHA-256
  and MGF1-SHA-256 (RFC 4055 §4.1; the hash AlgorithmIdentifiers without parameters, as
  openssl writes them).
* EC recipients: KeyAgreeRecipientInfo (RFC 5753 §3.1.1), version 3, the originator an
  ephemeral ``originatorKey`` (id-ecPublicKey, absent parameters: the curve is the
  recipient's), no ukm, dhSinglePass-stdDH-sha*kdf-scheme with AES key wrap
  (:mod:`gateway.smime.ecdh`), one RecipientEncryptedKey by issuerAndSerialNumber.

Every recipient certificate's key type is checked here; other key types raise
:class:`UnsupportedRecipient` naming the certificate.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from config.smime import RsaKeyTransport
from gateway.smime import ecdh
from gateway.smime.algorithms import EC_PUBLIC_KEY, oid_der
from gateway.smime.errors import UnsupportedRecipient

_RSA_ENCRYPTION = bytes.fromhex("300d06092a864886f70d0101010500")
_SHA256 = bytes.fromhex("300b0609608648016503040201")
#: AlgorithmIdentifier rsaesOaep { hashFunc [0] sha256, maskGenFunc [1] mgf1(sha256) }.
_RSAES_OAEP_SHA256 = bytes.fromhex(
    "3038" "06092a864886f70d010107" "302b" "a00d" + _SHA256.hex()
    + "a11a" "3018" "06092a864886f70d010108" + _SHA256.hex()
)  # fmt: skip
_OAEP_SHA256 = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


def header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size


def tlv(tag: int, value: bytes) -> bytes:
    return header(tag, len(value)) + value


def check_recipient(cert: x509.Certificate) -> None:
    """Raise :class:`UnsupportedRecipient` unless the gateway can encrypt to ``cert``."""
    if not isinstance(cert, x509.Certificate):
        raise TypeError("recipient must be an x509.Certificate")
    try:
        public_key = cert.public_key()
    except (ValueError, _CryptoUnsupported) as exc:
        raise UnsupportedRecipient(f"recipient {_who(cert)} has an unreadable key", cert) from exc
    if isinstance(public_key, rsa.RSAPublicKey):
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if _ecdh_possible(public_key.curve):
            return
        raise UnsupportedRecipient(
            f"recipient {_who(cert)} has an EC key on {public_key.curve.name}, "
            "which ECDH here does not support",
            cert,
        )
    raise UnsupportedRecipient(
        f"recipient {_who(cert)} has a {type(public_key).__name__}; "
        "only RSA (key transport) and EC (ECDH) keys can be encrypted to",
        cert,
    )


def _ecdh_possible(curve: ec.EllipticCurve) -> bool:
    """Whether this build of cryptography can make keys on ``curve`` (checked once per curve)."""
    known = _CURVES_CHECKED.get(curve.name)
    if known is None:
        try:
            ec.generate_private_key(curve)
            known = True
        except (_CryptoUnsupported, ValueError):
            known = False
        _CURVES_CHECKED[curve.name] = known
    return known


_CURVES_CHECKED: dict[str, bool] = {}


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or format(cert.serial_number, "x")


def recipient_info(
    cert: x509.Certificate, content_key: bytes, rsa_transport: RsaKeyTransport
) -> bytes:
    """The DER RecipientInfo that gives ``content_key`` to the holder of ``cert``."""
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return _key_transport(cert, public_key, content_key, rsa_transport)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _key_agreement(cert, public_key, content_key)
    raise UnsupportedRecipient(f"recipient {_who(cert)} has neither an RSA nor an EC key", cert)


def _key_transport(
    cert: x509.Certificate, key: rsa.RSAPublicKey, content_key: bytes, transport: RsaKeyTransport
) -> bytes:
    """KeyTransRecipientInfo (version 0, issuerAndSerialNumber)."""
    if transport is RsaKeyTransport.OAEP:
        algorithm, encrypted = _RSAES_OAEP_SHA256, key.encrypt(content_key, _OAEP_SHA256)
    else:
        algorithm, encrypted = _RSA_ENCRYPTION, key.encrypt(content_key, padding.PKCS1v15())
    body = tlv(0x02, b"\x00") + issuer_and_serial(cert) + algorithm + tlv(0x04, encrypted)
    return tlv(0x30, body)


def _key_agreement(
    cert: x509.Certificate, key: ec.EllipticCurvePublicKey, content_key: bytes
) -> bytes:
    """KeyAgreeRecipientInfo ([1] IMPLICIT in the RecipientInfo CHOICE, version 3)."""
    wrapped = ecdh.wrap(key, content_key)
    originator_key = tlv(
        0xA1,  # originatorKey [1] IMPLICIT OriginatorPublicKey
        tlv(0x30, oid_der(EC_PUBLIC_KEY)) + tlv(0x03, b"\x00" + wrapped.ephemeral_point),
    )
    algorithm = tlv(0x30, oid_der(wrapped.scheme_oid) + tlv(0x30, oid_der(wrapped.wrap_oid)))
    encrypted_keys = tlv(
        0x30, tlv(0x30, issuer_and_serial(cert) + tlv(0x04, wrapped.encrypted_key))
    )
    body = tlv(0x02, b"\x03") + tlv(0xA0, originator_key) + algorithm + encrypted_keys
    return tlv(0xA1, body)


def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer Name and serial INTEGER exactly as in ``cert``.

    TBSCertificate starts ``[0] version OPTIONAL, serialNumber, signature, issuer``; its DER
    was checked when the certificate was loaded, so walking four elements is enough.
    """
    tbs = cert.tbs_certificate_bytes
    pos = _tlv_at(tbs, 0)[1]  # into the TBSCertificate SEQUENCE
    if tbs[pos] == 0xA0:
        pos = _tlv_at(tbs, pos)[2]
    _, _, serial_end = _tlv_at(tbs, pos)
    serial = tbs[pos:serial_end]
    _, _, signature_end = _tlv_at(tbs, serial_end)
    _, _, issuer_end = _tlv_at(tbs, signature_end)
    return tlv(0x30, tbs[signature_end:issuer_end] + serial)


def _tlv_at(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``."""
    tag, first = der[pos], der[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    size = first & 0x7F
    length = int.from_bytes(der[pos + 2 : pos + 2 + size], "big")
    return tag, pos + 2 + size, pos + 2 + size + length
