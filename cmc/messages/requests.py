"""PKI Requests (RFC 5272 §3.1, §3.2): build, sign and parse.

A Simple PKI Request is a bare PKCS#10 CSR.  A Full PKI Request is a SignedData whose
eContentType is id-cct-PKIData, always carrying transactionId and senderNonce (RFC 5272
§6.6, §6.7) so that the response can be matched to it.  Verifying one and refusing
controls is :mod:`cmc.messages.request_checks`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from asn1crypto import core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cmc.asn1 import types as asn1
from cmc.asn1.bodyparts import (
    ControlLookup,
    OtherMsg,
    TaggedContentInfo,
    check_body_part_ids,
    decode_cms_sequence,
    decode_controls,
    decode_other_msgs,
    encode_cms_sequence,
    encode_controls,
    encode_other_msgs,
    number_controls,
)
from cmc.asn1.der import decoding, integer, load, name_from_asn1, reencode
from cmc.asn1.values import (
    Control,
    GetCert,
    GetCRL,
    RevokeRequest,
    control,
)
from cmc.errors import MalformedMessage
from cmc.messages.cms import (
    carried_certificates,
    encapsulated_content,
    load_signed_data,
)
from cmc.messages.signing import Signer, sign_content


@dataclass(frozen=True)
class CertificationRequest:
    """``tcr``: a PKCS#10 request with its body part ID (RFC 5272 §3.2.1.3.1)."""

    body_part_id: int
    csr: x509.CertificateSigningRequest


@dataclass(frozen=True)
class CRMFRequest:
    """``crm``: a CRMF CertReqMsg (RFC 4211); certReqId is the body part ID (§3.2.1.3.2)."""

    body_part_id: int
    subject: x509.Name | None
    public_key_der: bytes | None
    der: bytes


@dataclass(frozen=True)
class OtherRequest:
    """``orm``: a request format outside CMC (RFC 5272 §3.2.1.3.3), kept as DER."""

    body_part_id: int
    message_type: str
    value_der: bytes


TaggedRequest = CertificationRequest | CRMFRequest | OtherRequest


@dataclass(frozen=True)
class PKIData(ControlLookup):
    """RFC 5272 §3.2.1 PKIData; ``der`` is its encoding (the signed eContent)."""

    controls: tuple[Control, ...]
    requests: tuple[TaggedRequest, ...] = ()
    cms_sequence: tuple[TaggedContentInfo, ...] = ()
    other_msgs: tuple[OtherMsg, ...] = ()
    der: bytes = b""


@dataclass(frozen=True)
class SignerId:
    """SignerInfo.sid: ``kind`` is ``"subjectKeyIdentifier"`` or ``"issuerAndSerialNumber"``."""

    kind: str
    key_identifier: bytes | None = None
    issuer: x509.Name | None = None
    serial_number: int | None = None


@dataclass(frozen=True)
class FullPKIRequest:
    """A Full PKI Request as sent or received (not yet verified: see :func:`verify_request`)."""

    pki_data: PKIData
    signer_id: SignerId
    certificates: tuple[x509.Certificate, ...]
    der: bytes

    @property
    def transaction_id(self) -> int | None:
        return self.pki_data.transaction_id

    @property
    def sender_nonce(self) -> bytes | None:
        return self.pki_data.sender_nonce


@dataclass(frozen=True)
class SimplePKIRequest:
    """A Simple PKI Request: one PKCS#10 CSR (RFC 5272 §3.1)."""

    csr: x509.CertificateSigningRequest
    der: bytes


# --- building ---------------------------------------------------------------------------


def _request_asn1(request: TaggedRequest) -> asn1.TaggedRequest:
    if isinstance(request, CertificationRequest):
        der = request.csr.public_bytes(serialization.Encoding.DER)
        value = {
            "body_part_id": request.body_part_id,
            "certification_request": asn1_csr.CertificationRequest.load(der),
        }
        return asn1.TaggedRequest(name="tcr", value=value)
    if isinstance(request, CRMFRequest):
        return asn1.TaggedRequest(name="crm", value=asn1.CertReqMsg.load(request.der))
    value = {
        "body_part_id": request.body_part_id,
        "request_message_type": request.message_type,
        "request_message_value": core.Any.load(request.value_der),
    }
    return asn1.TaggedRequest(name="orm", value=value)


