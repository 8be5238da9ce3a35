"""Building CMS SignedData (RFC 5652 §5) with nothing but the key object's ``sign`` method.

The key may live in an HSM: a PKCS#11-backed object implementing cryptography's
``RSAPrivateKey`` / ``EllipticCurvePrivateKey`` interface works, because the only call made
is ``key.sign(data, padding_or_ecdsa, hash)``.  Signed attributes are always present
(RFC 5652 §5.3: required when eContentType is not id-data): contentType, signingTime,
messageDigest and, by default, cmsAlgorithmProtection (RFC 6211).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asn1crypto import algos
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from cmc.asn1.der import to_utc
from cmc.asn1.types import ID_DATA

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_HASH_NAMES = {"sha224": hashes.SHA224, "sha256": hashes.SHA256}
_HASH_NAMES.update({"sha384": hashes.SHA384, "sha512": hashes.SHA512})


@dataclass(frozen=True, eq=False)
class Signer:
    """Who signs: a key, and optionally its certificate with the chain to send along.

    Without a certificate the signer is identified by subjectKeyIdentifier (RFC 5272
    §3.2.1.3.1 allows it for a request signed by the key being certified); with one, by
    issuerAndSerialNumber, and certificate plus chain travel in SignedData.certificates.
    """

    key: SigningKey
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    hash_algorithm: hashes.HashAlgorithm = field(default_factory=hashes.SHA256)
    rsa_pss: bool = False
    algorithm_protection: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, SigningKey):
            raise TypeError("Signer.key must be an RSA, EC or Ed25519 private key object")
        if self.hash_algorithm.name not in _HASH_NAMES:
            raise ValueError(f"unsupported signing hash {self.hash_algorithm.name}")
        if self.rsa_pss and not isinstance(self.key, rsa.RSAPrivateKey):
            raise ValueError("rsa_pss needs an RSA key")
        if self.certificate is not None and _spki(self.certificate.public_key()) != _spki(
            self.key.public_key()
        ):
            raise ValueError("Signer.certificate does not belong to Signer.key")


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _digest_algorithm(name: str) -> asn1_cms.DigestAlgorithm:
    # RFC 5754 §2: SHA-2 AlgorithmIdentifiers are generated with absent parameters.
    oid = algos.DigestAlgorithmId(name).dotted
    der = algos.AlgorithmIdentifier({"algorithm": oid}).dump()
    return asn1_cms.DigestAlgorithm.load(der)


def _signature_algorithm(signer: Signer) -> tuple[asn1_cms.SignedDigestAlgorithm, str]:
    hash_name = signer.hash_algorithm.name
    if isinstance(signer.key, ed25519.Ed25519PrivateKey):
        return asn1_cms.SignedDigestAlgorithm({"algorithm": "ed25519"}), "sha512"
    if isinstance(signer.key, ec.EllipticCurvePrivateKey):
        algorithm = asn1_cms.SignedDigestAlgorithm({"algorithm": f"{hash_name}_ecdsa"})
    elif signer.rsa_pss:
        params = {
            "hash_algorithm": {"algorithm": hash_name},
            "mask_gen_algorithm": {
                "algorithm": "mgf1",
                "parameters": {"algorithm": hash_name},
            },
            "salt_length": signer.hash_algorithm.digest_size,
        }
        algorithm = asn1_cms.SignedDigestAlgorithm(
            {"algorithm": "rsassa_pss", "parameters": algos.RSASSAPSSParams(params)}
        )
    else:
        algorithm = asn1_cms.SignedDigestAlgorithm({"algorithm": f"{hash_name}_rsa"})
    return algorithm, hash_name


def _sign(signer: Signer, data: bytes) -> bytes:
    key = signer.key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(signer.hash_algorithm))
    if signer.rsa_pss:
        pss = padding.PSS(
            mgf=padding.MGF1(signer.hash_algorithm),
            salt_length=signer.hash_algorithm.digest_size,
        )
        return key.sign(data, pss, signer.hash_algorithm)
    return key.sign(data, padding.PKCS1v15(), signer.hash_algorithm)


def _signing_time(value: datetime) -> asn1_cms.Time:
    value = to_utc(value).replace(microsecond=0)
    # RFC 5652 §11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    kind = "utc_time" if 1950 <= value.year <= 2049 else "generalized_time"
    return asn1_cms.Time(name=kind, value=value)


def _unique(certificates: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out = []
    for cert in certificates:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return out


def _cert_set(certificates: Iterable[x509.Certificate]) -> list[asn1_x509.Certificate]:
    return [
        asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        for cert in _unique(certificates)
    ]


def sign_content(
    content_type: str,
    content: bytes,
    signer: Signer,
    *,
    certificates: Sequence[x509.Certificate] = (),
    signing_time: datetime | None = None,
) -> bytes:
    """DER ContentInfo(SignedData) encapsulating ``content`` of type ``content_type``.

    ``certificates`` are carried in addition to the signer's certificate and chain (the
    Full PKI Response puts issued certificates there, RFC 5272 §3.3.1).
    """
    signature_algorithm, digest_name = _signature_algorithm(signer)
    digest_algorithm = _digest_algorithm(digest_name)
    hasher = hashes.Hash(_HASH_NAMES[digest_name]())
    hasher.update(content)
    attributes: list[dict[str, Any]] = [
        {"type": "content_type", "values": [content_type]},
        {
            "type": "signing_time",
            "values": [_signing_time(signing_time or datetime.now(UTC))],
        },
        {"type": "message_digest", "values": [hasher.finalize()]},
    ]
    if signer.algorithm_protection:
        protection = {
            "digest_algorithm": _digest_algorithm(digest_name),
            "signature_algorithm": signature_algorithm,
        }
        attributes.append({"type": "cms_algorithm_protection", "values": [protection]})
    signed_attrs = asn1_cms.CMSAttributes(attributes)
    # RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF.
    signature = _sign(signer, signed_attrs.dump(force=True))

    if signer.certificate is None:
        ski = x509.SubjectKeyIdentifier.from_public_key(signer.key.public_key()).digest
        sid = asn1_cms.SignerIdentifier(name="subject_key_identifier", value=ski)
        version = "v3"
    else:
        cert = asn1_x509.Certificate.load(
            signer.certificate.public_bytes(serialization.Encoding.DER)
        )
        sid = asn1_cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": cert.issuer, "serial_number": cert.serial_number},
        )
        version = "v1"
    signer_info = asn1_cms.SignerInfo(
        {
            "version": version,
            "sid": sid,
            "digest_algorithm": digest_algorithm,
            "signed_attrs": signed_attrs,
            "signature_algorithm": signature_algorithm,
            "signature": signature,
        }
    )
    carried = []
    if signer.certificate is not None:
        carried = [signer.certificate, *signer.chain]
    carried.extend(certificates)
    signed_data: dict[str, Any] = {
        "version": "v3",
        "digest_algorithms": [_digest_algorithm(digest_name)],
        "encap_content_info": {"content_type": content_type, "content": content},
        "signer_infos": [signer_info],
    }
    if carried:
        signed_data["certificates"] = _cert_set(carried)
    info = asn1_cms.ContentInfo(
        {"content_type": "signed_data", "content": asn1_cms.SignedData(signed_data)}
    )
    return bytes(info.dump())


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A certs-only SignedData (RFC 5652 §5, no signers): the Simple PKI Response (RFC 5272
    §4.1)."""
    signed_data = {
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": ID_DATA},
        "certificates": _cert_set(certificates),
        "signer_infos": [],
    }
    info = asn1_cms.ContentInfo(
        {"content_type": "signed_data", "content": asn1_cms.SignedData(signed_data)}
    )
    return bytes(info.dump())
