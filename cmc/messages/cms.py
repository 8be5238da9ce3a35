"""Verifying CMS SignedData (RFC 5652 §5) and certificate paths; shared with S/MIME.

cryptography has no CMS verification API, so the structure is read with asn1crypto and
each signature checked with cryptography's primitives.  Accepted digests are SHA-224/256/
384/512: SHA-1 and MD5 are refused (:class:`UnsupportedAlgorithm`) even for legacy mail,
because a chosen-prefix SHA-1 collision makes such signatures forgeable.  Accepted signature
algorithms: RSA PKCS#1 v1.5, RSASSA-PSS, ECDSA and Ed25519.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from cmc.asn1.der import DECODE_ERRORS, decoding, load, reencode, to_utc, usable_public_key
from cmc.errors import (
    MalformedMessage,
    SignatureInvalid,
    SignerNotFound,
    TamperedContent,
    UnsupportedAlgorithm,
)
from cmc.messages.chain import verify_chain

__all__ = ["VerifiedSignedData", "load_signed_data", "verify_chain", "verify_signed_data"]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class VerifiedSignedData:
    """What a verified SignedData says, with the key that verified it."""

    content_type: str
    content: bytes
    signer_certificate: x509.Certificate | None
    signer_public_key: PublicKeyTypes
    certificates: tuple[x509.Certificate, ...]
    signing_time: datetime | None


def load_signed_data(data: bytes) -> Any:
    """The asn1crypto SignedData inside a DER/BER ContentInfo (RFC 5652 §3)."""
    info = load(asn1_cms.ContentInfo, data, "CMS ContentInfo")
    with decoding("CMS ContentInfo"):
        if info["content_type"].native != "signed_data":
            raise MalformedMessage(f"CMS content is {info['content_type'].dotted}, not SignedData")
        return info["content"]


def encapsulated_content(signed_data: Any) -> bytes | None:
    """eContent octets (chunks of a BER constructed OCTET STRING joined), or None."""
    with decoding("encapsulated content"):
        content = signed_data["encap_content_info"]["content"]
        if isinstance(content, core.Void):
            return None
        if isinstance(content, core.OctetString | core.ParsableOctetString):
            return bytes(content.native)
        return bytes(content.contents)  # PKCS#7 v1 ANY content: digest the value octets


def carried_certificates(signed_data: Any) -> tuple[x509.Certificate, ...]:
    """X.509 certificates in SignedData.certificates (other certificate formats skipped)."""
    with decoding("SignedData.certificates"):
        out = []
        for choice in signed_data["certificates"] or ():
            if choice.name == "certificate":
                out.append(checked_certificate(reencode(choice.chosen)))
        return tuple(out)


def checked_certificate(der: bytes) -> x509.Certificate:
    """Load a certificate and force cryptography's lazy parts (key, extensions) now."""
    cert = x509.load_der_x509_certificate(der)
    cert.extensions  # noqa: B018
    cert.subject  # noqa: B018
    cert.issuer  # noqa: B018
    return cert


def verify_signed_data(
    data: bytes,
    *,
    detached_content: bytes | None = None,
    signer_public_key: PublicKeyTypes | None = None,
) -> VerifiedSignedData:
    """Verify every SignerInfo of a SignedData (RFC 5652 §5.6) and return what it signed.

    ``signer_public_key`` verifies a signer identified by subjectKeyIdentifier that has no
    certificate in the message (a Full PKI Request signed by the key being certified).
    Raises :class:`SignerNotFound` for certs-only messages and unknown signers.
    """
    signed_data = load_signed_data(data)
    with decoding("SignedData"):
        content_type = signed_data["encap_content_info"]["content_type"].dotted
        signer_infos = list(signed_data["signer_infos"])
    if not signer_infos:
        raise SignerNotFound("SignedData has no SignerInfo (a certs-only message)")
    content = encapsulated_content(signed_data)
    if detached_content is not None:
        if content is not None:
            raise MalformedMessage("SignedData has eContent and detached content was given")
        content = bytes(detached_content)
    if content is None:
        raise MalformedMessage("SignedData has no content and none was given (detached)")
    certificates = carried_certificates(signed_data)
    results = [
        _verify_signer(info, content_type, content, certificates, signer_public_key)
        for info in signer_infos
    ]
    cert, key, signing_time = results[0]
    return VerifiedSignedData(content_type, content, cert, key, certificates, signing_time)