def encode_pki_data(pki_data: PKIData) -> bytes:
    """DER of a PKIData; body part IDs must already be unique and non-zero."""
    ids = [r.body_part_id for r in pki_data.requests]
    ids += [c.body_part_id for c in pki_data.controls]
    ids += [c.body_part_id for c in pki_data.cms_sequence]
    ids += [o.body_part_id for o in pki_data.other_msgs]
    check_body_part_ids(ids)
    value = asn1.PKIData(
        {
            "control_sequence": encode_controls(pki_data.controls),
            "req_sequence": [_request_asn1(r) for r in pki_data.requests],
            "cms_sequence": encode_cms_sequence(pki_data.cms_sequence),
            "other_msg_sequence": encode_other_msgs(pki_data.other_msgs),
        }
    )
    return bytes(value.dump())


def new_transaction_id() -> int:
    """A fresh positive 63-bit transactionId (RFC 5272 §6.6)."""
    return secrets.randbelow(2**63 - 1) + 1


def new_nonce() -> bytes:
    """A fresh 16-byte senderNonce (RFC 5272 §6.7)."""
    return os.urandom(16)


def build_full_request(
    *,
    signer: Signer,
    requests: Sequence[x509.CertificateSigningRequest | TaggedRequest] = (),
    controls: Sequence[Control] = (),
    transaction_id: int | None = None,
    sender_nonce: bytes | None = None,
    signing_time: datetime | None = None,
) -> FullPKIRequest:
    """Sign a PKIData: requests numbered from 1, then transactionId, senderNonce, controls.

    Controls and requests given with body part ID 0 are numbered here; transactionId and
    senderNonce are fresh unless given (a queryPending keeps the original transactionId).
    """
    tagged: list[TaggedRequest] = []
    for index, item in enumerate(requests, start=1):
        if isinstance(item, x509.CertificateSigningRequest):
            tagged.append(CertificationRequest(index, item))
        elif item.body_part_id == 0:
            tagged.append(replace(item, body_part_id=index))
        else:
            tagged.append(item)
    extra = [c for c in controls if c.name not in ("transactionId", "senderNonce")]
    own = [
        control("transactionId", transaction_id or new_transaction_id()),
        control("senderNonce", sender_nonce or new_nonce()),
    ]
    numbered = number_controls([*own, *extra], [r.body_part_id for r in tagged])
    pki_data = PKIData(controls=numbered, requests=tuple(tagged))
    content = encode_pki_data(pki_data)
    der = sign_content(asn1.ID_CCT_PKIDATA, content, signer, signing_time=signing_time)
    return FullPKIRequest(
        replace(pki_data, der=content), own_signer_id(signer), carried(signer), der
    )


def own_signer_id(signer: Signer) -> SignerId:
    """The sid :func:`cmc.messages.signing.sign_content` writes for ``signer``."""
    if signer.certificate is None:
        ski = x509.SubjectKeyIdentifier.from_public_key(signer.key.public_key()).digest
        return SignerId("subjectKeyIdentifier", key_identifier=ski)
    return SignerId(
        "issuerAndSerialNumber",
        issuer=signer.certificate.issuer,
        serial_number=signer.certificate.serial_number,
    )


def carried(signer: Signer, extra: Sequence[x509.Certificate] = ()) -> tuple[x509.Certificate, ...]:
    """The certificates :func:`cmc.messages.signing.sign_content` puts into SignedData."""
    out: list[x509.Certificate] = []
    own = [signer.certificate, *signer.chain] if signer.certificate is not None else []
    for cert in [*own, *extra]:
        if cert is not None and cert not in out:
            out.append(cert)
    return tuple(out)


def build_simple_request(csr: x509.CertificateSigningRequest) -> SimplePKIRequest:
    """RFC 5272 §3.1: the CSR itself is the request."""
    return SimplePKIRequest(csr, csr.public_bytes(serialization.Encoding.DER))


def build_query_pending(
    pend_token: bytes, *, signer: Signer, transaction_id: int, **kwargs: Any
) -> FullPKIRequest:
    """RFC 5272 §6.10 queryPending, in the original transaction (same transactionId)."""
    return build_full_request(
        signer=signer,
        controls=[control("queryPending", pend_token)],
        transaction_id=transaction_id,
        **kwargs,
    )


def build_get_cert_request(
    issuer: x509.Name, serial_number: int, *, signer: Signer, **kwargs: Any
) -> FullPKIRequest:
    """RFC 5272 §6.9 getCert: ask for the certificate ``issuer`` issued as ``serial_number``."""
    value = GetCert(issuer, serial_number)
    return build_full_request(signer=signer, controls=[control("getCert", value)], **kwargs)


