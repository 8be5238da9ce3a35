"""PKI Responses (RFC 5272 §4): build (the CA's half) and parse (both halves).

A Simple PKI Response is a certs-only SignedData (§4.1).  A Full PKI Response (§4.2) is a
SignedData over a PKIResponse (eContentType id-cct-PKIResponse): per-body-part statusInfoV2,
recipientNonce (our senderNonce echoed), the transactionId echoed and the CA's own
senderNonce; issued certificates and their chain travel in SignedData.certificates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

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
from cmc.asn1.der import decoding, load
from cmc.asn1.values import Control, StatusInfo, control
from cmc.errors import MalformedMessage
from cmc.messages.cms import carried_certificates, encapsulated_content, load_signed_data
from cmc.messages.requests import (
    FullPKIRequest,
    PKIData,
    SignerId,
    carried,
    new_nonce,
    own_signer_id,
    signer_id,
)
from cmc.messages.signing import Signer, certs_only, sign_content


@dataclass(frozen=True)
class PKIResponse(ControlLookup):
    """RFC 5272 §3.3.1 PKIResponse; ``der`` is its encoding (the signed eContent)."""

    controls: tuple[Control, ...]
    cms_sequence: tuple[TaggedContentInfo, ...] = ()
    other_msgs: tuple[OtherMsg, ...] = ()
    der: bytes = b""


@dataclass(frozen=True)
class FullPKIResponse:
    """A Full PKI Response as built or received (signature not yet checked)."""

    pki_response: PKIResponse
    signer_id: SignerId
    certificates: tuple[x509.Certificate, ...]
    der: bytes

    @property
    def statuses(self) -> tuple[StatusInfo, ...]:
        return self.pki_response.statuses

    @property
    def transaction_id(self) -> int | None:
        return self.pki_response.transaction_id

    @property
    def recipient_nonce(self) -> bytes | None:
        return self.pki_response.recipient_nonce

    @property
    def sender_nonce(self) -> bytes | None:
        return self.pki_response.sender_nonce


@dataclass(frozen=True)
class SimplePKIResponse:
    """A certs-only SignedData (RFC 5272 §4.1): unauthenticated, trust comes from the chain."""

    certificates: tuple[x509.Certificate, ...]
    der: bytes


def encode_pki_response(response: PKIResponse) -> bytes:
    """DER of a PKIResponse; body part IDs must be unique and non-zero."""
    ids = [c.body_part_id for c in response.controls]
    ids += [c.body_part_id for c in response.cms_sequence]
    ids += [o.body_part_id for o in response.other_msgs]
    check_body_part_ids(ids)
    value = asn1.PKIResponse(
        {
            "control_sequence": encode_controls(response.controls),
            "cms_sequence": encode_cms_sequence(response.cms_sequence),
            "other_msg_sequence": encode_other_msgs(response.other_msgs),
        }
    )
    return bytes(value.dump())


def build_full_response(
    *,
    signer: Signer,
    statuses: Sequence[StatusInfo],
    request: FullPKIRequest | PKIData | None = None,
    transaction_id: int | None = None,
    recipient_nonce: bytes | None = None,
    sender_nonce: bytes | None = None,
    certificates: Sequence[x509.Certificate] = (),
    controls: Sequence[Control] = (),
    signing_time: datetime | None = None,
) -> FullPKIResponse:
    """Sign a PKIResponse answering ``request`` (RFC 5272 §4.2).

    transactionId and recipientNonce are echoed from ``request`` unless given (RFC 5272
    §6.6, §6.7; pass ``request=None`` for a request too broken to read).  Controls are
    numbered: statuses, recipientNonce, transactionId, senderNonce, then ``controls``.
    """
    pki_data = request.pki_data if isinstance(request, FullPKIRequest) else request
    if pki_data is not None:
        if transaction_id is None:
            transaction_id = pki_data.transaction_id
        if recipient_nonce is None:
            recipient_nonce = pki_data.sender_nonce
    own = [control("statusInfoV2", status) for status in statuses]
    if recipient_nonce is not None:
        own.append(control("recipientNonce", recipient_nonce))
    if transaction_id is not None:
        own.append(control("transactionId", transaction_id))
    own.append(control("senderNonce", sender_nonce or new_nonce()))
    numbered = number_controls([*own, *controls], ())
    content = encode_pki_response(PKIResponse(controls=numbered))
    response = parse_pki_response(content)
    der = sign_content(
        asn1.ID_CCT_PKIRESPONSE,
        content,
        signer,
        certificates=certificates,
        signing_time=signing_time,
    )
    return FullPKIResponse(response, own_signer_id(signer), carried(signer, certificates), der)


def build_simple_response(certificates: Sequence[x509.Certificate]) -> SimplePKIResponse:
    """RFC 5272 §4.1: issued certificate and chain in a certs-only SignedData."""
    if not certificates:
        raise ValueError("a Simple PKI Response needs at least the issued certificate")
    der = certs_only(certificates)
    return SimplePKIResponse(tuple(certificates), der)


def parse_pki_response(content: bytes) -> PKIResponse:
    """Decode the PKIResponse eContent (RFC 5272 §3.3.1)."""
    value = load(asn1.PKIResponse, content, "PKIResponse")
    with decoding("PKIResponse"):
        return PKIResponse(
            controls=decode_controls(value["control_sequence"]),
            cms_sequence=decode_cms_sequence(value["cms_sequence"]),
            other_msgs=decode_other_msgs(value["other_msg_sequence"]),
            der=bytes(content),
        )


def parse_response(data: bytes) -> FullPKIResponse | SimplePKIResponse:
    """A Full PKI Response, or a Simple one (certs-only SignedData)."""
    signed_data = load_signed_data(data)
    with decoding("SignedData"):
        content_type = signed_data["encap_content_info"]["content_type"].dotted
        signer_count = len(signed_data["signer_infos"])
    certificates = carried_certificates(signed_data)
    content = encapsulated_content(signed_data)
    if content_type == asn1.ID_DATA and signer_count == 0 and not content:
        return SimplePKIResponse(certificates, bytes(data))
    if content_type != asn1.ID_CCT_PKIRESPONSE:
        raise MalformedMessage(f"SignedData carries {content_type}, not id-cct-PKIResponse")
    if content is None:
        raise MalformedMessage("Full PKI Response without PKIResponse content")
    return FullPKIResponse(
        parse_pki_response(content), signer_id(signed_data), certificates, bytes(data)
    )