def _find_certificate(
    sid: Any, certificates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    with decoding("SignerIdentifier"):
        if sid.name == "issuer_and_serial_number":
            issuer = sid.chosen["issuer"]
            serial = sid.chosen["serial_number"].native
            for cert in certificates:
                if cert.serial_number != serial:
                    continue
                if asn1_x509.Name.load(cert.issuer.public_bytes()) == issuer:
                    return cert
            return None
        key_id = bytes(sid.chosen.native)
        for cert in certificates:
            if _key_identifier(cert) == key_id:
                return cert
        return None


def _key_identifier(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        key = usable_public_key(cert)
        if key is None:
            return b""
        return x509.SubjectKeyIdentifier.from_public_key(key).digest


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _verify_signer(
    info: Any,
    content_type: str,
    content: bytes,
    certificates: Sequence[x509.Certificate],
    given_key: PublicKeyTypes | None,
) -> tuple[x509.Certificate | None, PublicKeyTypes, datetime | None]:
    cert = _find_certificate(info["sid"], certificates)
    cert_key = usable_public_key(cert) if cert is not None else None
    if cert is not None and cert_key is None:
        raise UnsupportedAlgorithm(f"signer {_describe_sid(info['sid'])} has an unusable key")
    if given_key is not None:
        key = given_key
        if cert_key is not None and _spki(cert_key) != _spki(given_key):
            cert = None
    elif cert_key is not None:
        key = cert_key
    else:
        raise SignerNotFound(f"signer {_describe_sid(info['sid'])} is not in the message")
    with decoding("SignerInfo"):
        digest_name = info["digest_algorithm"]["algorithm"].native
        signed_attrs = info["signed_attrs"]
        signature = bytes(info["signature"].native)
        signature_algorithm = info["signature_algorithm"]
    hash_algorithm = _hash(digest_name)
    signing_time = None
    if isinstance(signed_attrs, core.Void):
        if content_type != "1.2.840.113549.1.7.1":
            raise MalformedMessage("signedAttrs missing although eContentType is not id-data")
        candidates = [content]
    else:
        signing_time = _check_attributes(signed_attrs, content_type, content, hash_algorithm, info)
        candidates = _signed_attribute_encodings(signed_attrs)
    for candidate in candidates:
        if _signature_ok(key, signature, signature_algorithm, hash_algorithm, candidate):
            return cert, key, signing_time
    raise SignatureInvalid(f"signature of {_describe_sid(info['sid'])} does not verify")


def _describe_sid(sid: Any) -> str:
    try:
        if sid.name == "issuer_and_serial_number":
            serial = sid.chosen["serial_number"].native
            return f"serial {serial:x} of {sid.chosen['issuer'].human_friendly}"
        return f"subjectKeyIdentifier {bytes(sid.chosen.native).hex()}"
    except DECODE_ERRORS:
        return "(undecodable signer identifier)"


def _hash(name: str) -> hashes.HashAlgorithm:
    if name not in _HASHES:
        raise UnsupportedAlgorithm(f"digest algorithm {name} is not accepted")
    return _HASHES[name]()


def _check_attributes(
    attrs: Any, content_type: str, content: bytes, hash_algorithm: hashes.HashAlgorithm, info: Any
) -> datetime | None:
    """RFC 5652 §5.3/§11: exactly one contentType (= eContentType) and messageDigest."""
    found: dict[str, list[Any]] = {}
    with decoding("signed attributes"):
        for attr in attrs:
            found.setdefault(attr["type"].dotted, []).extend(attr["values"])
        types = found.get("1.2.840.113549.1.9.3", [])
        digests = found.get("1.2.840.113549.1.9.4", [])
        times = found.get("1.2.840.113549.1.9.5", [])
        protections = found.get("1.2.840.113549.1.9.52", [])
        if len(types) != 1 or len(digests) != 1 or len(times) > 1 or len(protections) > 1:
            raise MalformedMessage("signedAttrs need one contentType and one messageDigest")
        if types[0].dotted != content_type:
            raise SignatureInvalid("signed contentType differs from eContentType")
        digest = bytes(digests[0].native)
        signing_time = to_utc(times[0].native) if times else None
        if protections:
            _check_protection(protections[0], info)
    hasher = hashes.Hash(hash_algorithm)
    hasher.update(content)
    if hasher.finalize() != digest:
        raise TamperedContent("content does not match the signed messageDigest")
    return signing_time


def _check_protection(protection: Any, info: Any) -> None:
    """RFC 6211 §3: the protected algorithms must equal those in the SignerInfo."""
    if reencode(protection["digest_algorithm"]["algorithm"]) != reencode(
        info["digest_algorithm"]["algorithm"]
    ):
        raise SignatureInvalid("cmsAlgorithmProtection digest differs from the SignerInfo")
    protected = protection["signature_algorithm"]
    if isinstance(protected, core.Void) or reencode(protected["algorithm"]) != reencode(
        info["signature_algorithm"]["algorithm"]
    ):
        raise SignatureInvalid("cmsAlgorithmProtection signature differs from the SignerInfo")


def _signed_attribute_encodings(attrs: Any) -> list[bytes]:
    """RFC 5652 §5.4: the signature covers the attributes as an explicit SET OF.

    The attributes as received (retagged) come first; a DER re-encoding follows for signers
    that sent non-DER attributes but signed their DER form.
    """
    with decoding("signed attributes"):
        contents = attrs.contents
        as_received = b"\x31" + _der_length(len(contents)) + contents
        der = asn1_cms.CMSAttributes.load(as_received).dump(force=True)
    return [as_received] if der == as_received else [as_received, der]


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _signature_ok(
    key: PublicKeyTypes,
    signature: bytes,
    algorithm: Any,
    hash_algorithm: hashes.HashAlgorithm,
    data: bytes,
) -> bool:
    with decoding("signature algorithm"):
        kind = algorithm.signature_algo
        named_hash = None if kind in ("rsassa_pss", "ed25519") else _named_hash(algorithm)
    if named_hash is not None and named_hash != hash_algorithm.name:
        raise UnsupportedAlgorithm(
            f"signature hash {named_hash} differs from digest {hash_algorithm.name}"
        )
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif kind == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _pss(algorithm, hash_algorithm), hash_algorithm)
        elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif kind == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise UnsupportedAlgorithm(
                f"signature algorithm {algorithm['algorithm'].dotted} with a "
                f"{type(key).__name__} is not supported"
            )
    except InvalidSignature:
        return False
    except _CryptoUnsupported as exc:
        raise UnsupportedAlgorithm(str(exc)) from exc
    return True


def _named_hash(algorithm: Any) -> str | None:
    try:
        return str(algorithm.hash_algo)
    except ValueError:  # rsaEncryption / id-ecPublicKey: the digest algorithm decides
        return None


def _pss(algorithm: Any, hash_algorithm: hashes.HashAlgorithm) -> padding.PSS:
    """RFC 4055 §3.1 RSASSA-PSS-params; the hashes must match the digest algorithm."""
    with decoding("RSASSA-PSS parameters"):
        params = algorithm["parameters"]
        pss_hash = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        mgf_hash = mgf["parameters"]["algorithm"].native
        salt = int(params["salt_length"].native)
        trailer = params["trailer_field"].native
        mgf_name = mgf["algorithm"].native
    if pss_hash != hash_algorithm.name or mgf_hash != pss_hash or mgf_name != "mgf1":
        raise UnsupportedAlgorithm("RSASSA-PSS parameters differ from the digest algorithm")
    if trailer not in ("trailer_field_bc", 1) or salt < 0:
        raise UnsupportedAlgorithm("RSASSA-PSS trailer field or salt length not supported")
    return padding.PSS(mgf=padding.MGF1(_hash(mgf_hash)), salt_length=salt)


def now() -> datetime:
    """The verification clock when the caller pins none."""
    return datetime.now(UTC)