def build_revoke_request(revoke: RevokeRequest, *, signer: Signer, **kwargs: Any) -> FullPKIRequest:
    """RFC 5272 §6.11 revokeRequest."""
    return build_full_request(signer=signer, controls=[control("revokeRequest", revoke)], **kwargs)


def build_get_crl_request(get_crl: GetCRL, *, signer: Signer, **kwargs: Any) -> FullPKIRequest:
    """RFC 5272 §6.10 getCRL."""
    return build_full_request(signer=signer, controls=[control("getCRL", get_crl)], **kwargs)


# --- parsing ----------------------------------------------------------------------------


def _retagged(value: Any, tag_byte: int) -> bytes:
    """Implicitly tagged value re-read with its universal tag (single-byte tags only)."""
    return bytes([tag_byte]) + reencode(value)[1:]


def checked_csr(der: bytes) -> x509.CertificateSigningRequest:
    """Load a CSR and force cryptography's lazy parts (subject, key, extensions) now."""
    csr = x509.load_der_x509_csr(der)
    csr.subject  # noqa: B018
    csr.extensions  # noqa: B018
    return csr


def _decode_request(item: Any) -> TaggedRequest:
    with decoding("TaggedRequest"):
        chosen = item.chosen
        if item.name == "tcr":
            der = reencode(chosen["certification_request"])
            return CertificationRequest(integer(chosen["body_part_id"]), checked_csr(der))
        if item.name == "crm":
            template = chosen["cert_req"]["cert_template"]
            subject = template["subject"]
            spki = template["public_key"]
            return CRMFRequest(
                integer(chosen["cert_req"]["cert_req_id"]),
                None if isinstance(subject, core.Void) else name_from_asn1(subject),
                None if isinstance(spki, core.Void) else _retagged(spki, 0x30),
                _retagged(chosen, 0x30),
            )
        return OtherRequest(
            integer(chosen["body_part_id"]),
            chosen["request_message_type"].dotted,
            reencode(chosen["request_message_value"]),
        )


def parse_pki_data(content: bytes) -> PKIData:
    """Decode the PKIData eContent (RFC 5272 §3.2.1)."""
    value = load(asn1.PKIData, content, "PKIData")
    with decoding("PKIData"):
        return PKIData(
            controls=decode_controls(value["control_sequence"]),
            requests=tuple(_decode_request(item) for item in value["req_sequence"]),
            cms_sequence=decode_cms_sequence(value["cms_sequence"]),
            other_msgs=decode_other_msgs(value["other_msg_sequence"]),
            der=bytes(content),
        )


def signer_id(signed_data: Any) -> SignerId:
    """The sid of the single SignerInfo a Full PKI message carries (RFC 5272 §3.2)."""
    with decoding("SignerInfo"):
        infos = list(signed_data["signer_infos"])
        if len(infos) != 1:
            raise MalformedMessage(f"expected one SignerInfo, found {len(infos)}")
        sid = infos[0]["sid"]
        if sid.name == "subject_key_identifier":
            return SignerId("subjectKeyIdentifier", key_identifier=bytes(sid.chosen.native))
        return SignerId(
            "issuerAndSerialNumber",
            issuer=name_from_asn1(sid.chosen["issuer"]),
            serial_number=integer(sid.chosen["serial_number"]),
        )


def parse_request(data: bytes) -> FullPKIRequest | SimplePKIRequest:
    """A Full PKI Request (ContentInfo/SignedData/PKIData) or a Simple one (PKCS#10)."""
    try:
        signed_data = load_signed_data(data)
    except MalformedMessage as cms_error:
        try:
            with decoding("PKCS#10 request"):
                load(asn1_csr.CertificationRequest, data, "PKCS#10 request")
                csr = checked_csr(bytes(data))
        except MalformedMessage:
            raise MalformedMessage(
                f"neither a Full PKI Request nor a PKCS#10 request ({cms_error})"
            ) from None
        return SimplePKIRequest(csr, bytes(data))
    with decoding("SignedData"):
        content_type = signed_data["encap_content_info"]["content_type"].dotted
    if content_type != asn1.ID_CCT_PKIDATA:
        raise MalformedMessage(f"SignedData carries {content_type}, not id-cct-PKIData")
    content = encapsulated_content(signed_data)
    if content is None:
        raise MalformedMessage("Full PKI Request without PKIData content")
    return FullPKIRequest(
        parse_pki_data(content),
        signer_id(signed_data),
        carried_certificates(signed_data),
        bytes(data),
    )
